"""Config records and codec strings built from real encoder output, checked against FFmpeg.

FFmpeg 8.1 (in PyAV) muxes the same encoder's parameter sets into an mp4; we read its
hvcC/avcC/av1C back and compare field by field with what our bitstream package builds. Codec strings
are compared with the CODECS attribute FFmpeg's HLS muxer writes (AV1, H.264; it writes
none for H.265 without encoder-reported profile/level).
"""

import io
import re

import pytest

from flumph.media import bitstream as bs
from flumph.media.codecstring import codec_string
from flumph.media.repackager import InitSegment, Repackager
from tests.test_media_clips import (
    SAMPLE_ENTRY_PATH,
    Segment,
    add_video_stream,
    demux,
    find_box,
    mp4_config_record,
    mux_clip,
    open_output,
    synthetic_frames,
)

HEVC_CASES = [
    # (width, height, pix_fmt, x265-params extra, expected codec string)
    (320, 240, "yuv420p", "", "hvc1.1.6.L60.90"),
    # 322x242 is coded as 336x256 with a conformance window.
    (322, 242, "yuv420p", "", "hvc1.1.6.L60.90"),
    # Temporal sub-layers make the SPS carry sub-layer flags and numTemporalLayers 3.
    (
        320,
        240,
        "yuv420p",
        ":temporal-layers=3",
        "hvc1.1.6.L60.90",
    ),  # needs B-frames: no zerolatency
    # Main 10: profile 2, compatibility flag 2 -> reversed 0x4.
    (320, 240, "yuv420p10le", "", "hvc1.2.4.L60.90"),
    # Main 4:4:4 (RExt, profile 4, compatibility flag 4 -> 0x10); constraint bytes 9E 08 =
    # progressive, frame_only, max_12bit, max_10bit, max_8bit | lower_bit_rate.
    (320, 240, "yuv444p", "", "hvc1.4.10.L60.9E.08"),
]


def split_by_type(extradata: bytes, type_of) -> dict[int, list[bytes]]:
    by_type: dict[int, list[bytes]] = {}
    for nal in bs.split_annexb(extradata):
        by_type.setdefault(type_of(nal), []).append(nal)
    return by_type


