"""The newest picture of a running stream, for a page that wants a still and not a stream.

A viewer that subscribes with ``"still": true`` gets ``subscribed``, the ``media`` message, the
init segment and the newest keyframe's fragment from the GOP cache, then a normal close. It is
not added to the stream's viewers: it counts neither against ``max_viewers_per_stream`` nor as
demand, so a dashboard refreshing a camera's picture never keeps a camera on a metered link
streaming, and the device sends no extra byte for it (the keyframe is already here).
"""

from __future__ import annotations

import json

from starlette.websockets import WebSocket

from . import relay_protocol as rp
from .hub import Hub

CLOSE_NORMAL = 1000


def _no_picture(stream_id: str, why: str) -> str:
    return rp.error(f"no picture of {stream_id}: {why}")


async def send_still(ws: WebSocket, hub: Hub, stream_id: str) -> None:
    stream = hub.get(stream_id)
    if stream is None or not stream.publisher_connected:
        await ws.send_text(_no_picture(stream_id, "it is not streaming"))
    elif stream.init is None or not stream.gop:
        # Right after a (re)start, or a GOP too large to cache: the next keyframe brings one.
        await ws.send_text(_no_picture(stream_id, "no keyframe yet"))
    else:
        init, keyframe = stream.init, stream.gop[0]
        await ws.send_text(rp.subscribed(stream_id))
        await ws.send_text(json.dumps({"type": "media", "mime": init.mime, "still": True}))
        await ws.send_bytes(init.data)
        await ws.send_bytes(keyframe)
    await ws.close(CLOSE_NORMAL)
