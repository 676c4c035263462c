"""``flumph agent``: the device agent from a TOML ``[agent]`` section, FLUMPH_AGENT_* variables and
flags (in rising precedence). ``--stream`` starts streaming at once; otherwise the agent waits.

MQTT control (see control.py) is on when any MQTT setting is given: a TOML ``[agent.mqtt]``
table, a ``FLUMPH_AGENT_MQTT_<FIELD>`` variable or an ``--mqtt*`` flag, one name per field of
``flumph.mqtt.MqttSettings`` (``--mqtt URL`` for the url), plus ``password_file`` /
``FLUMPH_AGENT_MQTT_PASSWORD_FILE`` / ``--mqtt-password-file`` (its first line is the password, so
it stays out of the process list). Without it the agent streams only as its flags say. With it,
``--stream`` is the state until the first ``desired`` arrives; from then on ``desired`` decides.

Test hook: ``FLUMPH_TEST_CLOCK_START=2027-01-31T23:59:50Z`` starts the data budget's clock (its
periods and resets; nothing else) at that UTC instant, running at real speed from there, so tests
and benchmarks cross a month boundary without waiting for one. Logged as a warning when set."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from flumph.clihelp import default_of
from flumph.config import ConfigError, load_config, read_toml
from flumph.logsetup import setup_logging
from flumph.media.streamid import DEVICE_ID_RE
from flumph.mqtt import MqttSettings
from flumph.settings import StreamSettings

if TYPE_CHECKING:
    from flumph.agent.pipeline import Pipeline

log = logging.getLogger("flumph.agent")

ENV_PREFIX = "FLUMPH_AGENT_"
MQTT_ENV_PREFIX = ENV_PREFIX + "MQTT_"
MQTT_KEYS = (*MqttSettings.model_fields, "password_file")
STATUS_LOG_INTERVAL_S = 30.0
CLOCK_ENV = "FLUMPH_TEST_CLOCK_START"


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
    mqtt: MqttSettings | None = Field(default=None, title="MQTT control plane (off when absent)")
    telemetry_interval_s: float = Field(
        default=5.0, ge=1.0, le=3600.0, title="Telemetry interval while streaming (s)"
    )
    heartbeat_interval_s: float = Field(
        default=3600.0,
        ge=5.0,
        le=86400.0,
        title="Heartbeat interval while idle (s)",
        description="~250 B each on the wire; presence itself comes from the broker's will",
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
        from flumph.agent.destination import parse_ingest_url

        parse_ingest_url(value)
        return value

    def stream_settings(self) -> StreamSettings:
        return StreamSettings.model_validate(
            {name: getattr(self, name) for name in StreamSettings.model_fields}
        )


def _parser() -> argparse.ArgumentParser:
    def d(name: str) -> str:
        return default_of(AgentConfig, name)

    def dm(name: str) -> str:
        return default_of(MqttSettings, name)

    p = argparse.ArgumentParser(prog="flumph agent", description=__doc__)
    p.add_argument("--config", type=Path, help="TOML file; settings in its [agent] table")
    p.add_argument("--device-id", help="[a-z0-9][a-z0-9-]{0,63}; also the MQTT username")
    p.add_argument("--ingest", metavar="srt://HOST:PORT", help=d("ingest"))
    p.add_argument("--stream", action="store_true", default=None, help="start streaming at once")
    p.add_argument(
        "--always-on", action="store_true", default=None,
        help="stream even when nobody watches: on-demand never stops it (default off)",
    )  # fmt: skip
    p.add_argument(
        "--source", help=f"synthetic | 0 | /dev/video0 | av:FORMAT:URL | file | URL ({d('source')})"
    )
    p.add_argument("--codec", help=f"auto | av1 | hevc | h264 | copy ({d('codec')})")
    p.add_argument("--bitrate-kbps", type=int, help=d("bitrate_kbps"))
    p.add_argument("--width", type=int, help=d("width"))
    p.add_argument("--height", type=int, help=d("height"))
    p.add_argument("--fps", type=int, help=d("fps"))
    p.add_argument("--keyint-s", type=float, help=d("keyint_s"))
    p.add_argument("--srt-latency-ms", type=int, help=d("srt_latency_ms"))
    p.add_argument("--frames-per-burst", type=int, help=d("frames_per_burst"))
    p.add_argument(
        "--data-budget-mb", type=float, help="data budget per period (MB of 10^6 B; default: none)"
    )
    p.add_argument(
        "--budget-reset-day", type=int,
        help=f"1-28: the period starts 00:00 UTC ({d('budget_reset_day')})",
    )  # fmt: skip
    p.add_argument(
        "--budget-pacing", action="store_true", default=None,
        help=f"pace bitrate to the budget ({d('budget_pacing')})",
    )  # fmt: skip
    p.add_argument("--state-dir", type=Path, help="default: ~/.local/state/flumph-agent")
    p.add_argument("--log-level", help=f"debug | info | warning | error ({d('log_level')})")
    p.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    p.add_argument("--telemetry-interval-s", type=float, help=d("telemetry_interval_s"))
    p.add_argument("--heartbeat-interval-s", type=float, help=d("heartbeat_interval_s"))
    m = p.add_argument_group("MQTT control (on when any of these is given)")
    m.add_argument("--mqtt", dest="mqtt_url", metavar="mqtt[s]://HOST[:PORT]", help="the broker")
    m.add_argument("--mqtt-username")
    m.add_argument("--mqtt-password", help="prefer --mqtt-password-file")
    m.add_argument("--mqtt-password-file", help="file whose first line is the password")
    m.add_argument("--mqtt-ca-file", help="CA bundle for mqtts://")
    m.add_argument(
        "--mqtt-keepalive-s", type=int, help=f"{dm('keepalive_s')} (cellular: ~1.9 KB/h idle)"
    )
    m.add_argument("--mqtt-prefix", help=f"topic prefix ({dm('prefix')})")
    m.add_argument("--mqtt-reconnect-min-s", type=float, help=dm("reconnect_min_s"))
    m.add_argument("--mqtt-reconnect-max-s", type=float, help=dm("reconnect_max_s"))
    return p


def _mqtt_section(
    config_path: Path | None, environ: Mapping[str, str], flags: dict[str, object]
) -> dict[str, object] | None:
    """The ``mqtt`` table from TOML < FLUMPH_AGENT_MQTT_* < --mqtt-* flags; None if none given."""
    merged: dict[str, object] = {}
    found = False
    if config_path is not None:
        table = read_toml(config_path).get("agent", {})
        section = table.get("mqtt") if isinstance(table, dict) else None
        if section is not None:
            if not isinstance(section, dict):
                raise ConfigError(f"config file {config_path}: [agent.mqtt] must be a table")
            merged.update(section)
            found = True
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX + "MQTT"):
            continue
        name = key.removeprefix(MQTT_ENV_PREFIX).lower()
        if not key.startswith(MQTT_ENV_PREFIX) or name not in MQTT_KEYS:
            raise ConfigError(
                f"environment variable {key} names no MQTT setting (known: "
                + ", ".join(MQTT_ENV_PREFIX + k.upper() for k in MQTT_KEYS)
                + ")"
            )
        merged[name] = value
        found = True
    for key in MQTT_KEYS:
        flag = flags.pop(f"mqtt_{key}", None)
        if flag is not None:
            merged[key] = flag
            found = True
    if not found:
        return None
    password_file = merged.pop("password_file", None)
    if password_file is not None:
        if merged.get("password") is not None:
            raise ConfigError("mqtt: give password or password_file, not both")
        try:
            lines = Path(str(password_file)).read_text().splitlines()
        except OSError as e:
            raise ConfigError(f"mqtt.password_file: cannot read {password_file}: {e}") from None
        if not lines or not lines[0]:
            raise ConfigError(f"mqtt.password_file: {password_file} has no password on line 1")
        merged["password"] = lines[0]
    return merged


def load_agent_config(
    argv: list[str] | None, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    return _load(_parser().parse_args(argv), environ)


def _load(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> AgentConfig:
    env = os.environ if environ is None else environ
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "stream", "log_json")}
    flags["streaming"] = args.stream
    # The mqtt table is nested: merge its three sources here, so that one flag does not replace
    # the whole [agent.mqtt] table, and keep FLUMPH_AGENT_MQTT_* away from the flat env reader.
    flags["mqtt"] = _mqtt_section(args.config, env, flags)
    plain_env = {k: v for k, v in env.items() if not k.startswith(ENV_PREFIX + "MQTT")}
    return load_config(
        AgentConfig,
        path=args.config,
        section="agent",
        env_prefix=ENV_PREFIX,
        environ=plain_env,
        flags=flags,
    )


def budget_clock(environ: Mapping[str, str]) -> Callable[[], float]:
    """The data budget's clock: wall time, or the test clock of ``FLUMPH_TEST_CLOCK_START``."""
    value = environ.get(CLOCK_ENV)
    if not value:
        return time.time
    try:
        start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        example = "2027-01-31T23:59:50Z"
        raise ConfigError(f"{CLOCK_ENV}={value!r} is not an ISO time like {example}") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    offset = start.timestamp() - time.time()
    log.warning("test clock: the data budget's time starts at %s", start.isoformat())
    return lambda: time.time() + offset


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args)
        clock = budget_clock(os.environ)
    except ConfigError as e:
        setup_logging("info", json_lines=args.log_json)
        log.error("%s", e)
        return 2
    setup_logging(config.log_level, json_lines=args.log_json)
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
        clock=clock,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    start_error = None
    try:
        pipeline.start()
    except (EncoderError, SourceError, ValueError) as e:
        log.error("cannot start streaming: %s", e)
        if config.mqtt is None:
            return 1
        # Under MQTT control the device stays reachable, so it can be told something better.
        start_error = f"streaming did not start: {e}"
    control = None
    if config.mqtt is not None:
        from flumph.agent.control import AgentControl

        control = AgentControl(
            pipeline,
            config.mqtt,
            telemetry_interval_s=config.telemetry_interval_s,
            heartbeat_interval_s=config.heartbeat_interval_s,
        )
        control.start(initial_error=start_error)
    elif not pipeline.streaming:
        log.info("idle: not streaming (start with --stream, or control it with --mqtt)")
    try:
        _log_status_until(stop, pipeline)
    finally:
        log.info("stopping")
        if control is not None:
            control.stop()
        pipeline.stop()
    return 0


def _log_status_until(stop: threading.Event, pipeline: Pipeline) -> None:
    while not stop.wait(STATUS_LOG_INTERVAL_S):
        if pipeline.streaming:
            s = pipeline.status()
            kbps = s["bitrate_kbps"]
            log.info(
                "%s %s kbit/s, %d frames sent, %d dropped, RTT %.1f ms, %d B sent this month",
                s["encoder"], "?" if kbps is None else f"{kbps:.0f}", s["frames_sent"],
                s.get("frames_dropped_busy", 0) + s["frames_dropped_offline"],
                s.get("srt_rtt_ms", 0.0), s["usage_wire_bytes_sent"],
            )  # fmt: skip
