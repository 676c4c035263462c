"""fMP4 boxes: structure read back field by field, and decoded by Debian's ffmpeg 5.1 CLI."""

import re
import subprocess
from typing import Any

import pytest

from flumph.media.bitstream import build_hvcc
from flumph.media.fmp4 import (
    FRAGMENT_HEADER_BYTES,
    NON_SYNC_SAMPLE_FLAGS,
    SYNC_SAMPLE_FLAGS,
    Sample,
    VideoTrack,
    fragment_header,
    init_segment,
    media_fragment,
)
from flumph.media.repackager import Repackager
from tests.test_media_bitstream import (
    SVT_AV1C_BY_FFMPEG,
    X264_AVCC_BY_FFMPEG,
    X265_PPS,
    X265_SPS,
    X265_VPS,
)
from tests.test_media_clips import Segment, demux, iter_boxes, mux_clip

HVCC = build_hvcc([X265_VPS], [X265_SPS], [X265_PPS])


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    return list(iter_boxes(data))


def children(payload: bytes, skip: int = 0) -> dict[bytes, bytes]:
    found = boxes(payload[skip:])
    assert len({kind for kind, _ in found}) == len(found), "duplicate child boxes"
    return dict(found)


def u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "big")


@pytest.mark.parametrize(
    ("codec", "config", "entry", "config_box", "brand"),
    [
        ("av1", SVT_AV1C_BY_FFMPEG, b"av01", b"av1C", b"av01"),
        ("hevc", HVCC, b"hvc1", b"hvcC", b"hvc1"),
        ("h264", X264_AVCC_BY_FFMPEG, b"avc1", b"avcC", b"avc1"),
    ],
)
def test_init_segment_fields(codec, config, entry, config_box, brand):
    track = VideoTrack(codec, 320, 240, 90000, config)
    top = boxes(init_segment(track))
    assert [kind for kind, _ in top] == [b"ftyp", b"moov"]
    ftyp = top[0][1]
    assert ftyp[:4] == b"iso5"
    assert {ftyp[i : i + 4] for i in range(8, len(ftyp), 4)} == {b"iso5", b"iso6", b"mp41", brand}

    moov = children(top[1][1])
    assert list(moov) == [b"mvhd", b"trak", b"mvex"]
    assert u32(moov[b"mvhd"], 12) == 1000  # movie timescale
    assert u32(moov[b"mvhd"], 96) == 2  # next_track_ID
    trak = children(moov[b"trak"])
    tkhd = trak[b"tkhd"]
    assert tkhd[1:4] == b"\x00\x00\x03"  # enabled, in movie
    assert u32(tkhd, 12) == 1  # track_ID
    assert (u32(tkhd, 76), u32(tkhd, 80)) == (320 << 16, 240 << 16)
    mdia = children(trak[b"mdia"])
    assert u32(mdia[b"mdhd"], 12) == 90000
    assert mdia[b"hdlr"][8:12] == b"vide"
    minf = children(mdia[b"minf"])
    assert list(minf) == [b"vmhd", b"dinf", b"stbl"]
    stbl = children(minf[b"stbl"])
    assert list(stbl) == [b"stsd", b"stts", b"stsc", b"stsz", b"stco"]
    assert stbl[b"stts"] == stbl[b"stsc"] == stbl[b"stco"] == bytes(8)
    assert stbl[b"stsz"] == bytes(12)
    stsd = stbl[b"stsd"]
    assert u32(stsd, 4) == 1
    (kind, sample_entry), *_ = boxes(stsd[8:])
    assert kind == entry
    assert int.from_bytes(sample_entry[6:8], "big") == 1  # data_reference_index
    assert (
        int.from_bytes(sample_entry[24:26], "big"),
        int.from_bytes(sample_entry[26:28], "big"),
    ) == (
        320,
        240,
    )
    assert children(sample_entry, 78) == {config_box: config}
    trex = children(moov[b"mvex"])[b"trex"]
    assert (u32(trex, 4), u32(trex, 8)) == (1, 1)  # track_ID, default sample description


def read_fragment(data: bytes) -> dict[str, int]:
    top = boxes(data)
    assert [kind for kind, _ in top] == [b"moof", b"mdat"]
    moof = children(top[0][1])
    assert list(moof) == [b"mfhd", b"traf"]
    traf = children(moof[b"traf"])
    assert list(traf) == [b"tfhd", b"tfdt", b"trun"]
    tfhd, tfdt, trun = traf[b"tfhd"], traf[b"tfdt"], traf[b"trun"]
    assert tfdt[0] == 1 and trun[0] == 1  # 64-bit decode time, signed composition offsets
    return {
        "sequence": u32(moof[b"mfhd"], 4),
        "tfhd_flags": int.from_bytes(tfhd[1:4], "big"),
        "track_id": u32(tfhd, 4),
        "base_dts": int.from_bytes(tfdt[4:12], "big"),
        "trun_flags": int.from_bytes(trun[1:4], "big"),
        "count": u32(trun, 4),
        "data_offset": u32(trun, 8),
        "duration": u32(trun, 12),
        "size": u32(trun, 16),
        "flags": u32(trun, 20),
        "cto": int.from_bytes(trun[24:28], "big", signed=True),
        "moof_size": len(top[0][1]) + 8,
    }


