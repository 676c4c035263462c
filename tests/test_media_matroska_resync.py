"""After SRT gives up messages (too late), the live Matroska reader goes on from the next Cluster
(a keyframe, in the agent's writer) instead of reading the next bytes as the rest of a half-read
frame. Every possible lost message of a real writer stream is tried."""

from __future__ import annotations

import random

from flumph.media.matroska_reader import MatroskaReader, Packet
from flumph.media.matroska_writer import LiveMatroskaWriter, TrackInfo
from flumph.srt.library import MSGNO_MAX, messages_missing

MESSAGE = 1316  # the agent's SRT payload size


def writer_stream(frames: int = 60, gop: int = 10) -> tuple[bytes, list[tuple[int, int, bool]]]:
    """A writer's stream and, per frame, (start offset, end offset, keyframe)."""
    rng = random.Random(7)
    writer = LiveMatroskaWriter(TrackInfo("h264", 64, 64, b"\x01\x42\x00\x0a", 15.0))
    data = bytearray()
    spans = []
    for i in range(frames):
        key = i % gop == 0
        size = rng.randrange(2000, 5000) if key else rng.randrange(100, 1500)
        payload = (size - 4).to_bytes(4, "big") + rng.randbytes(size - 4)
        start = len(data)
        data += writer.write(i * 66, key, payload)
        spans.append((start, len(data), key))
    return bytes(data), spans


def read_with_loss(data: bytes, lost: int) -> list[Packet]:
    reader = MatroskaReader()
    packets: list[Packet] = []
    chunks = [data[i : i + MESSAGE] for i in range(0, len(data), MESSAGE)]
    for n, chunk in enumerate(chunks):
        if n == lost:
            continue
        if n == lost + 1:
            reader.resync()
        packets += [e for e in reader.feed(chunk) if isinstance(e, Packet)]
    return packets


def test_every_lost_message_resumes_at_the_next_keyframe_with_nothing_corrupt() -> None:
    data, spans = writer_stream()
    messages = (len(data) + MESSAGE - 1) // MESSAGE
    whole = [p.timestamp for p in read_with_loss(data, -2)]
    assert len(whole) == len(spans)
    for lost in range(1, messages - 1):
        lost_start, lost_end = lost * MESSAGE, (lost + 1) * MESSAGE
        before = [i for i, (_, end, _) in enumerate(spans) if end <= lost_start]
        after = [i for i, (start, _, key) in enumerate(spans) if key and start >= lost_end]
        expected = before + (list(range(after[0], len(spans))) if after else [])
        got = read_with_loss(data, lost)
        assert [p.timestamp for p in got] == [whole[i] for i in expected], lost
        if after:
            assert got[len(before)].keyframe
        for p in got:  # every frame that comes out is the frame that was written
            i = whole.index(p.timestamp)
            _, end, _ = spans[i]
            assert bytes(p.payload) == data[end - len(p.payload) : end]


def test_a_new_document_after_the_loss_is_read_too() -> None:
    """The agent reconnected or reopened its encoder: the next thing is an EBML header."""
    first, _ = writer_stream(frames=12)
    second, _ = writer_stream(frames=5)
    reader = MatroskaReader()
    reader.feed(first[: len(first) - 500])
    reader.resync()
    events = reader.feed(first[-100:] + second)  # the tail of a frame, then the new document
    assert sum(isinstance(e, Packet) for e in events) == 5


def test_message_numbers_count_what_never_arrived() -> None:
    assert messages_missing(0, 1) == 0  # the first message
    assert messages_missing(5, 6) == 0
    assert messages_missing(5, 9) == 3
    assert messages_missing(MSGNO_MAX, 1) == 0  # the number wraps
    assert messages_missing(MSGNO_MAX - 1, 2) == 2
    assert messages_missing(7, 0) == 0  # libsrt gave no number
