"""`flumph dashboard`: the fleet service (shadow merge, presence, on-demand streaming) and its
HTTP API, alone. Configuration: the ``[dashboard]`` table of ``--config``, then
``FLUMPH_DASHBOARD_*`` variables (e.g. ``FLUMPH_DASHBOARD_MQTT_PASSWORD``: keep passwords out of
the command line; ``FLUMPH_DASHBOARD_PASSWORD`` turns the login on), then flags."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Callable

import uvicorn

from flumph.clihelp import default_of
from flumph.config import ConfigError, load_config
from flumph.logsetup import LOG_LEVELS, setup_logging
from flumph.service.app import run_on_server_loop
from flumph.service.ports import PortWanted, bind_problem
from flumph.service.runner import run_service

from .service import RENAMED, DashboardConfig, DashboardMqtt, DashboardService
from .usage_store import UsageStoreError, check_state_dir

ENV_PREFIX = "FLUMPH_DASHBOARD_"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
FLAGS = (
    "host", "port", "mqtt_url", "mqtt_username", "mqtt_password", "mqtt_prefix",
    "mqtt_ca_file", "ondemand", "ondemand_linger_s", "presence_grace_s",
    "heartbeat_default_s", "command_timeout_s", "ingest_ws_url", "state_dir",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    def d(name: str) -> str:
        return default_of(DashboardConfig, name)

    def dm(name: str) -> str:
        return default_of(DashboardMqtt, name)

    p = argparse.ArgumentParser(
        prog="flumph dashboard",
        description="Fleet view and control over MQTT: device state, shadow merge of patches "
        "on <prefix>/<dev>/set, on-demand streaming, JSON API and live feed (SSE).",
    )
    p.add_argument("--config", help="TOML file; its [dashboard] table is read")
    p.add_argument("--host", help=f"HTTP bind address ({d('host')})")
    p.add_argument("--port", type=int, help=f"HTTP port ({d('port')})")
    p.add_argument(
        "--mqtt", dest="mqtt_url", metavar="URL",
        help=f"broker, mqtt[s]://host:port ({dm('url')})",
    )  # fmt: skip
    p.add_argument("--mqtt-username", help="backend account")
    p.add_argument("--mqtt-password", help="prefer FLUMPH_DASHBOARD_MQTT_PASSWORD")
    p.add_argument("--mqtt-prefix", help=f"topic prefix ({dm('prefix')})")
    p.add_argument("--mqtt-ca-file", help="CA bundle for mqtts://")
    p.add_argument(
        "--no-ondemand", dest="ondemand", action="store_const", const=False,
        help="do not start/stop streams from viewer demand",
    )  # fmt: skip
    p.add_argument("--ondemand-linger-s", type=float, help=d("ondemand_linger_s"))
    p.add_argument("--presence-grace-s", type=float, help="default: 1.5 x device heartbeat")
    p.add_argument("--heartbeat-default-s", type=float, help=d("heartbeat_default_s"))
    p.add_argument("--command-timeout-s", type=float, help=d("command_timeout_s"))
    p.add_argument(
        "--ingest-ws-url", metavar="URL",
        help="the ingest's WebSocket base for the browser, e.g. ws://{host}:8080 "
        "(default: the page's own origin)",
    )  # fmt: skip
    p.add_argument("--state-dir", help="usage history (default: $XDG_STATE_HOME/flumph/dashboard)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def load(ns: argparse.Namespace, environ: dict[str, str] | None = None) -> DashboardConfig:
    return load_config(
        DashboardConfig,
        path=ns.config,
        section="dashboard",
        env_prefix=ENV_PREFIX,
        environ=dict(os.environ if environ is None else environ),
        # --mqtt-username sets [dashboard.mqtt] username: the flags keep their old names.
        flags={RENAMED.get(k, k): getattr(ns, k) for k in FLAGS},
        renamed=RENAMED,
    )


class _Server(uvicorn.Server):
    """Ends the live-feed streams first: uvicorn waits for open responses before lifespan."""

    def __init__(self, config: uvicorn.Config, before_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._before_shutdown()
        await super().shutdown(sockets)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    setup_logging(ns.log_level, json_lines=ns.log_json)
    try:
        cfg = load(ns)
    except ConfigError as e:
        logging.getLogger("flumph.dashboard").error("%s", e)
        return 2
    log = logging.getLogger("flumph.dashboard")
    try:
        check_state_dir(cfg.state_dir)
    except UsageStoreError as e:
        log.error("%s (state_dir, --state-dir)", e)
        return 2
    if cfg.password is None:
        where = "" if cfg.host in LOOPBACK else f" on {cfg.host}, reachable from other machines"
        log.warning("no password set (FLUMPH_DASHBOARD_PASSWORD): the dashboard is open%s", where)
    elif cfg.auth_secret is None:
        log.warning(
            "a password but no FLUMPH_DASHBOARD_AUTH_SECRET: logins end when this process "
            "restarts, and an ingest cannot check viewers unless it has the same secret "
            "(FLUMPH_INGEST_AUTH_SECRET)"
        )
    problem = bind_problem(PortWanted("--port", cfg.host, cfg.port))
    if problem is not None:
        log.error("%s", problem)
        return 1
    service = DashboardService(cfg)
    server = _Server(
        uvicorn.Config(
            service.app(),
            host=cfg.host,
            port=cfg.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        ),
        before_shutdown=service.close_feeds,
    )
    return run_service(
        lambda: run_on_server_loop(server.serve(), server.config), lambda: server.started
    )
