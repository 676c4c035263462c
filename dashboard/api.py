"""The dashboard's JSON API and its live feed (Server-Sent Events).

| route                                   | what                                                 |
|-----------------------------------------|------------------------------------------------------|
| ``GET /api/health``                     | broker connection, readiness, counters               |
| ``GET /api/devices``                    | every device's view (see :func:`device_view`)        |
| ``GET /api/devices/{id}``               | one device, with its documents and recent commands   |
| ``POST /api/devices/{id}/set``          | JSON patch → shadow merge → the new ``desired``;     |
|                                         | 422 with the field named if refused                  |
| ``POST /api/devices/{id}/cmd/{name}``   | one-shot command; ``?wait=S`` waits for its ack      |
| ``POST /api/devices``                   | ``{"id"}``: add (provision) a device; 201, or 200 if |
|                                         | it was known                                         |
| ``POST /api/devices/{id}/forget``       | remove a device: every retained topic of it deleted  |
| ``GET /api/devices/{id}/snapshot``      | the last still, with its sniffed content type        |
| ``GET /api/events[?device=ID]``         | SSE: ``devices`` (all, at once), then ``device``     |
|                                         | per change, ``removed`` ``{"id"}`` when one is       |
|                                         | forgotten; ``resync`` (all) after an overflow        |

An unknown device (see :mod:`flumph.lifecycle`) is 404 on every ``/api/devices/{id}`` route but
``forget``, which also cleans up what an unknown id left on the broker.

With a password configured, every route needs a session (see :mod:`.access`); the page, the
login and ``GET /api/config`` are in :mod:`.pages`; data use, budget and grants in
:mod:`.usage_api`.

Why SSE rather than a WebSocket: the feed only flows one way, browsers reconnect an
``EventSource`` by themselves, and ``curl -N`` can watch it. Each client has a bounded queue;
a client that falls behind loses its queued events and gets one ``resync`` event carrying every
device (``{"dropped": N, "devices": [...]}``), after which its state is whole again.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from flumph.control import ContractError, Desired, Reported, Telemetry
from flumph.lifecycle import UnknownDevice

from .access import Access
from .bodies import json_object, read_body
from .device_state import DeviceState
from .fleet import Fleet
from .fleet_link import Unavailable
from .usage_history import Sample
from .usage_view import budget_summary, usage_summary

KEEPALIVE_S = 15.0
_CLOSE = ("close", "")


def sync_state(desired: Desired | None, reported: Reported | None) -> str:
    """Where the device stands against its ``desired`` version."""
    if desired is None:
        return "none"
    if reported is None:
        return "pending"
    if reported.applied_v is not None and reported.applied_v >= desired.v:
        return "applied"
    # A device that has applied nothing yet can fail too (no encoder opens at its first wish).
    return "error" if reported.error else "pending"


Marks = Callable[[str], Sample | None]  # a device's last stored usage report (usage history)


def _live_figures(dev: DeviceState, streaming: bool | None) -> Telemetry | None:
    """The telemetry whose figures describe the stream running now, or None.

    Only a streaming telemetry that came after the newest ``reported``: a stream (re)started or
    reconfigured since has not been measured yet, and the previous session's last figures would
    read as this one's first."""
    tel = dev.telemetry
    if not streaming or tel is None or not tel.streaming:
        return None
    return tel if (dev.telemetry_at or 0) >= (dev.reported_at or 0) else None


