"""``flumph agent``: the device agent from a TOML ``[agent]`` section, FLUMPH_AGENT_* variables and
flags (in rising precedence). ``--stream`` starts streaming at once; otherwise the agent waits (the
MQTT control plane will start it)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from flumph.config import ConfigError, load_config
from flumph.logsetup import setup_logging
from flumph.media.streamid import DEVICE_ID_RE
from flumph.settings import StreamSettings

log = logging.getLogger("flumph.agent")

ENV_PREFIX = "FLUMPH_AGENT_"
STATUS_LOG_INTERVAL_S = 30.0


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "flumph-agent"


class AgentConfig(StreamSettings):
    """Everything ``flumph agent`` reads: the stream settings plus who and where the device is."""

    device_id: str = Field(title="Device id", description="[a-z0-9][a-z0-9-]{0,63}")
    ingest: str = Field(default="srt://127.0.0.1:8890", title="Ingest SRT URL (srt://host:port)")
    passphrase: str | None = Field(
        default=None, min_length=10, max_length=79, title="SRT passphrase"
    )
    source: str = Field(
        default="synthetic", title="Source: synthetic, camera index, /dev/videoN, file or URL"
    )
    state_dir: Path = Field(default_factory=default_state_dir, title="State directory")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    reconnect_min_s: float = Field(
        default=0.25, ge=0.05, le=10.0, title="First reconnect delay (s)"
    )
    reconnect_max_s: float = Field(
        default=10.0, ge=0.5, le=300.0, title="Longest reconnect delay (s)"
    )

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if not DEVICE_ID_RE.match(value):
            raise ValueError(f"device_id {value!r} must match [a-z0-9][a-z0-9-]{{0,63}}")
        return value

    @field_validator("ingest")
    @classmethod
    def _ingest(cls, value: str) -> str:
        from flumph.agent.transport import parse_ingest_url

        parse_ingest_url(value)
        return value

    def stream_settings(self) -> StreamSettings:
        return StreamSettings.model_validate(
            {name: getattr(self, name) for name in StreamSettings.model_fields}
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flumph agent", description=__doc__)
    p.add_argument("--config", type=Path, help="TOML file; settings in its [agent] table")
    p.add_argument("--device-id")
    p.add_argument("--ingest", metavar="srt://HOST:PORT")
    p.add_argument("--stream", action="store_true", default=None, help="start streaming at once")
    p.add_argument("--source", help="synthetic | 0 | /dev/video0 | av:FORMAT:URL | file | URL")
    p.add_argument("--codec", help="auto | av1 | hevc | h264")
    p.add_argument("--bitrate-kbps", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--fps", type=int)
    p.add_argument("--keyint-s", type=float)
    p.add_argument("--srt-latency-ms", type=int)
    p.add_argument("--frames-per-burst", type=int)
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--log-level", help="debug | info | warning | error")
    return p


def load_agent_config(argv: list[str] | None) -> AgentConfig:
    args = _parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "stream")}
    flags["streaming"] = args.stream
    return load_config(
        AgentConfig, path=args.config, section="agent", env_prefix=ENV_PREFIX, flags=flags
    )


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_agent_config(argv)
    except ConfigError as e:
        print(f"flumph agent: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    # SVT-AV1 prints its banner and settings to stderr unless told otherwise.
    os.environ.setdefault("SVT_LOG", "3" if config.log_level == "debug" else "1")

    from flumph.agent.encoders import EncoderError
    from flumph.agent.pipeline import Pipeline
    from flumph.agent.sources import SourceError

    pipeline = Pipeline(
        device_id=config.device_id,
        ingest=config.ingest,
        settings=config.stream_settings(),
        source=config.source,
        state_dir=config.state_dir,
        passphrase=config.passphrase,
        backoff_base_s=config.reconnect_min_s,
        backoff_cap_s=config.reconnect_max_s,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        pipeline.start()
    except (EncoderError, SourceError, ValueError) as e:
        log.error("cannot start streaming: %s", e)
        return 1
    if not pipeline.streaming:
        log.info("idle: not streaming (start with --stream)")
    while not stop.wait(STATUS_LOG_INTERVAL_S):
        if pipeline.streaming:
            s = pipeline.status()
            log.info(
                "%s %.0f kbit/s, %d frames sent, %d dropped, RTT %.1f ms, %d B sent this month",
                s["encoder"], s["bitrate_kbps"], s["frames_sent"],
                s.get("frames_dropped_busy", 0) + s["frames_dropped_offline"],
                s.get("srt_rtt_ms", 0.0), s["usage_wire_bytes_sent"],
            )  # fmt: skip
    log.info("stopping")
    pipeline.stop()
    return 0
