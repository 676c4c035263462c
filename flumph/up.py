"""`flumph up`: the backend in one process on the embedded defaults.

Today that is the ingest (SRT listener, WebSocket relay and a player page); the broker and the
dashboard join it as their components land. ``--demo`` also runs a device agent on the synthetic
camera, as a child process exactly as a device would run it, so live video shows at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator

from flumph.config import ConfigError
from flumph.logsetup import LOG_LEVELS, setup_logging

log = logging.getLogger("flumph.up")
DEMO_DEVICE = "demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="flumph up", description="Run the whole backend in one process."
    )
    p.add_argument("--demo", action="store_true", help="also stream a synthetic camera")
    p.add_argument("--config", help="TOML file ([ingest] table)")
    p.add_argument("--host", default=None, help="HTTP bind address (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default 8080)")
    p.add_argument("--srt-port", type=int, default=None, help="SRT UDP port (default 8890)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument("--log-json", action="store_true")
    return p.parse_args(argv)


def _agent_cmd(srt_port: int) -> list[str]:
    return [
        sys.executable, "-m", "flumph", "agent",
        "--device-id", DEMO_DEVICE,
        "--ingest", f"srt://127.0.0.1:{srt_port}",
        "--source", "synthetic",
        "--stream",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from flumph.ingest.main import load as load_ingest
    from flumph.ingest.service import IngestService

    ns = parse_args(argv)
    setup_logging(ns.log_level, json_lines=ns.log_json)
    ingest_ns = argparse.Namespace(
        config=ns.config, host=ns.host, port=ns.port, srt_host=None, srt_port=ns.srt_port,
        srt_latency_ms=None, max_streams=None, max_viewers_per_stream=None,
        reconnect_grace_s=None, mqtt_url=None,
    )  # fmt: skip
    try:
        cfg = load_ingest(ingest_ns)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    service = IngestService(cfg)
    agent: asyncio.subprocess.Process | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        nonlocal agent
        await service.start()
        host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
        if ns.demo:
            assert service.srt_server is not None
            cmd = _agent_cmd(service.srt_server.port)
            agent = await asyncio.create_subprocess_exec(*cmd, env=dict(os.environ))
            url = f"http://{host}:{cfg.port}/view/{DEMO_DEVICE}"
        else:
            url = f"http://{host}:{cfg.port}/api/streams"
        print(f"Flumph is up: open {url}", flush=True)
        try:
            yield
        finally:
            if agent is not None and agent.returncode is None:
                agent.terminate()
                try:
                    await asyncio.wait_for(agent.wait(), 10)
                except TimeoutError:
                    agent.kill()
            await service.stop()

    from fastapi import FastAPI

    app = FastAPI(title="Flumph", lifespan=lifespan)
    service.add_routes(app)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=cfg.host, port=cfg.port, log_level="warning",
            ws_max_size=cfg.max_message_bytes,
        )
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve())
    return 0 if server.started else 1