@pytest.mark.parametrize(
    ("sample", "flags"),
    [
        (Sample(b"\x00\x00\x00\x02\x26\x01", 2**40, 2**40 + 3000, 3000, True), SYNC_SAMPLE_FLAGS),
        (Sample(b"abc" * 1000, 6000, 3000, 1500, False), NON_SYNC_SAMPLE_FLAGS),
    ],
)
def test_fragment_fields(sample, flags):
    data = media_fragment(7, sample, track_id=3)
    fields = read_fragment(data)
    assert fields == {
        "sequence": 7,
        "tfhd_flags": 0x020000,  # default-base-is-moof
        "track_id": 3,
        "base_dts": sample.dts,
        "trun_flags": 0x000F01,  # data offset, duration, size, flags, composition offset
        "count": 1,
        "data_offset": fields["moof_size"] + 8,
        "duration": sample.duration,
        "size": len(sample.data),
        "flags": flags,
        "cto": sample.pts - sample.dts,
        "moof_size": fields["moof_size"],
    }
    offset = fields["data_offset"]
    assert data[offset:] == sample.data
    assert flags in (0x02000000, 0x01010000)  # depends_on=2 / depends_on=1 + non-sync


@pytest.mark.parametrize(
    "sample",
    [
        Sample(b"\x00\x00\x00\x02\x26\x01", 2**40, 2**40 + 3000, 3000, True),
        Sample(b"abc" * 1000, 6000, 3000, 1500, False),
        Sample(b"x", 0, 0, 0, False),
    ],
)
@pytest.mark.parametrize("sequence", [1, 0xFFFFFFFF])
def test_fragment_header_template_equals_media_fragment(sample, sequence):
    head = fragment_header(
        sequence, sample.dts, sample.duration, len(sample.data), sample.keyframe,
        sample.pts - sample.dts,
    )  # fmt: skip
    assert len(head) == FRAGMENT_HEADER_BYTES == 112
    assert head + sample.data == media_fragment(sequence, sample)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((2**32, 0, 1, 1, True, 0), "sequence"),
        ((1, -1, 1, 1, True, 0), "dts"),
        ((1, 0, 2**32, 1, True, 0), "duration"),
        ((1, 0, 1, 0, True, 0), "mdat"),
        ((1, 0, 1, 1, True, 2**31), "composition offset"),
    ],
)
def test_fragment_header_refuses_what_does_not_fit(fields, message):
    with pytest.raises(ValueError, match=message):
        fragment_header(*fields)


def test_mime_comes_from_the_record():
    assert VideoTrack("hevc", 320, 240, 1000, HVCC).mime == 'video/mp4; codecs="hvc1.1.6.L60.90"'
    assert VideoTrack("av1", 320, 240, 1000, SVT_AV1C_BY_FFMPEG).codec_string == "av01.0.00M.08"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "track width 0 is outside 1..65535"),
        ({"height": 65536}, "track height 65536 is outside 1..65535"),
        ({"timescale": 0}, "track timescale 0 is outside 1..4294967295"),
        ({"codec": "vp9"}, "track codec 'vp9' is not av1, hevc or h264"),
        ({"config": b""}, "track has an empty avcC record"),
        ({"config": b"\x01\x42"}, "avcC record is truncated"),
    ],
)
def test_impossible_tracks(kwargs, message):
    fields: dict[str, Any] = {"codec": "h264", "width": 320, "height": 240, "timescale": 90000}
    fields["config"] = X264_AVCC_BY_FFMPEG
    fields.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        VideoTrack(**fields)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": b""}, "sample has no data"),
        ({"dts": -1, "pts": -1}, "sample dts -1 is outside 0..2**64-1"),
        ({"duration": -5}, "sample duration -5 is outside 0..4294967295"),
        ({"duration": 2**32}, "sample duration 4294967296 is outside"),
        ({"pts": 2**31}, "composition offset 2147483648 (pts - dts) does not fit 32 bits"),
    ],
)
def test_impossible_samples(kwargs, message):
    fields: dict[str, Any] = {"data": b"x", "dts": 0, "pts": 0, "duration": 1, "keyframe": True}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        Sample(**fields)


def test_impossible_fragment_numbers():
    sample = Sample(b"x", 0, 0, 1, True)
    with pytest.raises(ValueError, match=re.escape("fragment sequence number -1 is outside")):
        media_fragment(-1, sample)
    with pytest.raises(ValueError, match=re.escape("track_id 0 is outside")):
        media_fragment(1, sample, track_id=0)


@pytest.mark.parametrize(("encoder", "decoder"), [("libsvtav1", "libdav1d"), ("libx265", "hevc")])
def test_debian_ffmpeg_decodes_our_stream(encoder, decoder):
    """A second, older FFmpeg (Debian 5.1 CLI) reads the same bytes: not just PyAV's."""
    source = demux(mux_clip("matroska", Segment(encoder, 24, keyint=12)))
    repackager = Repackager(
        source.codec_name, source.extradata, source.width, source.height, source.time_base
    )
    stream = b"".join(out.data for p in source.packets for out in repackager.push(p))
    args = ["ffmpeg", "-nostdin", "-v", "error", "-c:v", decoder, "-i", "pipe:0"]
    result = subprocess.run(
        [*args, "-f", "framemd5", "-"], input=stream, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stderr == b""
    lines = [line for line in result.stdout.decode().splitlines() if not line.startswith("#")]
    assert len(lines) == 24
    assert {line.split(",")[4].strip() for line in lines} == {str(320 * 240 * 3 // 2)}
