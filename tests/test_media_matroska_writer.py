"""The live Matroska writer in the core writes exactly what the agent's writer wrote before the move
(golden bytes captured from device-agent/mkvlive.py), and what it writes demuxes in PyAV."""

from __future__ import annotations

import io

import av
import pytest

from flumph.media.ebml import split_documents
from flumph.media.matroska_writer import LiveMatroskaWriter, TrackInfo, header_bytes
from tests.matroska_golden import GOLDEN, cases, render


def test_output_is_byte_identical_to_the_agent_writer_before_the_move() -> None:
    assert render(TrackInfo, LiveMatroskaWriter) == GOLDEN.read_bytes()


def test_golden_documents_demux_with_every_frame_and_timestamp() -> None:
    documents = split_documents(GOLDEN.read_bytes())
    assert len(documents) == len(cases())
    for document, (codec, width, height, _, _, frames) in zip(documents, cases(), strict=True):
        with av.open(io.BytesIO(document), "r") as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
            pts = [p.pts for p in container.demux(stream) if p.size]
        assert pts == [t for t, _, _ in frames], codec


def test_each_track_gets_a_fresh_random_uid() -> None:
    track = TrackInfo("av1", 320, 180, b"\x81\x00\x0c\x00", 15.0)
    assert header_bytes(track) != header_bytes(track)


def test_unknown_codec_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'vp9' is not one of av1, hevc, h264"):
        header_bytes(TrackInfo("vp9", 320, 180, b""))
