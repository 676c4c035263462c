"""MPEG-TS program changes on one SRT connection (issue 13, attack 5): the ingest starts a new
fMP4 init segment with the right codec string, and a viewer decodes both. Debian's ffmpeg
writes the clips; our SRT caller sends them as one live connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import Ingest
from tests.peers import decode_fmp4, ffmpeg_file, watch
from tests.test_ingest_srt import _replay, _slices
from tests.test_media_tsprogram import bump_pmt_version


async def _switch(ing: Ingest, stream_id: str, data: bytes) -> list[tuple[str, list[bytes]]]:
    sender = asyncio.create_task(
        asyncio.to_thread(_replay, ing.srt_port, stream_id, _slices(data, 1316), 40.0)
    )
    await asyncio.to_thread(ing.wait_stream, stream_id)
    got = await watch(ing.ws, stream_id, seconds=60)
    await sender
    return got.segments()


async def test_h264_then_h265_on_one_connection(shared_ingest: Ingest, tmp_path: Path) -> None:
    a = ffmpeg_file(tmp_path / "a.ts", codec="h264", container="mpegts", size="320x240")
    b = ffmpeg_file(tmp_path / "b.ts", codec="hevc", container="mpegts", size="256x144")
    segs = await _switch(shared_ingest, "ts-switch", a.read_bytes() + b.read_bytes())
    assert [m.split('"')[1][:4] for m, _ in segs] == ["avc1", "hvc1"], [m for m, _ in segs]
    first, second = decode_fmp4(segs[0][1]), decode_fmp4(segs[1][1])
    assert (first.codec, first.width, first.height) == ("h264", 320, 240)
    assert (second.codec, second.width, second.height) == ("hevc", 256, 144)
    assert first.frames >= 25 and second.frames >= 25, (first, second)


async def test_a_new_pmt_version_starts_a_new_segment(
    shared_ingest: Ingest, tmp_path: Path
) -> None:
    """Same codec, new size, and the encoder says so with a new PMT version: a new init segment
    with the new size (before: frames of the new size under the old init)."""
    a = ffmpeg_file(tmp_path / "c.ts", codec="h264", container="mpegts", size="320x240")
    b = ffmpeg_file(tmp_path / "d.ts", codec="h264", container="mpegts", size="256x144")
    data = a.read_bytes() + bump_pmt_version(b.read_bytes())
    segs = await _switch(shared_ingest, "ts-version", data)
    assert len(segs) == 2, [m for m, _ in segs]
    second = decode_fmp4(segs[1][1])
    assert (second.codec, second.width, second.height) == ("h264", 256, 144)
    assert second.frames >= 25
