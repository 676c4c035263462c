"""Keyframes on demand in the ingest, in process: when a joiner waits for a fresh keyframe, the
fallback to the cache, and the limits on asking a device (a viewer is an outsider; a keyframe
costs the device's metered bytes). The whole path with a broker and an agent is
test_keyframe_on_join.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from flumph.ingest import hub as hub_module
from flumph.ingest import keyframes
from flumph.ingest.hub import Hub
from flumph.ingest.keyframes import KeyframeRequests
from tests.test_ingest_hub import INIT, drain


def recorder(asked: list[str]) -> Callable[[str, str], bool]:
    """An ``ask_keyframe`` that records and says a keyframe is on its way."""

    def ask(device: str, why: str) -> bool:
        asked.append(device)
        return True

    return ask


def old_gop_stream(hub: Hub) -> None:
    stream, _ = hub.claim("cam1", "srt")
    stream.publish_init(INIT)
    stream.publish_fragment(b"k0", True)
    stream.publish_fragment(b"p1", False)
    stream.gop_started -= keyframes.JOIN_GOP_S + 1  # the cached GOP began a while ago


async def test_a_joiner_of_a_long_gop_waits_for_the_fresh_keyframe_silently() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4)
    asked: list[str] = []
    hub.ask_keyframe = recorder(asked)
    old_gop_stream(hub)
    stream, viewer = hub.add_viewer("cam1")
    assert asked == ["cam1"]
    items = drain(viewer.queue)  # type: ignore[arg-type]
    assert items[1:] == [b"INIT"]  # media message and init segment, no stale cache
    stream.publish_fragment(b"p2", False)
    stream.publish_fragment(b"k3", True)
    stream.publish_fragment(b"p4", False)
    assert drain(viewer.queue) == [b"k3", b"p4"]  # type: ignore[arg-type]
    assert viewer.dropped_total == 0  # frames before the fresh keyframe are not its losses
    # A short cached GOP is served at once, nothing asked.
    hub2 = Hub(max_streams=4, max_viewers_per_stream=4)
    hub2.ask_keyframe = recorder(asked)
    s2, _ = hub2.claim("cam2", "srt")
    s2.publish_init(INIT)
    s2.publish_fragment(b"k0", True)
    _, v2 = hub2.add_viewer("cam2")
    assert drain(v2.queue)[1:] == [b"INIT", b"k0"]  # type: ignore[arg-type]
    assert len(asked) == 1


async def test_the_cache_comes_when_no_fresh_keyframe_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "JOIN_WAIT_S", 0.05)
    hub = Hub(max_streams=4, max_viewers_per_stream=4)
    hub.ask_keyframe = lambda dev, why: True  # asked, but the publisher cannot make one
    old_gop_stream(hub)
    stream, viewer = hub.add_viewer("cam1")
    assert drain(viewer.queue)[1:] == [b"INIT"]  # type: ignore[arg-type]
    await asyncio.sleep(0.15)
    assert drain(viewer.queue) == [b"k0", b"p1"]  # type: ignore[arg-type]
    stream.publish_fragment(b"p2", False)
    assert drain(viewer.queue) == [b"p2"]  # type: ignore[arg-type]


async def test_a_refused_request_and_a_websocket_stream_get_the_cache_at_once() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4)
    hub.ask_keyframe = lambda dev, why: False  # over the device's limit
    old_gop_stream(hub)
    _, viewer = hub.add_viewer("cam1")
    items = drain(viewer.queue)  # type: ignore[arg-type]
    assert items[1:] == [b"INIT", b"k0", b"p1"]
    assert json.loads(str(items[0]))["type"] == "media"
    # A WebSocket streamer's stream is opaque: nobody to ask.
    asked: list[str] = []
    hub.ask_keyframe = recorder(asked)
    ws, _ = hub.claim("relay1", "ws")
    ws.publish_init(INIT)
    ws.publish_fragment(b"k0", True)
    ws.gop_started -= keyframes.JOIN_GOP_S + 1
    hub.add_viewer("relay1")
    assert asked == []


def test_requests_are_limited_per_device() -> None:
    now = [1000.0]
    sent: list[tuple[str, str]] = []
    req = KeyframeRequests(lambda dev, cid: sent.append((dev, cid)), clock=lambda: now[0])
    assert req.ask("cam1", "join")
    assert req.ask("cam1", "join")  # within MIN_INTERVAL_S: the one on its way is shared
    assert len(sent) == 1
    assert not req.ask("Not-A-Device", "join") and not req.ask("../x", "join")
    for _ in range(keyframes.MAX_PER_HOUR * 2):
        now[0] += keyframes.MIN_INTERVAL_S
        req.ask("cam1", "join")
    assert len(sent) == keyframes.MAX_PER_HOUR
    assert req.refused > 0
    assert len({cid for _, cid in sent}) == len(sent)  # every command has its own id
    now[0] += 3601
    assert req.ask("cam1", "join") and len(sent) == keyframes.MAX_PER_HOUR + 1
    # A publisher that cannot be reached is not an error for the viewer.
    failing = KeyframeRequests(lambda dev, cid: (_ for _ in ()).throw(OSError("down")))
    assert not failing.ask("cam2", "join")


async def test_a_viewer_that_falls_behind_asks_for_the_keyframe_it_skips_to() -> None:
    """With a keyframe every 30 s a slow viewer would freeze until the next one: its skip asks the
    device for one (once per skip; KeyframeRequests limits the rate per device)."""
    hub = Hub(max_streams=4, max_viewers_per_stream=4, viewer_queue_frames=8)
    asked: list[str] = []
    hub.ask_keyframe = recorder(asked)
    stream, _ = hub.claim("cam1", "srt")
    stream.publish_init(INIT)
    stream.publish_fragment(b"k0", True)
    _, slow = hub.add_viewer("cam1")
    assert asked == []  # a short GOP: nothing asked on joining
    for i in range(1, 30):
        stream.publish_fragment(b"p%d" % i, False)
    assert slow.skips == 1 and slow.waiting_for_keyframe
    assert asked == ["cam1"]
    stream.publish_fragment(b"k30", True)
    items = [x for x in drain(slow.queue) if isinstance(x, bytes)]  # type: ignore[arg-type]
    assert items[-1] == b"k30"
