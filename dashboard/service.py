"""The dashboard as one object: configuration, fleet service and HTTP API, started and stopped
together (also embedded by ``flumph up``)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field, field_validator

from flumph import auth
from flumph.config import StrictModel
from flumph.mqtt import BackendMqttSettings, flat_mqtt_keys
from flumph.service.app import service_app
from flumph.service.metrics import add_metrics_route

from .access import Access
from .api import EventFeed, add_api_routes
from .apidocs import guard_api_docs
from .fleet import Fleet, FleetOptions
from .metrics import FleetMetrics
from .pages import add_page_routes
from .usage_api import add_usage_routes
from .usage_tracker import UsageTracker


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "flumph" / "dashboard"


class DashboardMqtt(BackendMqttSettings):
    """The dashboard's broker connection: a server on a fixed line notices a dead broker within a
    minute (a device's keepalive is six times longer, for its metered link)."""

    keepalive_s: int = Field(default=60, ge=5, le=3600, title="MQTT keepalive")


# The flat keys the [dashboard] table had before its mqtt table (mqtt_url → [dashboard.mqtt] url).
RENAMED = flat_mqtt_keys()


class DashboardConfig(StrictModel):
    host: str = Field(default="0.0.0.0", title="HTTP bind address")
    port: int = Field(default=8000, ge=0, le=65535, title="HTTP port")
    mqtt: DashboardMqtt = Field(
        default_factory=lambda: DashboardMqtt(),
        title="the broker and the backend account: the [dashboard.mqtt] table",
    )
    ondemand: bool = Field(default=True, title="start/stop streams from the ingest's demand")
    ondemand_linger_s: float = Field(
        default=30.0, ge=0, le=86400, title="seconds without viewers before a stream stops"
    )
    presence_grace_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        title="silence before a device shows offline (default: 1.5 x its heartbeat)",
    )
    heartbeat_default_s: float = Field(
        default=300.0, gt=0, le=86400, title="heartbeat assumed until telemetry announces one"
    )
    command_timeout_s: float = Field(default=30.0, gt=0, le=3600, title="command ack timeout")
    max_devices: int = Field(default=10000, ge=1, le=1_000_000, title="devices tracked")
    snapshot_max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, title="largest snapshot kept"
    )
    snapshot_total_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, title="stills held for the whole fleet (oldest go)"
    )
    events_queue: int = Field(default=256, ge=8, le=100000, title="events a feed client may lag")
    max_event_clients: int = Field(default=100, ge=1, le=10000, title="live-feed clients")
    password: str | None = Field(
        default=None,
        min_length=8,
        title="operator password (env FLUMPH_DASHBOARD_PASSWORD); plain, or "
        "pbkdf2-sha256$<iterations>$<salt>$<hash> (flumph.auth.hash_password); none: open",
    )
    auth_secret: str | None = Field(
        default=None,
        min_length=auth.MIN_SECRET_CHARS,
        title="secret that signs session and viewer tokens, shared with the ingest's "
        "auth_secret (env FLUMPH_DASHBOARD_AUTH_SECRET); none: a random one per run",
    )
    session_ttl_s: float = Field(
        default=86400.0, ge=60, le=90 * 86400, title="how long a login lasts"
    )
    viewer_token_ttl_s: float = Field(
        default=120.0,
        ge=5,
        le=86400,
        title="lifetime of the token in a viewer WebSocket URL (checked when it connects)",
    )
    state_dir: Path = Field(
        default_factory=default_state_dir, title="where the usage history lives (usage.sqlite3)"
    )
    usage_history_days: int = Field(
        default=62, ge=2, le=400, title="days of hourly usage kept per device"
    )
    ingest_ws_url: str | None = Field(
        default=None,
        title="the ingest's WebSocket base as the browser reaches it, e.g. ws://{host}:8080 "
        "({host}: the page's host name); none: the page's own origin",
    )

    @field_validator("ingest_ws_url")
    @classmethod
    def _ingest_ws_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("ws://", "wss://")) or len(v.split("//", 1)[1]) == 0:
            raise ValueError(
                "must start with ws:// or wss:// and name a host, e.g. ws://{host}:8080"
            )
        if "?" in v or "#" in v:
            raise ValueError("must be a base URL without ? or #")
        return v.rstrip("/")

    @field_validator("password")
    @classmethod
    def _password(cls, v: str | None) -> str | None:
        if v is not None and v.startswith(auth.PBKDF2_PREFIX + "$"):
            auth.check_password("", v)  # a malformed hash fails here, at load time
        return v

    def fleet_options(self) -> FleetOptions:
        return FleetOptions(
            presence_grace_s=self.presence_grace_s,
            heartbeat_default_s=self.heartbeat_default_s,
            ondemand=self.ondemand,
            ondemand_linger_s=self.ondemand_linger_s,
            command_timeout_s=self.command_timeout_s,
            max_devices=self.max_devices,
            snapshot_max_bytes=self.snapshot_max_bytes,
            snapshot_total_bytes=self.snapshot_total_bytes,
        )


class DashboardService:
    def __init__(self, cfg: DashboardConfig) -> None:
        self.cfg = cfg
        self.fleet = Fleet(cfg.mqtt, cfg.fleet_options())
        self.usage = UsageTracker(
            self.fleet,
            cfg.state_dir,
            keep_days=cfg.usage_history_days,
            max_devices=cfg.max_devices,
        )
        self.feed = EventFeed(
            self.fleet,
            queue_size=cfg.events_queue,
            max_clients=cfg.max_event_clients,
            marks=self.usage.mark,
        )
        self.access = Access(
            password=cfg.password,
            secret=cfg.auth_secret,
            session_ttl_s=cfg.session_ttl_s,
            viewer_ttl_s=cfg.viewer_token_ttl_s,
        )
        self.metrics = FleetMetrics(self.fleet, self.feed)

    async def start(self) -> None:
        # The stored history first: the first report after a restart continues from it.
        await self.usage.start()
        await self.fleet.start()

    async def stop(self) -> None:
        self.feed.close()
        await self.fleet.stop()
        await self.usage.stop()

    def close_feeds(self) -> None:
        """End the live-feed responses; call before the HTTP server waits for open responses."""
        self.feed.close()

    def add_routes(self, app: FastAPI) -> None:
        add_api_routes(app, self.fleet, self.feed, self.access)
        add_usage_routes(app, self.fleet, self.usage, self.access)
        add_page_routes(app, self.access, ingest_ws_url=self.cfg.ingest_ws_url)
        guard_api_docs(app, self.access)

    def app(self) -> FastAPI:
        app = service_app("Flumph dashboard", self)
        # Not in add_routes: `flumph up` serves every component's metrics on one /metrics.
        add_metrics_route(app, [self.metrics], self.access.guard)
        return app
