"""The copy path's pure parts: packets of real H.264/H.265 (made by the ffmpeg CLI, demuxed with
PyAV as the agent does) through CopyShaper into our live Matroska and decoded back; the source
clock; the copy/transcode decision and its words."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from flumph.agent.copydecision import (
    SourceInfo,
    copy_notice,
    copy_refusal,
    decide,
    rate_switch,
    redact_url,
)
from flumph.agent.copyframes import CopyShaper, SourceClock
from flumph.media import bitstream as bs
from flumph.media.ebml import codec_private_of
from flumph.media.matroska_writer import LiveMatroskaWriter, TrackInfo
from flumph.settings import StreamSettings
from tests.peers import ffmpeg_file

NAL_TYPE = {"h264": bs.h264_nal_type, "hevc": bs.hevc_nal_type}
PARAMETER_SETS = {"h264": {7, 8}, "hevc": {32, 33, 34}}
DELIMITER = {"h264": 9, "hevc": 35}


def demux(path: Path) -> tuple[bytes, list[tuple[bytes, bool]]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        packets = [(bytes(p), bool(p.is_keyframe)) for p in c.demux(stream) if p.size]
    return extradata, packets


def raw_stream(tmp: Path, codec: str, size: str) -> Path:
    """An Annex B elementary stream, parameter sets in-band before keyframes, as cameras send."""
    path = tmp / f"{codec}-{size}.{codec}"
    return ffmpeg_file(path, codec=codec, container=codec, size=size, seconds=1.0, gop=5)


def decode_document(document: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(document), "r") as c:
        return list(c.decode(c.streams.video[0]))


def forward(shaper: CopyShaper, packets: list[tuple[bytes, bool]]) -> list[bytes]:
    """Shape every packet and write Matroska as the copy worker does: a new document at a config
    change, starting at a keyframe. Returns the documents."""
    documents: list[bytearray] = []
    writer: LiveMatroskaWriter | None = None
    for index, (packet, keyframe) in enumerate(packets):
        shaped = shaper.shape(packet, keyframe)
        if shaped.new_config:
            writer = None
        if writer is None:
            assert keyframe and shaper.config is not None
            writer = LiveMatroskaWriter(
                TrackInfo(shaper.codec, shaper.width, shaper.height, shaper.config, 15.0)
            )
            documents.append(bytearray())
        documents[-1] += writer.write(index * 66, keyframe, shaped.data)
    return [bytes(d) for d in documents]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_annexb_source_moves_parameter_sets_to_the_record_and_drops_delimiters(
    codec: str, tmp_path: Path
) -> None:
    # ffmpeg's raw H.264/H.265 muxers write parameter sets before each keyframe (x264 adds
    # delimiters when asked); we add delimiters ourselves to every frame for H.265 too.
    path = raw_stream(tmp_path, codec, "320x240")
    extradata, packets = demux(path)
    aud = b"\x00\x00\x00\x01" + (b"\x09\xf0" if codec == "h264" else b"\x46\x01\x50")
    packets = [(aud + p, k) for p, k in packets]
    shaper = CopyShaper(codec, extradata)
    assert shaper.config is not None and (shaper.width, shaper.height) == (320, 240)
    nal_type = NAL_TYPE[codec]
    for packet, keyframe in packets:
        shaped = shaper.shape(packet, keyframe)
        assert not shaped.new_config  # the same sets as the extradata's
        types = [nal_type(n) for n in bs.split_annexb(shaped.data)]
        assert not set(types) & (PARAMETER_SETS[codec] | {DELIMITER[codec]}), types
        assert shaped.dropped_bytes >= len(aud) - 4
    documents = forward(CopyShaper(codec, extradata), packets)
    assert len(documents) == 1
    frames = decode_document(documents[0])
    assert len(frames) == len(packets) and (frames[0].width, frames[0].height) == (320, 240)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_file_with_a_record_keeps_it_byte_for_byte_and_reframes_length_prefixed_packets(
    codec: str, tmp_path: Path
) -> None:
    path = ffmpeg_file(tmp_path / f"clip-{codec}.mp4", codec=codec, container="mp4", seconds=1.0)
    extradata, packets = demux(path)
    assert extradata[:1] == b"\x01"  # avcC / hvcC
    shaper = CopyShaper(codec, extradata)
    assert shaper.config == extradata
    first = shaper.shape(*packets[0])
    # The same NAL units, now with start codes (the writer turns them into 4-byte lengths).
    left_out = PARAMETER_SETS[codec] | {DELIMITER[codec]}
    nals = bs.split_length_prefixed(packets[0][0])
    assert bs.split_annexb(first.data) == [n for n in nals if NAL_TYPE[codec](n) not in left_out]
    documents = forward(CopyShaper(codec, extradata), packets)
    assert codec_private_of(documents[0]) == extradata
    assert len(decode_document(documents[0])) == len(packets)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_new_parameter_sets_in_band_start_a_new_document(codec: str, tmp_path: Path) -> None:
    """A camera that changes resolution mid-stream: the second stream's keyframe carries other
    parameter sets, so a new config record (and a new Matroska document) starts there."""
    small_extra, small = demux(raw_stream(tmp_path, codec, "320x240"))
    _, large = demux(raw_stream(tmp_path, codec, "480x272"))
    shaper = CopyShaper(codec, small_extra)
    results = [shaper.shape(p, k) for p, k in small + large]
    changed = [i for i, r in enumerate(results) if r.new_config]
    assert changed == [len(small)]
    assert (shaper.width, shaper.height) == (480, 272)
    documents = forward(CopyShaper(codec, small_extra), small + large)
    sizes = [{(f.width, f.height) for f in decode_document(d)} for d in documents]
    assert sizes == [{(320, 240)}, {(480, 272)}]


def test_no_extradata_takes_the_record_from_the_first_keyframe(tmp_path: Path) -> None:
    """A V4L2 camera's own H.264: nothing out of band, parameter sets only in its keyframes."""
    _, packets = demux(raw_stream(tmp_path, "h264", "320x240"))
    shaper = CopyShaper("h264", b"")
    assert shaper.config is None
    shaped = shaper.shape(*packets[0])
    assert shaped.new_config and shaper.config is not None
    assert (shaper.width, shaper.height) == (320, 240)
    assert len(decode_document(forward(CopyShaper("h264", b""), packets)[0])) == len(packets)