def device_view(
    fleet: Fleet, dev: DeviceState, *, detail: bool = False, marks: Marks | None = None
) -> dict[str, Any]:
    desired = fleet.shadow.current(dev.device_id)
    rep, tel = dev.reported, dev.telemetry
    settings = rep.settings if rep is not None else {}
    streaming = dev.streaming_now()
    live = _live_figures(dev, streaming)
    demand = fleet.ondemand.state(dev.device_id)
    loop_now = asyncio.get_running_loop().time()
    view: dict[str, Any] = {
        "id": dev.device_id,
        "presence": fleet.presence(dev),
        "last_seen": dev.last_seen,
        "streaming": streaming,
        "video": {
            # Forwarding (codec copy): the codec is the source's.
            "codec": rep.source.codec if rep and rep.source else settings.get("codec"),
            "encoder": (rep.encoder if rep else None) or (tel.encoder if tel else None),
            "width": (live.width if live else None) or settings.get("width"),
            "height": (live.height if live else None) or settings.get("height"),
            "fps": live.fps if live else None,
            "bitrate_kbps": live.bitrate_kbps if live else None,
            "target_fps": settings.get("fps"),
            "target_bitrate_kbps": settings.get("bitrate_kbps"),
        },
        # What the device runs now (its reported settings), for the page's settings form.
        "settings": settings,
        "srt": live.srt.model_dump() if live is not None and live.srt is not None else None,
        "rate": live.rate.model_dump() if live is not None and live.rate is not None else None,
        "ladder": rep.ladder.model_dump() if rep is not None and rep.ladder is not None else None,
        # From the birth, reported and telemetry, whichever is newest (see .usage_view).
        "usage": usage_summary(dev, marks(dev.device_id) if marks is not None else None),
        "budget": budget_summary(dev),
        "desired": json.loads(desired.payload()) if desired is not None else None,
        "desired_v": desired.v if desired is not None else None,
        "applied_v": rep.applied_v if rep is not None else None,
        "sync": sync_state(desired, rep),
        "error": rep.error if rep is not None else None,
        "notice": rep.notice if rep is not None else None,
        "state": rep.state if rep is not None else None,  # idle | streaming | restarting
        "last_set_error": dev.last_set_error,
        "ondemand": {
            "viewers": demand.viewers if demand else None,
            "pinned": demand.pinned if demand else False,
            "stops_in_s": round(max(0.0, demand.linger_until - loop_now), 1)
            if demand is not None and demand.linger_until is not None
            else None,
        },
        "snapshot": {
            "url": f"/api/devices/{dev.device_id}/snapshot",
            "content_type": dev.snapshot_type,
            "bytes": len(dev.snapshot),
            "at": dev.snapshot_at,
        }
        if dev.snapshot is not None
        else None,
        "errors": dev.errors,
    }
    if detail:
        view |= {
            "status": dev.status.model_dump() if dev.status else None,
            "reported": rep.model_dump() if rep else None,
            "telemetry": tel.model_dump() if tel else None,
            "telemetry_at": dev.telemetry_at,
            "presence_grace_s": fleet.grace_s(dev),
            "commands": [c.view() for c in reversed(dev.commands.values())],
            "last_ack": dev.last_ack.model_dump() if dev.last_ack else None,
            "last_error": dev.last_error,
        }
    return view


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


class FeedClient:
    def __init__(self, device: str | None, size: int) -> None:
        self.device = device
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=size)
        self.overflowed = False
        self.dropped = 0

    def offer(self, item: tuple[str, str]) -> None:
        if self.overflowed:
            self.dropped += 1
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += self.queue.qsize() + 1
            self._drain()
            self.overflowed = True
            self.queue.put_nowait(("resync", ""))

    def close(self) -> None:
        self._drain()
        self.queue.put_nowait(_CLOSE)

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


