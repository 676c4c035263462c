"""The ingest as one object: configuration, hub, SRT listener and HTTP app, started and stopped
together (also embedded by ``flumph up``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI
from pydantic import Field, field_validator, model_validator

from flumph import auth, srt
from flumph.config import StrictModel
from flumph.mqtt import BackendMqttSettings, flat_mqtt_keys
from flumph.service.app import service_app
from flumph.service.metrics import add_metrics_route

from .admission import Admission
from .app import TokenGate, add_preview_routes, add_relay_routes
from .budget_notice import BudgetNotices
from .demand import DemandPublisher
from .hub import Hub
from .keyframes import LOSS_POLL_S, KeyframeRequests
from .known import KnownDevices
from .metrics import IngestMetrics
from .srt_ingest import SrtIngest

log = logging.getLogger("flumph.ingest")


class IngestMqtt(BackendMqttSettings):
    """The broker the ingest publishes viewer demand to. The table turns on-demand streaming on,
    so it must name its broker: a prefix alone must not start talking to 127.0.0.1."""

    url: str = Field(title="broker URL: mqtt://host:port or mqtts:// (required)")


# The flat keys the [ingest] table had before its mqtt table (mqtt_url → [ingest.mqtt] url).
RENAMED = flat_mqtt_keys()


class IngestConfig(StrictModel):
    host: str = Field(default="0.0.0.0", title="HTTP/WebSocket bind address (env HOST)")
    port: int = Field(default=8080, ge=0, le=65535, title="HTTP/WebSocket port (env PORT)")
    srt_host: str = Field(
        default="0.0.0.0", title="SRT listener bind address (default: the same as host)"
    )
    srt_port: int = Field(default=8890, ge=0, le=65535, title="SRT listener UDP port")
    srt_latency_ms: int = Field(default=120, ge=20, le=8000, title="SRT receive latency")
    # libsrt's timestamp-based delivery holds every packet until its send time + srt_latency_ms
    # and runs a delivery thread per publisher. Off (the default), a frame reaches viewers ~110 ms
    # sooner and SRT's receive CPU halves (bench/README.md, `srt_tsbpd.py`); a lost packet is
    # waited for until resent. Caveat: without TSBPD libsrt may fail to skip a packet the sender
    # gave up on (Haivision/srt#1082; TLPKTDROP needs TSBPD): a sender that drops too-late packets
    # (libsrt's default; ffmpeg, OBS) can stall its stream until publisher_idle_s drops it (1 of
    # 3 runs; in 2 of 2 others, 2.5 and 4 s outages, the ingest skipped the gap and went on).
    # The agent never drops (device-agent/linkestimate.py); its uplink adaptation passes
    # tests/test_link_adaptation.py in both modes.
    srt_tsbpd: bool = Field(
        default=False, title="SRT timestamp-based delivery (hold packets for srt_latency_ms)"
    )
    srt_passphrase: str | None = Field(
        default=None, min_length=10, max_length=79, title="passphrase every publisher must use"
    )
    passphrases: dict[str, str] = Field(
        default_factory=dict, title="per-stream passphrases (stream id -> passphrase)"
    )
    max_streams: int = Field(
        default=100, ge=1, le=10000, title="concurrent streams (env MAX_STREAMS)"
    )
    max_viewers_per_stream: int = Field(
        default=10, ge=1, le=10000, title="viewers per stream (env MAX_VIEWERS_PER_STREAM)"
    )
    viewer_queue_frames: int = Field(
        default=120, ge=8, le=10000, title="frames a viewer may lag before it skips to a keyframe"
    )
    reconnect_grace_s: float = Field(
        default=10.0, ge=0, le=3600, title="how long viewers wait for an SRT publisher to come back"
    )
    max_waiting: int = Field(
        default=256,
        ge=0,
        le=100000,
        title="viewers waiting for a known device to start (never counted in max_streams)",
    )
    max_waiting_per_address: int = Field(
        default=32, ge=0, le=10000, title="waiting viewers from one client address"
    )
    publisher_first_data_s: float = Field(
        default=5.0, gt=0, le=600, title="an SRT publisher that sends nothing this long is dropped"
    )
    publisher_idle_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        title="an SRT publisher whose data stops this long is dropped (its id freed)",
    )
    max_message_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, title="largest WebSocket message accepted"
    )
    mqtt: IngestMqtt | None = Field(
        default=None,
        title="the broker viewer demand is published to (on-demand streaming) and devices are "
        "asked for keyframes on (cmd/keyframe: the account needs the backend's rights): the "
        "[ingest.mqtt] table, its url required; none: both off",
    )
    auth_secret: str | None = Field(
        default=None,
        min_length=auth.MIN_SECRET_CHARS,
        title="secret shared with the dashboard; set: viewers, streamers and /api/* need a "
        "token it signed (env FLUMPH_INGEST_AUTH_SECRET)",
    )

    @model_validator(mode="before")
    @classmethod
    def _srt_host_follows_host(cls, data: Any) -> Any:
        # `--host 127.0.0.1` means "only this machine": the SRT listener too, unless told apart.
        if isinstance(data, dict) and data.get("srt_host") is None and "host" in data:
            return {**data, "srt_host": data["host"]}
        return data

    @field_validator("passphrases")
    @classmethod
    def _passphrase_lengths(cls, v: dict[str, str]) -> dict[str, str]:
        for sid, secret in v.items():
            if not 10 <= len(secret) <= 79:
                raise ValueError(f"passphrase for {sid!r} must be 10-79 characters")
        return v


# The seed's environment variables, honoured as it specifies.
SEED_ENV = {
    "HOST": "host",
    "PORT": "port",
    "MAX_STREAMS": "max_streams",
    "MAX_VIEWERS_PER_STREAM": "max_viewers_per_stream",
}


def seed_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {field: environ[var] for var, field in SEED_ENV.items() if var in environ}


class IngestService:
    def __init__(self, cfg: IngestConfig) -> None:
        self.cfg = cfg
        self.hub = Hub(
            max_streams=cfg.max_streams,
            max_viewers_per_stream=cfg.max_viewers_per_stream,
            viewer_queue_frames=cfg.viewer_queue_frames,
            reconnect_grace_s=cfg.reconnect_grace_s,
        )
        self.srt_handler: SrtIngest | None = None
        self.srt_server: srt.SrtServer | None = None
        self.demand: DemandPublisher | None = None
        # Waiting viewers told about a used-up data budget (needs MQTT: follows reported).
        self.budget: BudgetNotices | None = None
        self.metrics = IngestMetrics(self.hub, lambda: self.srt_handler)
        self.gate = TokenGate(cfg.auth_secret)
        self.known = KnownDevices()
        self.admission = Admission(
            max_waiting=cfg.max_waiting,
            max_waiting_per_address=cfg.max_waiting_per_address,
            is_known=self.known.is_known if cfg.mqtt is not None else None,
        )
        self._idle_watch: asyncio.Task[None] | None = None
        self.keyframes: KeyframeRequests | None = None
        self._loss_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.srt_handler = SrtIngest(
            self.hub,
            loop,
            passphrases=self.cfg.passphrases,
            default_passphrase=self.cfg.srt_passphrase,
            first_data_s=self.cfg.publisher_first_data_s,
            idle_s=self.cfg.publisher_idle_s,
        )
        self.srt_server = srt.SrtServer(
            self.cfg.srt_host,
            self.cfg.srt_port,
            srt.SrtOptions(latency_ms=self.cfg.srt_latency_ms, tsbpd=self.cfg.srt_tsbpd),
            self.srt_handler,
            backlog=max(srt.SrtServer.DEFAULT_BACKLOG, self.cfg.max_streams),
            on_round_end=self.srt_handler.on_round_end,
            join_messages=True,  # a demuxer reads bytes, and its cost is largely per call
        )
        await asyncio.to_thread(self.srt_server.start)
        log.info("SRT ingest listening on %s:%d/udp", self.cfg.srt_host, self.srt_server.port)
        self._idle_watch = loop.create_task(self.srt_handler.watch_idle(), name="srt-idle-watch")
        mqtt = self.cfg.mqtt
        if mqtt is not None:
            self.demand = DemandPublisher(mqtt)
            self.demand.follow("status", self.known.on_status)
            self.demand.is_known = self.known.is_known
            self.budget = BudgetNotices(self.hub)
            self.budget.bind(loop)
            self.demand.follow("reported", self.budget.on_reported)
            self.demand.start()
            self.hub.on_viewers = self.demand.update
            log.info("publishing viewer demand to %s", mqtt.url)
            self.keyframes = KeyframeRequests(
                self.demand.ask_keyframe, is_known=self.known.is_known
            )
            self.hub.ask_keyframe = self.keyframes.ask
            self._loss_watch = asyncio.create_task(self._watch_losses(), name="srt-loss-watch")

    async def _watch_losses(self) -> None:
        """Ask a device for a keyframe when its SRT connection dropped packets as too late: the
        picture is broken for every viewer until the next keyframe. (A reconnect restarts the
        counter: lower than before is a new connection, not a loss.)"""
        dropped: dict[str, int] = {}
        while True:
            await asyncio.sleep(LOSS_POLL_S)
            handler, keyframes = self.srt_handler, self.keyframes
            if handler is None or keyframes is None:
                continue
            stats = await asyncio.to_thread(handler.stats)
            for stream_id, st in stats.items():
                before = dropped.get(stream_id)
                if before is not None and st.packets_dropped_received > before:
                    lost = st.packets_dropped_received - before
                    keyframes.ask(stream_id, f"SRT dropped {lost} packets as too late")
            dropped = {sid: st.packets_dropped_received for sid, st in stats.items()}

    async def stop(self) -> None:
        if self._idle_watch is not None:
            self._idle_watch.cancel()
            await asyncio.gather(self._idle_watch, return_exceptions=True)
        if self._loss_watch is not None:
            self._loss_watch.cancel()
            await asyncio.gather(self._loss_watch, return_exceptions=True)
        if self.srt_server is not None:
            await asyncio.to_thread(self.srt_server.stop)
        for s in self.hub.streams():
            self.hub.end(s)
        if self.demand is not None:
            await asyncio.to_thread(self.demand.stop)

    def add_routes(self, app: FastAPI) -> None:
        gate = self.gate
        add_relay_routes(app, self.hub, gate, notices=self._budget_notice, admission=self.admission)
        add_preview_routes(app)

        @app.get("/api/errors", dependencies=[Depends(gate.require_http)])
        async def errors() -> list[dict[str, Any]]:
            handler = self.srt_handler
            if handler is None:
                return []
            return [r.__dict__ for r in handler.errors]

    def _budget_notice(self, stream_id: str) -> str | None:
        return self.budget.notice(stream_id) if self.budget is not None else None

    def app(self) -> FastAPI:
        app = service_app("Flumph ingest", self)
        # Not in add_routes: `flumph up` serves every component's metrics on one /metrics.
        add_metrics_route(app, [self.metrics], self.gate.require_http)
        return app
