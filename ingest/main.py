"""`flumph ingest`: the SRT listener and WebSocket relay as one service."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from flumph.clihelp import default_of
from flumph.config import ConfigError, load_config
from flumph.logsetup import LOG_LEVELS, setup_logging
from flumph.service.app import run_on_server_loop
from flumph.service.ports import PortWanted, first_problem
from flumph.service.runner import run_service

from .service import RENAMED, IngestConfig, IngestService, seed_env
from .ws_direct import DirectFrameProtocol

ENV_PREFIX = "FLUMPH_INGEST_"
log = logging.getLogger("flumph.ingest")


def build_parser() -> argparse.ArgumentParser:
    def d(name: str) -> str:
        return default_of(IngestConfig, name)

    p = argparse.ArgumentParser(
        prog="flumph ingest",
        description="SRT in (Matroska or MPEG-TS; AV1, H.265, H.264), fragmented MP4 out over "
        "WebSocket, and the plain WebSocket relay protocol.",
    )
    p.add_argument("--config", help="TOML file; its [ingest] table is read")
    p.add_argument("--host", help=f"HTTP/WebSocket and SRT bind address ({d('host')}; env HOST)")
    p.add_argument("--port", type=int, help=f"HTTP/WebSocket port ({d('port')}; env PORT)")
    p.add_argument("--srt-host", help="SRT bind address (default: the same as --host)")
    p.add_argument("--srt-port", type=int, help=f"SRT UDP port ({d('srt_port')})")
    p.add_argument("--srt-latency-ms", type=int, help=f"SRT latency ({d('srt_latency_ms')})")
    p.add_argument(
        "--srt-tsbpd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"SRT timestamp-based delivery ({d('srt_tsbpd')})",
    )
    p.add_argument("--max-streams", type=int, help=f"{d('max_streams')}; env MAX_STREAMS")
    p.add_argument("--max-viewers-per-stream", type=int, help=d("max_viewers_per_stream"))
    p.add_argument("--reconnect-grace-s", type=float, help=d("reconnect_grace_s"))
    p.add_argument("--mqtt", dest="mqtt_url", help="broker URL for on-demand streaming")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def load(ns: argparse.Namespace, environ: dict[str, str] | None = None) -> IngestConfig:
    env = dict(os.environ if environ is None else environ)
    # Seed variables (HOST, PORT, ...) rank below FLUMPH_INGEST_* ones, which rank below flags.
    merged = {ENV_PREFIX + k.upper(): v for k, v in seed_env(env).items()}
    merged.update({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    flags = {
        k: getattr(ns, k)
        for k in (
            "host",
            "port",
            "srt_host",
            "srt_port",
            "srt_latency_ms",
            "srt_tsbpd",
            "max_streams",
            "max_viewers_per_stream",
            "reconnect_grace_s",
            "mqtt_url",
        )
    }
    # --mqtt sets [ingest.mqtt] url: the flag keeps its old name.
    flags["mqtt.url"] = flags.pop("mqtt_url")
    return load_config(
        IngestConfig,
        path=ns.config,
        section="ingest",
        env_prefix=ENV_PREFIX,
        environ=merged,
        flags=flags,
        renamed=RENAMED,
    )


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    setup_logging(ns.log_level, json_lines=ns.log_json)
    try:
        cfg = load(ns)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    problem = first_problem(
        [
            PortWanted("--port", cfg.host, cfg.port),
            PortWanted("--srt-port", cfg.srt_host, cfg.srt_port, udp=True, host_flag="--srt-host"),
        ]
    )
    if problem is not None:
        log.error("%s", problem)
        return 1
    service = IngestService(cfg)
    server = uvicorn.Server(
        uvicorn.Config(
            service.app(),
            host=cfg.host,
            port=cfg.port,
            log_level="warning",
            ws_max_size=cfg.max_message_bytes,
            # Video does not compress: permessage-deflate (which browsers offer) cost 24 % of
            # the ingest's CPU at 100 streams and lost frames at 200 (bench/ingest_fanout.py).
            ws_per_message_deflate=False,
            ws=DirectFrameProtocol,  # one WebSocket frame per fragment for every viewer
            lifespan="on",
        )
    )
    return run_service(
        lambda: run_on_server_loop(server.serve(), server.config), lambda: server.started
    )