@pytest.mark.parametrize(
    "packet",
    [b"\x00\x00\x00\x01", b"garbage without a start code", b"\x00\x00\x01\x67\xff\xff"],
)
def test_a_packet_that_cannot_be_parsed_is_refused_with_valueerror(
    packet: bytes, tmp_path: Path
) -> None:
    extradata, _ = demux(raw_stream(tmp_path, "h264", "320x240"))
    shaper = CopyShaper("h264", extradata)
    with pytest.raises(ValueError, match=r"NAL unit|start code|SPS"):
        shaper.shape(packet, keyframe=True)
    # The record in force is untouched by a refused packet.
    assert shaper.config == CopyShaper("h264", extradata).config


def test_codecs_that_cannot_be_forwarded_are_refused() -> None:
    with pytest.raises(ValueError, match="mjpeg"):
        CopyShaper("mjpeg", b"")


# --- the clock -------------------------------------------------------------------------------


def test_clock_follows_the_source_spacing_from_the_origin() -> None:
    clock = SourceClock(origin_ms=5000, frame_ms=100)
    assert [clock.stamp(t) for t in (90.0, 90.1, 90.2, 90.5)] == [5000, 5100, 5200, 5500]


def test_clock_keeps_b_frame_reordering_and_fills_missing_times() -> None:
    clock = SourceClock(origin_ms=0, frame_ms=40)
    # Decode order of I P B B: presentation times go back by less than max_back_s.
    assert [clock.stamp(t) for t in (0.0, 0.12, 0.04, 0.08)] == [0, 120, 40, 80]
    assert clock.stamp(None) == 120  # one frame after the last stamp


def test_clock_reanchors_on_jumps_and_restarts_without_going_back() -> None:
    clock = SourceClock(origin_ms=1000, frame_ms=50)
    assert clock.stamp(10.0) == 1000
    assert clock.stamp(10.05) == 1050
    assert clock.stamp(0.0) == 1100  # a file looped: one frame after the last
    assert clock.stamp(100.0) == 1150  # a 100 s gap: the camera's clock jumped
    clock.restart()
    assert clock.stamp(3.0) == 1200
    assert SourceClock(origin_ms=7).stamp(None) == 7  # a first packet without a time