@pytest.mark.parametrize(("width", "height", "pix_fmt", "params", "expected"), HEVC_CASES)
def test_hvcc_matches_ffmpeg_field_by_field(width, height, pix_fmt, params, expected):
    extra = {"x265-params": "log-level=error" + params}
    if "temporal-layers" in params:
        extra["tune"] = "psnr"
    ffmpeg_record, extradata = mp4_config_record(
        "libx265", width, height, pix_fmt=pix_fmt, extra=extra
    )
    nals = split_by_type(extradata, bs.hevc_nal_type)
    ours = bs.parse_hvcc(
        bs.build_hvcc(nals[bs.HEVC_NAL_VPS], nals[bs.HEVC_NAL_SPS], nals[bs.HEVC_NAL_PPS])
    )
    theirs = bs.parse_hvcc(ffmpeg_record)
    for field in (
        "ptl",
        "min_spatial_segmentation_idc",
        "parallelism_type",
        "chroma_format_idc",
        "bit_depth_luma",
        "bit_depth_chroma",
        "avg_frame_rate",
        "constant_frame_rate",
        "num_temporal_layers",
        "temporal_id_nested",
        "length_size",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field
    # The parameter-set arrays are identical (complete, as FFmpeg writes them for hvc1); FFmpeg
    # also copies x265's version SEI into the record, which we leave out.
    assert [a.nal_type for a in theirs.arrays] == [32, 33, 34, 39]
    assert ours.arrays == theirs.arrays[:3]
    sps = bs.parse_hevc_sps(nals[bs.HEVC_NAL_SPS][0])
    assert (sps.width, sps.height) == (width, height)
    assert sps.bit_depth_luma == (10 if "10" in pix_fmt else 8)
    assert codec_string("hevc", ffmpeg_record) == expected
    if "temporal-layers" in params:
        assert (sps.max_sub_layers, ours.num_temporal_layers) == (3, 3)


H264_CASES = [
    # (width, height, pix_fmt, encoder options, profile_idc)
    (320, 240, "yuv420p", {}, 66),
    (1920, 1080, "yuv420p", {"preset": "veryfast", "x264-params": "cqm=jvt"}, 100),
    (322, 244, "yuv420p", {"preset": "veryfast", "flags": "+ilme+ildct"}, 100),
    (320, 240, "yuv444p", {}, 244),
    (320, 240, "yuv420p10le", {}, 110),
]


@pytest.mark.parametrize(("width", "height", "pix_fmt", "extra", "profile"), H264_CASES)
def test_avcc_matches_ffmpeg_byte_for_byte(width, height, pix_fmt, extra, profile):
    ffmpeg_record, extradata = mp4_config_record(
        "libx264", width, height, pix_fmt=pix_fmt, extra=extra
    )
    nals = split_by_type(extradata, bs.h264_nal_type)
    assert bs.build_avcc(nals[bs.H264_NAL_SPS], nals[bs.H264_NAL_PPS]) == ffmpeg_record
    sps = bs.parse_h264_sps(nals[bs.H264_NAL_SPS][0])
    assert (sps.profile_idc, sps.width, sps.height) == (profile, width, height)
    config = bs.parse_avcc(ffmpeg_record)
    if profile != 66:
        assert config.chroma_format_idc == (3 if pix_fmt == "yuv444p" else 1)
        assert config.bit_depth_luma == (10 if "10" in pix_fmt else 8)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_av1c_matches_ffmpeg(pix_fmt):
    ffmpeg_record, extradata = mp4_config_record("libsvtav1", 640, 360, pix_fmt=pix_fmt)
    # The encoder gives bare config OBUs; FFmpeg's muxers wrap them into av1C as we do.
    assert extradata[0] != 0x81
    assert bs.av1c_from_sequence_header(extradata) == ffmpeg_record
    seq = bs.parse_av1c(ffmpeg_record).sequence_header()
    assert seq is not None and (seq.max_width, seq.max_height) == (640, 360)


def test_svt_in_band_sequence_header_wins_over_extradata():
    """SVT-AV1's extradata sequence header differs from the one it puts in the stream (tool
    enables); the init segment must carry the stream's, which we take from the key frame."""
    source = demux(mux_clip("matroska", Segment("libsvtav1", 3)))
    assert source.extradata is not None
    in_band = bs.find_sequence_header(bs.split_obus(bytes(source.packets[0].data)))
    from_extradata = bs.parse_av1c(source.extradata).config_obus
    assert in_band is not None and in_band.raw != from_extradata
    repackager = Repackager("av1", source.extradata, 320, 240, source.time_base)
    init = repackager.push(source.packets[0])[0]
    assert isinstance(init, InitSegment)
    assert init.track.config == source.extradata[:4] + in_band.raw


def hls_codecs(tmp_path, encoder: str, width: int, height: int, pix_fmt: str, extra=None) -> str:
    options = {
        "hls_segment_type": "fmp4",
        "hls_playlist_type": "vod",  # the master playlist is complete only for VOD
        "master_pl_name": "master.m3u8",
    }
    with open_output(str(tmp_path / "media.m3u8"), "hls", **options) as out:
        stream = add_video_stream(out, encoder, width, height, pix_fmt, extra=extra)
        # A second of video: with less, FFmpeg knows no bandwidth and writes no CODECS.
        for frame in synthetic_frames(30, width, height, pix_fmt=pix_fmt):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    found = re.findall(r'CODECS="([^"]*)"', (tmp_path / "master.m3u8").read_text())
    assert len(found) == 1
    return str(found[0])


@pytest.mark.parametrize(
    ("encoder", "width", "height", "pix_fmt", "extra", "expected"),
    [
        # 640x360 at 30 fps fits level 2.1 (seq_level_idx 1): max 278784 luma samples/picture.
        ("libsvtav1", 640, 360, "yuv420p", None, "av01.0.01M.08"),
        ("libsvtav1", 320, 240, "yuv420p10le", None, "av01.0.00M.10"),
        ("libx264", 320, 240, "yuv420p", None, "avc1.42C00D"),
        ("libx264", 1280, 720, "yuv420p", {"preset": "veryfast"}, "avc1.64001F"),
    ],
)
def test_codec_strings_agree_with_ffmpeg_hls(
    tmp_path, encoder, width, height, pix_fmt, extra, expected
):
    record, _ = mp4_config_record(encoder, width, height, pix_fmt=pix_fmt, extra=extra)
    ours = codec_string("av1" if encoder == "libsvtav1" else "h264", record)
    assert ours == expected
    assert hls_codecs(tmp_path, encoder, width, height, pix_fmt, extra).lower() == ours.lower()


def test_hevc_sample_entry_ffmpeg_picks_by_default_is_hev1():
    """Recorded for the README: FFmpeg's mp4 muxer tags H.265 'hev1' unless told 'hvc1', and
    then marks the arrays incomplete; MSE wants hvc1 with complete arrays."""
    buf = io.BytesIO()
    with open_output(buf, "mp4") as out:
        stream = add_video_stream(out, "libx265", 320, 240)
        for frame in synthetic_frames(2, 320, 240):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buf.getvalue()
    assert find_box(data, [*SAMPLE_ENTRY_PATH, b"hvc1"]) is None
    record = find_box(data, [*SAMPLE_ENTRY_PATH, b"hev1", b"hvcC"])
    assert record is not None
    assert not any(array.complete for array in bs.parse_hvcc(record).arrays)
