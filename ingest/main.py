"""`flumph ingest`: the SRT listener and WebSocket relay as one service."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os

import uvicorn

from flumph.config import ConfigError, load_config
from flumph.logsetup import LOG_LEVELS, setup_logging
from flumph.serviceapp import run_on_server_loop

from .service import IngestConfig, IngestService, seed_env

ENV_PREFIX = "FLUMPH_INGEST_"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="flumph ingest",
        description="SRT in (Matroska or MPEG-TS; AV1, H.265, H.264), fragmented MP4 out over "
        "WebSocket, and the plain WebSocket relay protocol.",
    )
    p.add_argument("--config", help="TOML file; its [ingest] table is read")
    p.add_argument("--host", help="HTTP/WebSocket bind address (default 0.0.0.0; env HOST)")
    p.add_argument("--port", type=int, help="HTTP/WebSocket port (default 8080; env PORT)")
    p.add_argument("--srt-host", help="SRT bind address (default 0.0.0.0)")
    p.add_argument("--srt-port", type=int, help="SRT UDP port (default 8890)")
    p.add_argument("--srt-latency-ms", type=int, help="SRT latency (default 120)")
    p.add_argument("--max-streams", type=int, help="default 100; env MAX_STREAMS")
    p.add_argument("--max-viewers-per-stream", type=int, help="default 10")
    p.add_argument("--reconnect-grace-s", type=float, help="default 10")
    p.add_argument("--mqtt", dest="mqtt_url", help="broker URL for on-demand streaming")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return p.parse_args(argv)


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
            "max_streams",
            "max_viewers_per_stream",
            "reconnect_grace_s",
            "mqtt_url",
        )
    }
    return load_config(
        IngestConfig,
        path=ns.config,
        section="ingest",
        env_prefix=ENV_PREFIX,
        environ=merged,
        flags=flags,
    )


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    setup_logging(ns.log_level, json_lines=ns.log_json)
    try:
        cfg = load(ns)
    except ConfigError as e:
        logging.getLogger("flumph.ingest").error("%s", e)
        return 2
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
            lifespan="on",
        )
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_on_server_loop(server.serve(), server.config)
    # uvicorn reports a failed startup (port in use, SRT bind error) by not starting.
    return 0 if server.started else 1
