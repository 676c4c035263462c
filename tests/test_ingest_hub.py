"""Fan-out rules of the hub, in process: bounded queues, skip to keyframe, GOP cache, grace."""

from __future__ import annotations

import asyncio
import json

import pytest

from flumph.ingest.hub import Hub, HubError
from flumph.ingest.stream import MediaInit

INIT = MediaInit('video/mp4; codecs="av01.0.04M.08"', b"INIT", "av1", 320, 240)


def drain(q: asyncio.Queue[object]) -> list[object]:
    out = []
    while not q.empty():
        item = q.get_nowait()
        out.append(item if item is None else item[0])  # type: ignore[index]
    return out


async def test_late_joiner_gets_init_and_gop_at_once() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4)
    stream, _ = hub.claim("cam1", "srt")
    stream.publish_init(INIT)
    stream.publish_fragment(b"k0", True)
    stream.publish_fragment(b"p1", False)
    stream.publish_fragment(b"k2", True)
    stream.publish_fragment(b"p3", False)
    _, viewer = hub.add_viewer("cam1")
    items = drain(viewer.queue)  # type: ignore[arg-type]
    assert json.loads(str(items[0])) == {"type": "media", "mime": INIT.mime}
    assert items[1:] == [b"INIT", b"k2", b"p3"]


async def test_slow_viewer_skips_to_next_keyframe_and_is_told() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4, viewer_queue_frames=8)
    stream, _ = hub.claim("cam1", "srt")
    stream.publish_init(INIT)
    stream.publish_fragment(b"k0", True)
    _, slow = hub.add_viewer("cam1")
    _, fast = hub.add_viewer("cam1")
    sent = [b"k0"]
    for i in range(1, 28):
        frame = f"f{i}".encode()
        stream.publish_fragment(frame, i % 20 == 0)
        sent.append(frame)
        drain_fast = drain(fast.queue)  # type: ignore[arg-type]
        assert b"f%d" % i in drain_fast
    # The slow viewer never read: its queue overflowed, it dropped what it held, and it resumed
    # exactly at the keyframe f20, preceded by a notice of how many frames it lost.
    items = drain(slow.queue)  # type: ignore[arg-type]
    texts = [json.loads(str(x)) for x in items if isinstance(x, str)]
    skipped = [t for t in texts if t["type"] == "skipped"]
    assert skipped and skipped[0]["dropped"] > 0
    frames = [x for x in items if isinstance(x, bytes)]
    assert b"f20" in frames
    after = frames[frames.index(b"f20") :]
    assert after == [f"f{i}".encode() for i in range(20, 20 + len(after))]
    assert slow.dropped_total == skipped[0]["dropped"]
    assert fast.dropped_total == 0


async def test_opaque_slow_viewer_drops_and_continues() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4, viewer_queue_frames=8)
    stream, _ = hub.claim("ws1", "ws")
    _, slow = hub.add_viewer("ws1")
    for i in range(30):
        stream.publish_opaque(b"%d" % i)
    items = drain(slow.queue)  # type: ignore[arg-type]
    assert any(isinstance(x, str) and json.loads(x)["type"] == "skipped" for x in items)
    assert items[-1] == b"29"


async def test_busy_and_limits() -> None:
    hub = Hub(max_streams=1, max_viewers_per_stream=1)
    hub.claim("a", "srt")
    with pytest.raises(HubError, match="busy"):
        hub.claim("a", "srt")
    with pytest.raises(HubError, match="MAX_STREAMS"):
        hub.claim("b", "ws")
    hub.add_viewer("a")
    with pytest.raises(HubError, match="MAX_VIEWERS_PER_STREAM"):
        hub.add_viewer("a")
    with pytest.raises(HubError, match="stream not found"):
        hub.add_viewer("zzz")


async def test_publisher_reconnect_within_grace_keeps_viewers() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4, reconnect_grace_s=0.2)
    stream, token = hub.claim("cam1", "srt")
    stream.publish_init(INIT)
    _, viewer = hub.add_viewer("cam1")
    hub.publisher_gone(stream, token, grace=True)
    stream2, token2 = hub.claim("cam1", "srt")
    hub.resumed(stream2)
    assert stream2 is stream
    await asyncio.sleep(0.4)
    assert not stream.ended
    # Same init again: not resent; a different one is.
    stream.publish_init(INIT)
    stream.publish_init(MediaInit('video/mp4; codecs="avc1.64001e"', b"INIT2", "h264", 640, 360))
    items = drain(viewer.queue)  # type: ignore[arg-type]
    assert items.count(b"INIT") == 1 and items.count(b"INIT2") == 1
    hub.publisher_gone(stream2, token2, grace=True)
    await asyncio.sleep(0.4)
    assert stream.ended
    tail = drain(viewer.queue)
    assert json.loads(str(tail[-2]))["type"] == "ended" and tail[-1] is None
    assert hub.get("cam1") is None


async def test_stale_publisher_session_cannot_end_new_one() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4, reconnect_grace_s=5)
    stream, old = hub.claim("cam1", "srt")
    hub.add_viewer("cam1")
    hub.publisher_gone(stream, old, grace=True)
    hub.claim("cam1", "srt")
    hub.publisher_gone(stream, old, grace=True)  # late duplicate from the old session
    assert stream.publisher_connected and not stream.ended
