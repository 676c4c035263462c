"""Direct viewers: WebSocket frames built once per fragment and written to the transport, with the
transport's write buffer driving skip-to-keyframe. The frames are checked against the websockets
library's own serialiser; the policy runs against a recording sink standing in for a transport
(the real one is exercised end to end by test_ingest_relay and test_ingest_srt)."""

from __future__ import annotations

import json

import pytest
from websockets.frames import Frame, Opcode

from flumph.ingest.hub import Hub
from flumph.ingest.stream import DIRECT_MIN_BUFFER_BYTES, MediaInit
from flumph.ingest.wsframe import binary_frame, text_frame

INIT = MediaInit('video/mp4; codecs="av01.0.04M.08"', b"INIT", "av1", 320, 240)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_frames_equal_the_websockets_librarys(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert binary_frame(payload) == expected
    assert binary_frame(memoryview(payload)) == expected
    text = "é" * size
    assert text_frame(text) == Frame(Opcode.TEXT, text.encode()).serialize(
        mask=False, extensions=[]
    )


class Sink:
    """Records frames; ``backlog`` is what the transport would report as unsent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.backlog = 0

    def write(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def buffered(self) -> int:
        return self.backlog

    def items(self) -> list[object]:
        out: list[object] = []
        for f in self.frames:
            payload = f[2:] if f[1] < 126 else f[4:] if f[1] == 126 else f[10:]
            out.append(json.loads(payload) if f[0] == 0x81 else payload)
        return out


async def test_direct_viewer_gets_greeting_order_gop_and_shared_frames() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4)
    stream, _ = hub.claim("cam1", "srt")
    stream.publish_init(INIT)
    stream.publish_fragment(b"k0", True)
    stream.publish_fragment(b"p1", False)
    _, a = hub.add_viewer("cam1")
    _, b = hub.add_viewer("cam1")
    sink_a, sink_b = Sink(), Sink()
    hub.go_direct(stream, a, sink_a)  # what was queued at join goes first, in order
    hub.go_direct(stream, b, sink_b)
    assert a.queue.empty() and b.queue.empty()
    stream.publish_fragment(b"p2", False, t_in=1.0)
    assert sink_a.items() == [{"type": "media", "mime": INIT.mime}, b"INIT", b"k0", b"p1", b"p2"]
    assert sink_a.frames[-1] is sink_b.frames[-1]  # one serialisation for both viewers
    assert len(stream.added_latency) == 1
    hub.end(stream)
    assert sink_a.items()[-1] == {"type": "ended", "stream_id": "cam1"}
    assert a.queue.get_nowait() is None  # the sender closes the socket


async def test_direct_viewer_over_its_buffer_skips_to_the_next_keyframe_and_is_told() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4, viewer_queue_frames=8)
    stream, _ = hub.claim("cam1", "srt")
    stream.publish_init(INIT)
    stream.publish_fragment(b"k0", True)
    _, slow = hub.add_viewer("cam1")
    _, fast = hub.add_viewer("cam1")
    slow_sink, fast_sink = Sink(), Sink()
    hub.go_direct(stream, slow, slow_sink)
    hub.go_direct(stream, fast, fast_sink)
    assert slow.max_buffered_bytes >= DIRECT_MIN_BUFFER_BYTES
    slow_sink.backlog = slow.max_buffered_bytes + 1  # its reader stopped reading
    for i in range(1, 10):
        stream.publish_fragment(b"f%d" % i, False)
    slow_sink.backlog = 0  # it caught up: still waits for a keyframe
    stream.publish_fragment(b"f10", False)
    stream.publish_fragment(b"k11", True)
    stream.publish_fragment(b"f12", False)
    assert slow_sink.items()[-3:] == [{"type": "skipped", "dropped": 10}, b"k11", b"f12"]
    assert slow.dropped_total == 10 and slow.skips == 1
    assert fast_sink.items()[-3:] == [b"f10", b"k11", b"f12"] and fast.dropped_total == 0
    assert stream.info()["viewer_frames_dropped"] == 10


async def test_direct_viewer_of_an_opaque_stream_resumes_with_the_next_frame() -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4)
    stream, _ = hub.claim("ws1", "ws")
    _, viewer = hub.add_viewer("ws1")
    sink = Sink()
    hub.go_direct(stream, viewer, sink)
    sink.backlog = viewer.max_buffered_bytes + 1
    stream.publish_opaque(b"0")
    stream.publish_opaque(b"1")
    sink.backlog = 0
    stream.publish_opaque(b"2")
    assert sink.items() == [{"type": "skipped", "dropped": 2}, b"2"]
