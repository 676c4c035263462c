"""Fuzzing the live Matroska reader: whatever bytes arrive, in whatever chunks, it reads them or
raises ValueError, the same way for every chunking, holding no more than its limit.

Inputs that once broke it live in tests/fuzz/matroska/ and are replayed first. A longer run:
``FLUMPH_FUZZ_EXAMPLES=20000 pytest tests/test_media_matroska_fuzz.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flumph.media.ebml import SEGMENT_ID, element
from flumph.media.matroska_reader import (
    Event,
    MatroskaError,
    MatroskaReader,
    Packet,
    Unsupported,
)
from flumph.media.matroska_writer import LiveMatroskaWriter, TrackInfo
from tests.matroska_golden import GOLDEN

CORPUS = Path(__file__).resolve().parent / "fuzz" / "matroska"
EXAMPLES = int(os.environ.get("FLUMPH_FUZZ_EXAMPLES", "300"))
LIMIT = 4096  # a small element limit, so the fuzzer reaches it

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(data: bytes, sizes: list[int]) -> tuple[list[object], str | None]:
    """The events (payloads as bytes) and the error, if any, for ``data`` fed in chunks."""
    reader = MatroskaReader(max_element_bytes=LIMIT)
    events: list[object] = []

    def collect(new: list[Event]) -> bool:
        for e in new:
            if isinstance(e, Packet):
                assert len(e.payload) <= LIMIT
                events.append((e.track, e.timestamp, e.keyframe, bytes(e.payload)))
            elif isinstance(e, Unsupported):
                # Not comparable across chunkings: it carries the rest of its chunk.
                events.append(("unsupported", e.reason))
                return False
            else:
                events.append(e)
        return True

    pos = k = 0
    while pos < len(data):
        size = sizes[k % len(sizes)]
        chunk, pos, k = data[pos : pos + size], pos + size, k + 1
        try:
            if not collect(reader.feed(chunk)):
                break
        except MatroskaError as e:
            collect(e.events)
            return events, str(e)
    return events, None


def check(data: bytes, sizes: list[int]) -> None:
    """Only ValueError escapes (outcome lets anything else through), and the chunking changes
    nothing: the same events before the same error."""
    whole = outcome(data, [max(1, len(data))])
    assert outcome(data, sizes) == whole
    assert outcome(data, [1]) == whole


def sample_stream() -> bytes:
    writer = LiveMatroskaWriter(TrackInfo("hevc", 64, 48, b"\x01" * 23, 30.0))
    frames = [(t * 33, t % 4 == 0, bytes([t]) * (t * 7 % 50)) for t in range(12)]
    return b"".join(writer.write(*f) for f in frames)


def sized_segment(live: bytes) -> bytes:
    """The same stream in a sized Segment (as FFmpeg writes to a seekable file), then more bytes."""
    at = live.index(b"\x18\x53\x80\x67")
    body = live[at + 12 :]  # after the Segment's ID and its 8-byte unknown size
    return live[:at] + element(SEGMENT_ID, body) + live[-40:]


SEEDS = [sample_stream(), GOLDEN.read_bytes()[:600], sized_segment(sample_stream())]


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.bin"))


def test_the_committed_corpus_is_not_empty() -> None:
    assert corpus_files(), f"no inputs in {CORPUS}"


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_committed_inputs_read_or_raise_value_error(path: Path) -> None:
    data = path.read_bytes()
    check(data, [3, 1, 64])


@fuzz
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1, max_size=8))
def test_random_bytes(data: bytes, sizes: list[int]) -> None:
    check(data, sizes)


@fuzz
@given(st.binary(max_size=200), st.lists(st.integers(1, 700), min_size=1, max_size=8))
def test_random_bytes_after_a_valid_header(tail: bytes, sizes: list[int]) -> None:
    head = SEEDS[0][: SEEDS[0].index(b"\x1f\x43\xb6\x75")]
    check(head + tail, sizes)


@fuzz
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 2)), max_size=6),
    st.integers(0, 10**6),
    st.lists(st.integers(1, 700), min_size=1, max_size=8),
)
def test_mutated_streams(
    seed: bytes, edits: list[tuple[int, int, int]], cut: int, sizes: list[int]
) -> None:
    """A valid stream with bytes replaced, inserted or deleted, and maybe truncated."""
    data = bytearray(seed)
    for where, value, kind in edits:
        i = where % (len(data) + 1)
        if kind == 0 and i < len(data):
            data[i] = value
        elif kind == 1:
            data.insert(i, value)
        elif i < len(data):
            del data[i]
    check(bytes(data[: len(data) - cut % 50]), sizes)


@fuzz
@given(
    st.lists(
        st.tuples(st.integers(0, 40_000), st.booleans(), st.binary(min_size=1, max_size=300)),
        min_size=1,
        max_size=20,
    ),
    st.lists(st.integers(1, 700), min_size=1, max_size=8),
)
def test_writer_output_reads_back_exactly(
    frames: list[tuple[int, bool, bytes]], sizes: list[int]
) -> None:
    frames.sort(key=lambda f: f[0])
    frames[0] = (frames[0][0], True, frames[0][2])
    writer = LiveMatroskaWriter(TrackInfo("h264", 64, 48, b"\x01\x42\x00\x0a", None))
    # Length-prefixed payloads go into the block unchanged (a prefix 00 00 01 or 00 00 00 01
    # would read as an Annex B start code: the writer converts those).
    sent = [(t, k, (len(p) | 1 << 24).to_bytes(4, "big") + p) for t, k, p in frames]
    data = b"".join(writer.write(*f) for f in sent)
    events, error = outcome(data, sizes)
    assert error is None
    assert [e for e in events if isinstance(e, tuple)] == [(1, t, k, p) for t, k, p in sent]