# --- the decision ----------------------------------------------------------------------------

HEVC_360 = SourceInfo("rtsp://cam/live", "hevc", 640, 360, 15.0, None)


def settings(**values: object) -> StreamSettings:
    return StreamSettings.model_validate(values)


def test_auto_forwards_a_source_no_setting_asks_to_change() -> None:
    decision = decide(settings(codec="auto"), HEVC_360)
    assert decision.copy
    assert "forwarding rtsp://cam/live untouched (hevc 640x360 15 fps)" in decision.reason
    assert "bitrate is checked once measured (10 s)" in decision.reason


def test_auto_switches_to_transcoding_when_the_measured_rate_is_above_the_setting() -> None:
    s = settings(codec="auto", width=640, height=360, fps=15, bitrate_kbps=250)
    assert rate_switch(s, HEVC_360, 290.0) is None  # within the 20 % tolerance
    decision = rate_switch(s, HEVC_360, 800.0)
    assert decision is not None and not decision.copy
    assert "bitrate_kbps=250 (the source sends ~800, measured)" in decision.reason
    assert rate_switch(settings(codec="copy"), HEVC_360, 5000.0) is None  # copy is copy


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"width": 320, "height": 180}, "320x180 (the source sends 640x360)"),
        ({"fps": 10}, "fps=10 (the source sends 15)"),
        ({"bitrate_kbps": 200}, "bitrate_kbps=200 (the source declares 900)"),
    ],
)
def test_auto_transcodes_when_a_setting_asks_for_another_size_rate_or_bitrate(
    values: dict[str, object], named: str
) -> None:
    info = SourceInfo("rtsp://cam/live", "hevc", 640, 360, 15.0, 900.0)
    decision = decide(settings(codec="auto", **values), info)
    assert not decision.copy
    assert named in decision.reason and "codec=copy would forward" in decision.reason


def test_auto_transcodes_a_codec_the_ingest_does_not_take_and_copy_refuses_it() -> None:
    mjpeg = SourceInfo("http://cam/video", "mjpeg", 640, 360, 15.0, None)
    assert not decide(settings(codec="auto"), mjpeg).copy
    refusal = copy_refusal(mjpeg)
    assert refusal is not None and "sends mjpeg" in refusal and "codec=auto" in refusal
    with pytest.raises(ValueError, match="sends mjpeg"):
        decide(settings(codec="copy"), mjpeg)


def test_copy_forwards_whatever_the_settings_say() -> None:
    decision = decide(settings(codec="copy", width=320, height=180, bitrate_kbps=100), HEVC_360)
    assert decision.copy and decision.reason.startswith("codec=copy: forwarding")


def test_a_changed_encoder_setting_in_copy_is_answered_with_the_source_value() -> None:
    notice = copy_notice(["bitrate_kbps", "streaming"], "hevc 640x360 15 fps ~480 kbit/s")
    assert notice is not None
    assert notice.startswith("codec=copy: bitrate_kbps not applied: the source sets them")
    assert "~480 kbit/s" in notice and "camera or its app" in notice
    assert copy_notice(["streaming", "srt_latency_ms"], None) is None


def test_camera_passwords_never_reach_reports() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/h264") == "rtsp://***@10.0.0.5:554/h264"
    assert redact_url("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert redact_url("/dev/video0") == "/dev/video0"


def test_av1_takes_the_sequence_header_the_frames_carry(tmp_path: Path) -> None:
    """av1C must match the in-band sequence header; FFmpeg 5.1's SVT-AV1 writes an extradata
    sequence header that differs from the one in its keyframes, so the in-band one wins."""
    path = ffmpeg_file(tmp_path / "clip.webm", codec="av1", container="webm", seconds=1.0)
    extradata, packets = demux(path)
    shaper = CopyShaper("av1", extradata)
    assert shaper.config == extradata and (shaper.width, shaper.height) == (320, 240)
    documents = forward(CopyShaper("av1", extradata), packets)
    assert len(documents) == 1
    inband = bs.find_sequence_header(bs.split_obus(packets[0][0]))
    assert inband is not None
    record = bs.parse_av1c(codec_private_of(documents[0]))
    assert record.sequence_header() == bs.parse_av1_sequence_header(inband.payload)
    assert len(decode_document(documents[0])) == len(packets)