class EventFeed:
    """Fans device changes out to SSE clients, each with a bounded queue."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        queue_size: int = 256,
        max_clients: int = 100,
        marks: Marks | None = None,
    ) -> None:
        self.fleet = fleet
        self.marks = marks
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.clients: set[FeedClient] = set()
        self.closed = False
        fleet.listeners.append(self._on_change)

    def _on_change(self, device_id: str) -> None:
        if not self.clients:
            return
        dev = self.fleet.devices.get(device_id)
        if dev is None:
            # Forgotten: the page drops its card.
            item = ("removed", json.dumps({"id": device_id}))
        else:
            item = ("device", json.dumps(device_view(self.fleet, dev, marks=self.marks)))
        for client in self.clients:
            if client.device in (None, device_id):
                client.offer(item)

    def close(self) -> None:
        """End every stream (uvicorn waits for open responses before it shuts down)."""
        self.closed = True
        for client in self.clients:
            client.close()

    def _all(self, device: str | None) -> list[dict[str, Any]]:
        return [
            device_view(self.fleet, d, marks=self.marks)
            for d in self.fleet.devices.values()
            if device in (None, d.device_id)
        ]

    async def stream(self, client: FeedClient) -> AsyncIterator[str]:
        # Registered here, in the same step as the first event, so no change falls between.
        self.clients.add(client)
        try:
            yield _sse("devices", json.dumps(self._all(client.device)))
            while not self.closed:
                try:
                    event, data = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event == "close":
                    return
                if event == "resync":
                    client.overflowed = False
                    doc = {"dropped": client.dropped, "devices": self._all(client.device)}
                    client.dropped = 0
                    yield _sse("resync", json.dumps(doc))
                    continue
                yield _sse(event, data)
        finally:
            self.clients.discard(client)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message})


def add_api_routes(
    app: FastAPI, fleet: Fleet, feed: EventFeed, access: Access | None = None
) -> None:
    """The fleet API on ``app``; with ``access``, every route needs what it grants (see
    :mod:`.access`)."""
    router = APIRouter(dependencies=[Depends(access.guard)] if access is not None else [])
    _fleet_routes(router, fleet, feed)
    app.include_router(router)


def _fleet_routes(app: APIRouter, fleet: Fleet, feed: EventFeed) -> None:
    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {
            "mqtt": {
                "url": fleet.mqtt.url,
                "connected": fleet.connected,
                "ready": fleet.ready.is_set(),
                "error": fleet.last_connect_error,
            },
            "devices": len(fleet.devices),
            "stray_messages": fleet.stray_messages,
            "unknown_device_messages": fleet.registry.unknown_messages,
            "dropped_devices": fleet.dropped_devices,
            "snapshot_bytes": fleet.snapshot_bytes,
            "snapshots_evicted": fleet.snapshots_evicted,
            "event_clients": len(feed.clients),
        }

    @app.get("/api/devices")
    async def devices() -> list[dict[str, Any]]:
        return [device_view(fleet, d, marks=feed.marks) for d in sorted(
            fleet.devices.values(), key=lambda d: d.device_id)]  # fmt: skip

    @app.get("/api/devices/{device_id}", response_model=None)
    async def device(device_id: str) -> dict[str, Any] | JSONResponse:
        dev = fleet.devices.get(device_id)
        if dev is None:
            return _error(404, str(UnknownDevice(device_id)))
        return device_view(fleet, dev, detail=True, marks=feed.marks)

    @app.post("/api/devices", response_model=None)
    async def provision(request: Request) -> JSONResponse:
        doc = json_object(await read_body(request), "device", max_depth=2)
        device_id = doc.get("id")
        if not isinstance(device_id, str):
            return _error(422, 'give {"id": "<device id>"}')
        try:
            created = await fleet.registry.provision(device_id)
        except ContractError as e:
            return _error(422, str(e))
        except Unavailable as e:
            return _error(503, str(e))
        dev = fleet.devices.get(device_id)
        if dev is None:  # provisioned, but the broker has not echoed it yet
            return JSONResponse(status_code=202, content={"id": device_id})
        return JSONResponse(status_code=201 if created else 200, content=device_view(fleet, dev))

    @app.post("/api/devices/{device_id}/forget", response_model=None)
    async def forget(device_id: str) -> JSONResponse:
        try:
            was_known = await fleet.registry.forget(device_id)
        except ContractError as e:
            return _error(422, str(e))
        except Unavailable as e:
            return _error(503, str(e))
        return JSONResponse({"id": device_id, "was_known": was_known})

    @app.post("/api/devices/{device_id}/set", response_model=None)
    async def set_(device_id: str, request: Request) -> JSONResponse:
        body = await read_body(request)
        try:
            doc, published = await fleet.sets.from_api(device_id, body)
        except UnknownDevice as e:
            return _error(404, str(e))
        except ContractError as e:
            return _error(422, str(e))
        except Unavailable as e:
            return _error(503, str(e))
        # 202: merged, but the broker has not acknowledged it yet (paho sends it on reconnect).
        return JSONResponse(
            status_code=200 if published else 202, content=json.loads(doc.payload())
        )

    @app.post("/api/devices/{device_id}/cmd/{name}", response_model=None)
    async def command(
        device_id: str, name: str, wait: float | None = Query(default=None, ge=0, le=60)
    ) -> dict[str, Any] | JSONResponse:
        try:
            rec = await fleet.command(device_id, name, wait)
        except UnknownDevice as e:
            return _error(404, str(e))
        except ContractError as e:
            return _error(422, str(e))
        except Unavailable as e:
            return _error(503, str(e))
        if wait and rec.state == "pending":
            return JSONResponse(status_code=504, content=rec.view())
        return JSONResponse(status_code=200 if wait else 202, content=rec.view())

    @app.get("/api/devices/{device_id}/snapshot", response_model=None)
    async def snapshot(device_id: str) -> Response:
        dev = fleet.devices.get(device_id)
        if dev is None or dev.snapshot is None:
            return _error(404, f"no snapshot from {device_id!r}")
        at = email.utils.formatdate(dev.snapshot_at or time.time(), usegmt=True)
        return Response(
            dev.snapshot,
            media_type=dev.snapshot_type,
            headers={"Cache-Control": "no-store", "Last-Modified": at},
        )

    @app.get("/api/events", response_model=None)
    async def events(device: str | None = None) -> StreamingResponse | JSONResponse:
        if len(feed.clients) >= feed.max_clients:
            return _error(503, f"too many live-feed clients (limit {feed.max_clients})")
        client = FeedClient(device, feed.queue_size)
        return StreamingResponse(
            feed.stream(client),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
