"""`flumph up`: the whole backend in one process on the embedded defaults.

The embedded MQTT broker, the ingest and the dashboard (fleet service) share one event loop and
one FastAPI app; their paths do not overlap, so the app is served on the ingest's port (8080) and
the dashboard's (8000) alike and every documented path answers on both. ``/metrics`` carries the
three components' Prometheus metrics together, behind the dashboard's login. ``--demo`` also runs a
device agent on the synthetic camera as a child process, exactly as a device would run it
(MQTT control, SRT media), so the dashboard has a live camera at once.

Everything binds to loopback unless ``--host`` says otherwise: the embedded defaults have no
passwords, and an open broker or dashboard must be a decision, not an accident.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from flumph import auth
from flumph.config import ConfigError, load_config
from flumph.logsetup import LOG_LEVELS, setup_logging
from flumph.service.ports import PortWanted, first_problem
from flumph.service.runner import run_service

log = logging.getLogger("flumph.up")
DEMO_DEVICE = "demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flumph up",
        description="Run the whole backend in one process: MQTT broker, SRT ingest, dashboard.",
    )
    d = "(default %(default)s)"  # the defaults are the components' (tests/test_cli_help.py)
    p.add_argument("--demo", action="store_true", help="also run an agent on a synthetic camera")
    p.add_argument("--config", help="TOML file with [broker], [ingest] and [dashboard] tables")
    p.add_argument("--host", default="127.0.0.1", help=f"bind address for every port {d}")
    p.add_argument("--port", type=int, default=8080, help=f"ingest HTTP/WebSocket port {d}")
    p.add_argument("--dashboard-port", type=int, default=8000, help=f"dashboard port {d}")
    p.add_argument("--srt-port", type=int, default=8890, help=f"SRT UDP port {d}")
    p.add_argument("--mqtt-port", type=int, default=1883, help=f"MQTT port {d}")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="broker, dashboard and demo-agent state (default: ~/.local/state/flumph)",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _check_ports(ns: argparse.Namespace) -> str | None:
    return first_problem(
        [
            PortWanted("--port", ns.host, ns.port),
            PortWanted("--dashboard-port", ns.host, ns.dashboard_port),
            PortWanted("--mqtt-port", ns.host, ns.mqtt_port),
            PortWanted("--srt-port", ns.host, ns.srt_port, udp=True),
        ]
    )


class _Server:
    """Two uvicorn servers over one app; only the first runs the lifespan and owns signals."""

    def __init__(
        self,
        app: Any,
        host: str,
        ports: list[int],
        before_shutdown: Callable[[], None],
        **uvicorn_options: Any,
    ):
        import uvicorn

        class Server(uvicorn.Server):
            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                # Live-feed responses never end by themselves; uvicorn would wait for them.
                before_shutdown()
                await super().shutdown(sockets)

        self.servers = [
            Server(
                uvicorn.Config(
                    app,
                    host=host,
                    port=port,
                    log_level="warning",
                    lifespan="on" if i == 0 else "off",
                    timeout_graceful_shutdown=5,
                    **uvicorn_options,
                )
            )
            for i, port in enumerate(ports)
        ]

    async def serve(self) -> bool:
        main, *others = self.servers
        side = [asyncio.create_task(s.serve(), name=f"http-{i}") for i, s in enumerate(others)]
        try:
            await main.serve()
        finally:
            for s in others:
                s.should_exit = True
            await asyncio.gather(*side, return_exceptions=True)
        return main.started


def main(argv: list[str] | None = None) -> int:
    from fastapi import FastAPI

    from flumph.broker.config import BrokerSettings, check_settings
    from flumph.broker.server import EmbeddedBroker
    from flumph.dashboard.service import RENAMED as DASHBOARD_RENAMED
    from flumph.dashboard.service import DashboardConfig, DashboardService
    from flumph.dashboard.usage_store import UsageStoreError, check_state_dir
    from flumph.ingest.service import RENAMED as INGEST_RENAMED
    from flumph.ingest.service import IngestConfig, IngestService
    from flumph.ingest.ws_direct import DirectFrameProtocol
    from flumph.service.app import run_on_server_loop
    from flumph.service.metrics import MetricsSource, add_metrics_route

    ns = parse_args(argv)
    setup_logging(ns.log_level, json_lines=ns.log_json)
    problem = _check_ports(ns)
    if problem:
        log.error("%s", problem)
        return 1
    state = (
        ns.state_dir
        or Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "flumph"
    )
    mqtt_url = f"mqtt://127.0.0.1:{ns.mqtt_port}"
    try:
        broker_cfg = load_config(
            BrokerSettings, path=ns.config, section="broker", env_prefix="FLUMPH_BROKER_",
            flags={"host": ns.host, "port": ns.mqtt_port, "state_dir": state / "broker"},
        )  # fmt: skip
        check_settings(broker_cfg)
        ingest_cfg = load_config(
            IngestConfig, path=ns.config, section="ingest", env_prefix="FLUMPH_INGEST_",
            flags={"host": ns.host, "port": ns.port, "srt_host": ns.host,
                   "srt_port": ns.srt_port, "mqtt.url": mqtt_url},
            renamed=INGEST_RENAMED,
        )  # fmt: skip
        dash_cfg = load_config(
            DashboardConfig, path=ns.config, section="dashboard", env_prefix="FLUMPH_DASHBOARD_",
            flags={"host": ns.host, "port": ns.dashboard_port, "mqtt.url": mqtt_url,
                   "state_dir": state / "dashboard"},
            renamed=DASHBOARD_RENAMED,
        )  # fmt: skip
        check_state_dir(dash_cfg.state_dir)
    except (ConfigError, UsageStoreError) as e:
        log.error("%s", e)
        return 2
    # One process, one secret: a dashboard login must open the ingest's viewer WebSocket too.
    secret = dash_cfg.auth_secret or ingest_cfg.auth_secret
    if dash_cfg.password and secret is None:
        secret = auth.new_secret()
    if secret is not None:
        dash_cfg = dash_cfg.model_copy(update={"auth_secret": secret})
        ingest_cfg = ingest_cfg.model_copy(update={"auth_secret": secret})
    elif ns.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("no dashboard password: anybody who reaches %s may watch and control", ns.host)
    broker = EmbeddedBroker(broker_cfg)
    ingest = IngestService(ingest_cfg)
    dashboard = DashboardService(dash_cfg)
    ingest.gate.revoked = dashboard.access.revocations  # a logout ends the session here too
    agent: asyncio.subprocess.Process | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal agent
        await broker.start()
        await ingest.start()
        await dashboard.start()
        if ns.demo:
            assert ingest.srt_server is not None
            cmd = [
                sys.executable, "-m", "flumph", "agent",
                "--device-id", DEMO_DEVICE,
                "--mqtt", mqtt_url,
                "--ingest", f"srt://127.0.0.1:{ingest.srt_server.port}",
                "--source", "synthetic",
                "--state-dir", str(state / "demo-agent"),
                "--stream",
                "--always-on",  # a demo that stops 30 s after the last viewer shows nothing
            ]  # fmt: skip
            agent = await asyncio.create_subprocess_exec(*cmd)
        shown = "127.0.0.1" if ns.host in ("0.0.0.0", "::") else ns.host
        print(f"Flumph is up: open http://{shown}:{ns.dashboard_port}/", flush=True)
        try:
            yield
        finally:
            if agent is not None and agent.returncode is None:
                agent.terminate()
                try:
                    await asyncio.wait_for(agent.wait(), 10)
                except TimeoutError:
                    agent.kill()
            await dashboard.stop()
            await ingest.stop()
            await broker.stop()

    app = FastAPI(title="Flumph", lifespan=lifespan)
    ingest.add_routes(app)
    dashboard.add_routes(app)
    # One /metrics for the three, behind the dashboard's login (see flumph.broker.metrics).
    sources: list[MetricsSource] = [broker.metrics, ingest.metrics, dashboard.metrics]
    add_metrics_route(app, sources, dashboard.access.guard)
    ports = [ns.port] if ns.dashboard_port == ns.port else [ns.port, ns.dashboard_port]
    server = _Server(
        app,
        ns.host,
        ports,
        dashboard.close_feeds,
        ws_max_size=ingest_cfg.max_message_bytes,
        ws_per_message_deflate=False,  # see flumph.ingest.main: video does not compress
        ws=DirectFrameProtocol,  # see flumph.ingest.ws_direct
    )
    return run_service(
        lambda: run_on_server_loop(server.serve(), server.servers[0].config),
        lambda: server.servers[0].started,
    )
