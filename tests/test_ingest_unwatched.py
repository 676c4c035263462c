"""Frames of a stream nobody watches are handed to the loop periodically, not every receive round;
a viewer joining gets the newest of them at once, and a watched stream wakes the loop every round.
Its socket is read lazily (SrtSocket.read_lazily), and frames read so carry no arrival time.

In process: SrtIngest is driven as the srt-epoll thread drives it, with a stand-in for the SRT
socket (only the attributes the handler reads); the bytes are live Matroska the ffmpeg CLI wrote.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flumph.ingest import srt_ingest
from flumph.ingest.hub import Hub
from flumph.ingest.srt_ingest import UNWATCHED_HANDOFF_S, SrtIngest
from flumph.media.matroska_reader import MatroskaReader, Packet
from tests.peers import ffmpeg_file

CLUSTER = b"\x1f\x43\xb6\x75"


class StandInSocket:
    """What SrtIngest reads of an accepted SRT socket."""

    def __init__(self, sid: int, stream_id: str) -> None:
        self.sid = sid
        self.streamid = f"publish:{stream_id}"
        self.peer = ("127.0.0.1", 40000 + sid)
        self.last_received_at = 0.0
        self.lost_before = 0
        self.closed = False
        self.read_lazily = False

    def close(self) -> None:
        self.closed = True


async def on_srt_thread(work: Callable[[], None]) -> None:
    thread = threading.Thread(target=work, name="srt-epoll-stand-in")
    thread.start()
    await asyncio.to_thread(thread.join)


def messages(data: bytes) -> list[bytes]:
    return [data[k : k + 1316] for k in range(0, len(data), 1316)]


async def publishing(stream_id: str) -> tuple[Hub, SrtIngest, StandInSocket]:
    """An ingest whose hub has claimed ``stream_id`` for a publisher that sent nothing yet."""
    hub = Hub(max_streams=4, max_viewers_per_stream=4)
    ingest = SrtIngest(hub, asyncio.get_running_loop())
    conn = StandInSocket(1, stream_id)

    def connect() -> None:
        ingest.on_connect(conn)  # type: ignore[arg-type]
        ingest.on_round_end()

    await on_srt_thread(connect)
    await asyncio.sleep(0.05)
    return hub, ingest, conn


@pytest.fixture
def clip(tmp_path: Path) -> bytes:
    # 30 frames, a keyframe every 15: two GOPs, the second starting at the second Cluster.
    return ffmpeg_file(tmp_path / "a.mkv", codec="h264", container="matroska").read_bytes()


async def test_unwatched_frames_wait_for_the_periodic_handoff(clip: bytes) -> None:
    hub, ingest, conn = await publishing("cam-a")
    stream = hub.get("cam-a")
    assert stream is not None and stream.publisher_connected

    header_end = first_frame_end(clip)

    def header() -> None:
        ingest.on_data(conn, clip[:header_end])  # type: ignore[arg-type]
        ingest.on_round_end()

    await on_srt_thread(header)
    await asyncio.sleep(0.05)
    assert stream.init is not None and stream.frames == 1, "an init segment is handed on at once"
    wakeups = ingest.handoff.wakeups

    def rounds() -> None:
        for message in messages(clip[header_end:]):
            conn.last_received_at = time.monotonic()
            ingest.on_data(conn, message)  # type: ignore[arg-type]
            ingest.on_round_end()

    started = time.monotonic()
    await on_srt_thread(rounds)
    await asyncio.sleep(0.02)
    rounds_took = time.monotonic() - started
    if rounds_took < UNWATCHED_HANDOFF_S:
        assert ingest.handoff.wakeups == wakeups and stream.frames == 1
    # Within the period, one round end (the srt-epoll thread has one at least every 100 ms)
    # hands everything on.
    await asyncio.sleep(UNWATCHED_HANDOFF_S)
    await on_srt_thread(ingest.on_round_end)
    await asyncio.sleep(0.02)
    assert stream.frames == 30


def first_frame_end(clip: bytes) -> int:
    """Where the stream header and the first frame end (the init segment needs both)."""
    start = clip.index(CLUSTER)
    return next(end for end in range(start, len(clip), 100) if frames_completed(clip[:end])[-1])


def frames_completed(clip: bytes) -> list[int]:
    """Per message of ``clip``: how many frames are complete once it has arrived."""
    reader, done, out = MatroskaReader(), 0, []
    for message in messages(clip):
        done += sum(isinstance(e, Packet) for e in reader.feed(message))
        out.append(done)
    return out


async def test_a_joining_viewer_starts_from_the_newest_frames(
    clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = Hub(max_streams=4, max_viewers_per_stream=4)
    ingest = SrtIngest(hub, asyncio.get_running_loop())
    conn = StandInSocket(1, "cam-b")
    second_gop = clip.index(CLUSTER, clip.index(CLUSTER) + 4)
    # The first GOP, and the second's first few frames.
    sent = next(
        clip[:end]
        for end in range(second_gop, len(clip), 500)
        if frames_completed(clip[:end])[-1] > 17
    )
    complete = frames_completed(sent)[-1]

    def connect_and_send() -> None:
        ingest.on_connect(conn)  # type: ignore[arg-type]
        ingest.on_round_end()
        time.sleep(0.05)  # the claim reaches the loop before any frame
        header_end = first_frame_end(sent)
        ingest.on_data(conn, sent[:header_end])  # type: ignore[arg-type]
        ingest.on_round_end()
        time.sleep(0.05)
        # Frames from here on belong to an unwatched stream: no wake-up for them.
        ingest.on_data(conn, sent[header_end:])  # type: ignore[arg-type]
        ingest.on_round_end()

    # What is waiting when the viewer joins, whatever the machine's pace: not the periodic
    # hand-off's (the test above).
    monkeypatch.setattr(srt_ingest, "UNWATCHED_HANDOFF_S", 5.0)
    await on_srt_thread(connect_and_send)
    stream = hub.get("cam-b")
    assert stream is not None and stream.init is not None
    assert stream.frames == 1, "frames of an unwatched stream wait for the periodic hand-off"
    _, viewer = hub.add_viewer("cam-b")
    # Joining took what was waiting: the viewer starts from the second GOP's keyframe and has
    # every frame read so far.
    assert stream.frames == complete
    queued = []
    while not viewer.queue.empty():
        item = viewer.queue.get_nowait()
        assert item is not None
        queued.append(item[0])
    media = [x for x in queued if isinstance(x, bytes)][1:]  # after the init segment
    assert len(media) == complete - 15 == len(stream.gop)
    assert media == stream.gop


async def test_a_watched_stream_wakes_the_loop_every_round(clip: bytes) -> None:
    hub, ingest, conn = await publishing("cam-c")
    hub.add_viewer("cam-c")
    stream = hub.get("cam-c")
    assert stream is not None
    expected = frames_completed(clip)

    def one_round(message: bytes) -> None:
        ingest.on_data(conn, message)  # type: ignore[arg-type]
        ingest.on_round_end()

    for k, message in enumerate(messages(clip)[:40]):
        await on_srt_thread(lambda m=message: one_round(m))  # type: ignore[misc]
        await asyncio.sleep(0.01)
        # Each round's frames were on the loop before the next round, period or not.
        assert stream.frames == expected[k], k


async def test_a_stream_nobody_watches_is_read_lazily_and_such_frames_carry_no_arrival_time(
    clip: bytes,
) -> None:
    hub, ingest, conn = await publishing("cam-d")
    header_end = first_frame_end(clip)
    rest = messages(clip[header_end:])
    parts = [b"".join(rest[k * len(rest) // 4 : (k + 1) * len(rest) // 4]) for k in range(4)]

    def read(data: bytes) -> None:
        conn.last_received_at = time.monotonic()
        ingest.on_data(conn, data)  # type: ignore[arg-type]
        ingest.on_round_end()

    await on_srt_thread(lambda: read(clip[:header_end]))
    await asyncio.sleep(0.02)
    assert not conn.read_lazily, "no GOP cached yet: a joiner would wait for the next read"
    await on_srt_thread(lambda: read(parts[0]))
    assert conn.read_lazily, "claimed, a GOP cached, unwatched: read once a period"
    await on_srt_thread(lambda: read(parts[1]))  # read lazily
    await asyncio.sleep(UNWATCHED_HANDOFF_S + 0.02)
    await on_srt_thread(ingest.on_round_end)
    await asyncio.sleep(0.02)
    _, viewer = hub.add_viewer("cam-d")
    joined_at = viewer.queue.qsize()
    await on_srt_thread(lambda: read(parts[2]))  # the lazy read after the join...
    assert not conn.read_lazily, "...asks for the socket to be read as data comes again"
    await asyncio.sleep(0.02)
    after_lazy = viewer.queue.qsize()
    await on_srt_thread(lambda: read(parts[3]))
    await asyncio.sleep(0.02)
    items = [viewer.queue.get_nowait() for _ in range(viewer.queue.qsize())]
    lazy_items, eager_items = items[joined_at:after_lazy], items[after_lazy:]
    assert lazy_items and eager_items
    assert all(item is not None and item[1] == 0.0 for item in lazy_items)
    assert all(item is not None and item[1] > 0 for item in eager_items)
