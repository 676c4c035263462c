"""A FastAPI app around one service: its start/stop as the lifespan, its routes added; and running
a uvicorn server on the event loop its ``loop`` setting picks.

Server components only (it imports FastAPI and uvicorn); the agent never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol, TypeVar

import uvicorn
from fastapi import FastAPI

T = TypeVar("T")


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def add_routes(self, app: FastAPI) -> None: ...


def service_app(title: str, service: Service) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title=title, lifespan=lifespan)
    service.add_routes(app)
    return app


def run_on_server_loop(main: Coroutine[Any, Any, T], config: uvicorn.Config) -> T:
    """Run ``main`` (a server's ``serve()``, or a coroutine that serves) to its end on the loop
    uvicorn's ``loop`` setting chooses: uvloop when installed, for ``"auto"``. A bare
    ``asyncio.run(server.serve())`` skips that choice and always runs asyncio's own loop."""
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        return runner.run(main)
