import io
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flumph.media.sniff import detect_container


def _muxed(container: str, frames: int = 5) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 30)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), index * 20, np.uint8), format="rgb24"
            ).reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_heads():
    return {"matroska": _muxed("matroska"), "mpegts": _muxed("mpegts")}


@pytest.mark.parametrize("container", ["matroska", "mpegts"])
def test_real_stream_heads(real_heads, container):
    data = real_heads[container]
    assert detect_container(data) == container
    assert detect_container(data[:400]) == container


def test_matroska_after_four_bytes_mpegts_after_one_packet(real_heads):
    mkv, ts = real_heads["matroska"], real_heads["mpegts"]
    assert detect_container(mkv[:1]) is None
    assert detect_container(mkv[:3]) is None
    assert detect_container(mkv[:4]) == "matroska"
    assert detect_container(ts[:188]) is None
    assert detect_container(ts[:189]) == "mpegts"
    assert detect_container(ts[:377]) == "mpegts"


def test_empty_needs_more():
    assert detect_container(b"") is None


@pytest.mark.parametrize(
    ("head", "shown"),
    [
        (b"RIFF\x00\x00\x00\x00WEBP", "52494646000000005745425"),
        (b"\x00\x00\x00\x18ftypmp42", "0000001866747970"),
        (b"\x1a\x45\xdf\x00", "1a45df00"),
        (b"\x47" + bytes(187) + b"\x00", "47000000"),
        (b"\x47" + bytes(187) + b"\x47" + bytes(187) + b"\x48", "47000000"),
    ],
)
def test_other_formats_are_rejected_with_their_first_bytes(head, shown):
    with pytest.raises(ValueError) as caught:
        detect_container(head)
    assert "neither Matroska nor MPEG-TS" in str(caught.value)
    assert shown in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_only_value_errors(head):
    try:
        result = detect_container(head)
    except ValueError as error:
        assert "neither Matroska nor MPEG-TS" in str(error)
        return
    assert result in (None, "matroska", "mpegts")
