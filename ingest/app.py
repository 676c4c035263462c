"""HTTP and WebSocket API of the ingest: the seed's relay protocol plus SRT streams as fMP4."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketState

from flumph import auth

from . import relay_protocol as rp
from .admission import Admission, WaitTicket
from .hub import Hub, HubError
from .still import send_still
from .stream import Stream
from .viewer import Viewer
from .ws_direct import frame_sink

log = logging.getLogger("flumph.ingest.api")

FIRST_MESSAGE_TIMEOUT_S = 10.0
# Close codes (RFC 6455): 1000 normal, 1008 policy violation, 1013 try again later.
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER = 1000, 1008, 1013


async def _refuse(ws: WebSocket, message: str, code: int = CLOSE_POLICY) -> None:
    """Tell the client why, then close cleanly: a refusal is a message, not a dropped socket."""
    with contextlib.suppress(Exception):
        await ws.send_text(rp.error(message))
        await ws.close(code, reason=message[:120])


async def _first_text(ws: WebSocket) -> str:
    try:
        msg = await asyncio.wait_for(ws.receive(), FIRST_MESSAGE_TIMEOUT_S)
    except TimeoutError:
        raise ValueError(
            f"no message within {FIRST_MESSAGE_TIMEOUT_S:.0f} s of connecting"
        ) from None
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    text = msg.get("text")
    if text is None:
        raise ValueError("the first message must be JSON text, not binary")
    assert isinstance(text, str)
    return text


class TokenGate:
    """Who may use the ingest. Without a secret everyone (the seed's protocol, unchanged); with
    one, ``/ws/view/*``, ``/ws/stream`` and ``/api/*`` need a token signed with it (see
    :mod:`flumph.auth`): ``?token=``, the dashboard's ``flumph_session`` cookie or a Bearer
    header. ``/health`` and the preview page stay open; they show nothing of the streams."""

    def __init__(self, secret: str | None, revoked: auth.Revocations | None = None) -> None:
        self.secret = secret
        self.revoked = revoked  # the dashboard's logouts, when it runs in this process

    def refusal(self, conn: HTTPConnection, kinds: Collection[auth.TokenKind]) -> str | None:
        """Why ``conn`` may not proceed, or None if it may."""
        if self.secret is None:
            return None
        token, _ = auth.request_token(conn.query_params, conn.cookies, conn.headers)
        if token is None:
            return (
                "unauthorized: log in to the dashboard, or pass ?token= "
                "(a viewer token from the dashboard's /api/viewer-token)"
            )
        try:
            auth.verify(self.secret, token, kinds, now=time.time(), revoked=self.revoked)
        except auth.AuthError as e:
            return f"unauthorized: {e}"
        return None

    def require_http(self, request: Request) -> None:
        """FastAPI dependency for the ingest's HTTP API."""
        why = self.refusal(request, auth.KINDS)
        if why is not None:
            raise HTTPException(401, detail=why, headers={"WWW-Authenticate": "Bearer"})


OPEN = TokenGate(None)
PUBLISHER_KINDS: tuple[auth.TokenKind, ...] = ("session",)


def _address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client is not None else "?"


def add_relay_routes(
    app: FastAPI,
    hub: Hub,
    gate: TokenGate = OPEN,
    notices: Callable[[str], str | None] | None = None,
    admission: Admission | None = None,
) -> None:
    """The seed's routes; ``notices(stream_id)``: a text message for a viewer who waits for a
    device that may not stream now (see :mod:`.budget_notice`), or None; ``admission``: who may
    wait and which ids a streamer may take (see :mod:`.admission`; none: nobody waits)."""
    api_guard = [Depends(gate.require_http)]
    rules = admission if admission is not None else Admission()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        streams = hub.streams()
        return {
            "status": "ok",
            "streams": len(streams),
            "viewers": sum(len(s.viewers) for s in streams),
        }

    @app.get("/api/streams", dependencies=api_guard)
    async def list_streams() -> list[dict[str, object]]:
        return [s.info() for s in hub.streams()]

    @app.get("/api/streams/{stream_id}", dependencies=api_guard)
    async def one_stream(stream_id: str) -> Response:
        s = hub.get(stream_id)
        if s is None:
            return JSONResponse({"error": "stream not found"}, status_code=404)
        return JSONResponse(s.info())

    @app.websocket("/ws/stream")
    async def streamer(ws: WebSocket) -> None:
        await ws.accept()
        # Publishing takes a session (a login), not a viewer token.
        why = gate.refusal(ws, PUBLISHER_KINDS)
        if why is not None:
            await _refuse(ws, why)
            return
        try:
            reg = rp.parse_register(await _first_text(ws))
            stream_id = reg.stream_id or hub.new_id()
            rules.check_register(stream_id)
            stream, token = hub.claim(stream_id, "ws")
        except WebSocketDisconnect:
            return
        except (ValueError, HubError) as e:
            code = CLOSE_TRY_LATER if "too many" in str(e) else CLOSE_POLICY
            await _refuse(ws, str(e), code)
            return
        log.info("WebSocket streamer registered %s", stream_id)
        try:
            await ws.send_text(rp.registered(stream_id))
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data = msg.get("bytes")
                if data is not None:
                    stream.publish_opaque(data)
                    # A burst already buffered would otherwise be relayed without letting the
                    # viewers' senders run, overflowing their queues for no reason.
                    await asyncio.sleep(0)
                    continue
                # Text after registration is not part of the protocol: say so, keep streaming.
                await ws.send_text(
                    rp.error("unexpected text message after register; send binary frames")
                )
        except WebSocketDisconnect:
            pass
        finally:
            hub.publisher_gone(stream, token, grace=False)

    @app.websocket("/ws/view/{stream_id}")
    async def viewer(ws: WebSocket, stream_id: str) -> None:
        await ws.accept()
        why = gate.refusal(ws, auth.KINDS)
        if why is not None:
            await _refuse(ws, why)
            return
        ticket: WaitTicket | None = None
        try:
            sub = rp.parse_subscribe(await _first_text(ws))
            if sub.stream_id != stream_id:
                raise ValueError(
                    f"subscribe names stream {sub.stream_id!r} but the URL names {stream_id!r}"
                )
            if sub.still:
                await send_still(ws, hub, stream_id)
                return
            current = hub.get(stream_id)
            if sub.wait and (current is None or current.ended or not current.publisher_connected):
                ticket = rules.admit_wait(_address(ws), stream_id)
            stream, view = hub.add_viewer(stream_id, wait=sub.wait)
        except WebSocketDisconnect:
            if ticket is not None:
                rules.release(ticket)
            return
        except ValueError as e:
            await _refuse(ws, str(e))
            return
        except HubError as e:
            if ticket is not None:
                rules.release(ticket)
            code = CLOSE_TRY_LATER if "too many" in str(e) or "viewers" in str(e) else CLOSE_POLICY
            await _refuse(ws, str(e), code)
            return
        try:
            await ws.send_text(rp.subscribed(stream_id))
            if not stream.publisher_connected:
                await ws.send_text(rp.waiting(stream_id))
                notice = notices(stream_id) if notices is not None else None
                if notice is not None:
                    await ws.send_text(notice)
            sink = frame_sink(ws.scope)
            if sink is not None:
                hub.go_direct(stream, view, sink)
            await _serve_viewer(ws, stream, view)
        finally:
            hub.remove_viewer(stream, view)
            if ticket is not None:
                rules.release(ticket)


async def _serve_viewer(ws: WebSocket, stream: Stream, view: Viewer) -> None:
    async def send() -> None:
        while True:
            item = await view.queue.get()
            if item is None:
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_NORMAL)
                return
            payload, t_in = item
            if isinstance(payload, bytes):
                await ws.send_bytes(payload)
                if t_in:
                    stream.record_latency(time.monotonic() - t_in)
            else:
                await ws.send_text(payload)

    async def receive() -> None:
        # A viewer has nothing more to say; reading detects its departure promptly.
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return

    sender = asyncio.create_task(send(), name=f"viewer-send-{stream.id}")
    receiver = asyncio.create_task(receive(), name=f"viewer-recv-{stream.id}")
    try:
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            exc = t.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                log.warning("viewer of %s failed: %r", stream.id, exc)
    finally:
        for t in (sender, receiver):
            t.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_NORMAL)


def add_preview_routes(app: FastAPI) -> None:
    """A bare player page per stream, served from the shared web assets."""
    web = resources.files("flumph") / "web"
    # Read once here, not per request: file reads would block the event loop. The player's
    # modules: player.js and the modules it imports.
    names = ["view.html", *(p.name for p in web.iterdir() if p.name.endswith(".js"))]
    assets = {name: (web / name).read_text(encoding="utf-8") for name in names}

    @app.get("/view/{stream_id}")
    async def preview(stream_id: str) -> HTMLResponse:
        return HTMLResponse(assets["view.html"])

    @app.get("/web/{name}")
    async def asset(name: str) -> Response:
        if name not in assets:
            return Response(status_code=404)
        kind = "text/javascript" if name.endswith(".js") else "text/html"
        return Response(assets[name], media_type=kind)
