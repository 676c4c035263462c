"""One serialisation per fragment: WebSocket frames built once and written straight to each
viewer's transport.

Starlette's ``send_bytes`` goes through ASGI to uvicorn, whose websockets protocol frames the
payload again for every viewer. Here uvicorn runs :class:`DirectFrameProtocol` (its own
``websockets-sansio`` protocol, one hook added): once a viewer's handshake is done it puts a
:class:`TransportSink` into the ASGI scope's ``extensions``, through which the hub writes frames it
serialised once (:mod:`.wsframe`). The sink is offered only while no extension (permessage-deflate)
is negotiated, since those frames would differ per connection; a server without the hook (tests'
in-process clients, another ASGI server) leaves the viewer on the ASGI path. Back-pressure is the
transport's own write buffer: :meth:`TransportSink.buffered` feeds the hub's skip-to-keyframe
policy.
"""

from __future__ import annotations

from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

SCOPE_KEY = "flumph.frame_sink"


class TransportSink:
    """Writes whole pre-built frames to one viewer's connection while it is open."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    @property
    def open(self) -> bool:
        p = self._protocol
        return (
            not p.close_sent
            and not p.disconnected
            and p.conn.state is State.OPEN
            and not p.transport.is_closing()
        )

    def write(self, frame: bytes) -> bool:
        """Write ``frame``; False (nothing written) once the connection is closing."""
        if not self.open:
            return False
        self._protocol.transport.write(frame)
        return True

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        return self._protocol.transport.get_write_buffer_size()


# What TransportSink reads of uvicorn's protocol (uvicorn 0.36-0.55): a uvicorn that renamed any
# of them leaves every viewer on the ASGI path rather than failing mid-fan-out.
_PROTOCOL_STATE = ("close_sent", "disconnected", "conn", "transport")


class DirectFrameProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websockets protocol that offers a :class:`TransportSink` in the scope."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = cast(dict[str, Any] | None, getattr(self, "scope", None))
        if scope is None or not all(hasattr(self, name) for name in _PROTOCOL_STATE):
            return
        if self.conn.extensions:
            return
        extensions = scope.setdefault("extensions", {})
        extensions[SCOPE_KEY] = TransportSink(self)


def frame_sink(scope: dict[str, Any] | Any) -> TransportSink | None:
    """The sink uvicorn offered for this WebSocket, if any."""
    extensions = scope.get("extensions") or {}
    sink = extensions.get(SCOPE_KEY)
    return sink if isinstance(sink, TransportSink) else None
