"""MPEG-TS that does not start on a packet boundary: found by the pure sniffer, skipped by the
demuxer's feed, demuxed from its first whole packet (no network here; the SRT path is in
tests/test_ingest_resync.py)."""

from __future__ import annotations

import io
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flumph.ingest.demux import ByteFeed, DemuxEnd, DemuxEvent, DemuxFragment, LiveDemuxer
from flumph.media.sniff import (
    DECISIVE_BYTES,
    MAX_SKIP,
    TS_PACKET_SIZE,
    detect_container,
    locate_stream,
)

FRAMES = 30


def _ts_clip(frames: int = FRAMES) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "g": "10"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 30)
        rng = np.random.default_rng(7)
        for index in range(frames):
            picture = rng.integers(0, 255, (48, 64, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


_CLIP = _ts_clip(12)  # for the fuzz test: hypothesis does not mix with function fixtures


@pytest.fixture(scope="module")
def ts() -> bytes:
    data = _ts_clip()
    assert len(data) % TS_PACKET_SIZE == 0 and len(data) > 3 * DECISIVE_BYTES
    return data


def test_a_stream_on_a_boundary_starts_at_zero(ts: bytes) -> None:
    assert locate_stream(ts) == ("mpegts", 0)
    assert locate_stream(ts[:189]) == ("mpegts", 0)  # as detect_container: after one packet
    assert locate_stream(ts[:188]) is None
    assert locate_stream(b"\x1a\x45\xdf\xa3\x01") == ("matroska", 0)
    assert locate_stream(b"\x1a\x45") is None


@pytest.mark.parametrize("cut", [1, 5, 87, 100, 187, 188 + 40])
def test_mid_packet_start_is_found_at_the_next_packet(ts: bytes, cut: int) -> None:
    head = ts[cut:]
    with pytest.raises(ValueError):
        detect_container(head)  # the strict rule refuses it...
    skip = -cut % TS_PACKET_SIZE
    assert locate_stream(head) == ("mpegts", skip)  # ...the resync rule starts at the next one
    # Decided as soon as the fifth sync byte of the run has arrived, not before.
    proof = skip + 4 * TS_PACKET_SIZE + 1
    assert locate_stream(head[: proof - 1]) is None
    assert locate_stream(head[:proof]) == ("mpegts", skip)


def test_junk_before_the_stream_is_skipped_up_to_one_srt_payload(ts: bytes) -> None:
    junk = bytes(range(1, 71)) * 18  # 1260 bytes, no 0x47 in it
    assert b"\x47" not in junk
    assert locate_stream(junk + ts) == ("mpegts", len(junk))
    too_much = bytes(MAX_SKIP + 1)
    with pytest.raises(ValueError, match="neither Matroska nor MPEG-TS"):
        locate_stream(too_much + ts)


def test_random_bytes_are_refused_once_decidable() -> None:
    noise = np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes()
    assert locate_stream(noise[:MAX_SKIP]) is None  # a stream may still begin further on
    with pytest.raises(ValueError, match="neither Matroska nor MPEG-TS"):
        locate_stream(noise)


def test_a_short_stream_that_ended_is_refused_by_name(ts: bytes) -> None:
    with pytest.raises(ValueError, match="ended after 3 bytes"):
        locate_stream(b"\x1a\x45\xdf", final=True)
    with pytest.raises(ValueError, match="ended after 300 bytes without"):
        locate_stream(ts[100:400], final=True)
    assert locate_stream(ts[100:1200], final=True) == ("mpegts", 88)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2500), st.booleans())
def test_fuzz_decides_with_enough_bytes_and_raises_only_value_errors(
    head: bytes, final: bool
) -> None:
    try:
        found = locate_stream(head, final=final)
    except ValueError:
        return
    if found is None:
        assert not final and len(head) < DECISIVE_BYTES
    else:
        assert found[0] in ("matroska", "mpegts") and 0 <= found[1] <= MAX_SKIP


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=MAX_SKIP).filter(lambda b: b"\x47" not in b and not b.startswith(b"\x1a"))
)
def test_fuzz_any_prefix_without_sync_bytes_is_skipped(prefix: bytes) -> None:
    assert locate_stream(prefix + _CLIP) == ("mpegts", len(prefix) if prefix else 0)


def test_byte_feed_skip_discards_across_chunks() -> None:
    feed = ByteFeed()
    for chunk in (b"abc", b"defg", b"hij"):
        feed.feed(chunk)
    assert feed.peek(5) == b"abcde"
    assert feed.skip(5) == 5
    assert feed.peek(3) == b"fgh"
    assert feed.read(100) == b"fg"
    feed.close()
    assert feed.skip(10) == 3  # only what there is
    assert feed.read(10) == b""


def test_demuxer_resynchronises_and_delivers_every_frame(ts: bytes) -> None:
    feed = ByteFeed()
    events: list[DemuxEvent] = []
    done = threading.Event()

    def emit(ev: DemuxEvent) -> None:
        events.append(ev)
        if isinstance(ev, DemuxEnd):
            done.set()

    demuxer = LiveDemuxer("cut", feed, emit)
    demuxer.start()
    cut = ts[100:]
    for i in range(0, len(cut), 1316):  # as SRT messages arrive
        feed.feed(cut[i : i + 1316])
    feed.close()
    assert done.wait(30)
    end = events[-1]
    assert isinstance(end, DemuxEnd) and end.error is None, end
    frames = [e for e in events if isinstance(e, DemuxFragment)]
    assert len(frames) == FRAMES  # the cut fell in the first (service) packet: no frame lost
