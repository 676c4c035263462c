"""A FastAPI app around one service: its start/stop as the lifespan, its routes added.

Server components only (it imports FastAPI); the agent never imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from fastapi import FastAPI


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
