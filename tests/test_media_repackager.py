"""Round trips: PyAV encode → Matroska/MPEG-TS in memory → demux → Repackager → fMP4 → decode."""

import itertools
import re
from collections.abc import Sequence
from fractions import Fraction

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flumph.media import bitstream as bs
from flumph.media.repackager import Fragment, InitSegment, Packet, Repackager
from tests.test_media_clips import Demuxed, Segment, decode, demux, iter_boxes, mux_clip

COMBOS = [
    ("libsvtav1", "matroska"),
    ("libx265", "matroska"),
    ("libx265", "mpegts"),
    ("libx264", "matroska"),
    ("libx264", "mpegts"),
]
DECODER = {"libsvtav1": "libdav1d", "libx265": "hevc", "libx264": "h264"}
CODEC = {"libsvtav1": "av1", "libx265": "hevc", "libx264": "h264"}
MIME = {
    # Justified in test_media_codecstring.py from the records' fields.
    "libsvtav1": 'video/mp4; codecs="av01.0.00M.08"',
    "libx265": 'video/mp4; codecs="hvc1.1.6.L60.90"',
    "libx264": 'video/mp4; codecs="avc1.42C00D"',
}
_clips: dict[tuple[str, ...], bytes] = {}


def raw_clip(container: str, *segments: Segment) -> bytes:
    """Clips are encoded once per test session: several tests use the same one."""
    key = (container, *map(repr, segments))
    if key not in _clips:
        _clips[key] = mux_clip(container, *segments)
    return _clips[key]


def clip(container: str, *segments: Segment) -> Demuxed:
    return demux(raw_clip(container, *segments))


def repackager_for(source: Demuxed, **kwargs) -> Repackager:
    return Repackager(
        source.codec_name, source.extradata, source.width, source.height, source.time_base, **kwargs
    )


def push_all(repackager: Repackager, packets: list[Packet]) -> list[InitSegment | Fragment]:
    return [out for packet in packets for out in repackager.push(packet)]


def joined(outputs) -> bytes:
    return b"".join(out.data for out in outputs)


def fragments_of(outputs) -> list[Fragment]:
    return [out for out in outputs if isinstance(out, Fragment)]


def sample_bytes(fragment: Fragment) -> bytes:
    boxes = dict(iter_boxes(fragment.data))
    assert len(boxes[b"mdat"]) == fragment.size
    return boxes[b"mdat"]


def planes(frame: av.VideoFrame) -> bytes:
    # to_ndarray drops the line padding, whose bytes are undefined.
    return bytes(frame.to_ndarray().tobytes())


@pytest.mark.parametrize(("encoder", "container"), COMBOS)
def test_round_trip_decodes_every_frame_bit_exactly(encoder, container):
    segment = Segment(encoder, 40, keyint=15)
    source = clip(container, segment)
    repackager = repackager_for(source)
    outputs = push_all(repackager, source.packets)

    init, *rest = outputs
    assert isinstance(init, InitSegment)
    assert init.track.mime == MIME[encoder]
    assert (init.track.codec, init.track.width, init.track.height) == (CODEC[encoder], 320, 240)
    fragments = fragments_of(rest)
    assert len(fragments) == len(rest) == len(source.packets) == 40
    source_keyframes = [packet.keyframe for packet in source.packets]
    assert source_keyframes.count(True) == 3
    assert [fragment.keyframe for fragment in fragments] == source_keyframes

    result = decode(joined(outputs))
    assert (result.codec_name, result.width, result.height) == (DECODER[encoder], 320, 240)
    assert len(result.frames) == 40
    assert result.packet_keyframes == source_keyframes
    original = decode(raw_clip(container, segment))
    assert [planes(f) for f in result.frames] == [planes(f) for f in original.frames]

    timescale = 1000 if container == "matroska" else 90000
    assert {fragment.timescale for fragment in fragments} == {timescale}
    assert fragments[0].dts == 0
    assert all(b.dts > a.dts for a, b in itertools.pairwise(fragments))
    assert repackager.dropped_before_keyframe == 0
    assert repackager.fragments == 40


@pytest.mark.parametrize(("encoder", "container"), [c for c in COMBOS if c[0] != "libsvtav1"])
def test_parameter_sets_and_delimiters_leave_the_samples(encoder, container):
    source = clip(container, Segment(encoder, 40, keyint=15))
    fragments = fragments_of(push_all(repackager_for(source), source.packets))
    if encoder == "libx264":
        type_of, banned = bs.h264_nal_type, {bs.H264_NAL_SPS, bs.H264_NAL_PPS, bs.H264_NAL_AUD}
    else:
        type_of = bs.hevc_nal_type
        banned = {bs.HEVC_NAL_VPS, bs.HEVC_NAL_SPS, bs.HEVC_NAL_PPS, bs.HEVC_NAL_AUD}
    for fragment in fragments:
        types = {type_of(nal) for nal in bs.split_length_prefixed(sample_bytes(fragment))}
        assert types and not types & banned
    if container == "mpegts":
        # FFmpeg's TS carries parameter sets and an AUD in-band before every keyframe.
        keyframe = next(p for p in source.packets if p.keyframe)
        assert {type_of(nal) for nal in bs.split_annexb(bytes(keyframe.data))} & banned


def test_av1_samples_pass_through_untouched():
    source = clip("matroska", Segment("libsvtav1", 40, keyint=15))
    fragments = fragments_of(push_all(repackager_for(source), source.packets))
    assert [sample_bytes(f) for f in fragments] == [p.data for p in source.packets]


@pytest.mark.parametrize(("encoder", "container"), [c for c in COMBOS if c[1] == "matroska"])
def test_frames_needing_no_rewrite_are_read_from_a_memoryview_unchanged(encoder, container):
    # The ingest hands the repackager memoryviews into received SRT messages: the output must be
    # the same as from bytes, and the view must not be kept.
    source = clip(container, Segment(encoder, 30, keyint=15))
    from_bytes = push_all(repackager_for(source), source.packets)
    buffers = [bytearray(p.data) for p in source.packets]
    views = [
        Packet(memoryview(b), p.pts, p.dts, p.keyframe)
        for b, p in zip(buffers, source.packets, strict=True)
    ]
    repackager = repackager_for(source)
    from_views = [out for pkt in views for out in repackager.push(pkt)]
    for b in buffers:
        b[:] = bytes(len(b))  # the sender reuses its buffer: fragments already made hold copies
    assert joined(from_views) == joined(from_bytes)


def test_av1_temporal_delimiters_are_removed_and_sizes_added():
    source = clip("matroska", Segment("libsvtav1", 5))
    key = source.packets[0]
    obus = bs.split_obus(bytes(key.data))
    # Rewrite the key frame as a TD + OBUs whose last one has no size field.
    last = obus[-1]
    unsized = bytes([last.raw[0] & ~0x02]) + last.payload
    rewritten = bytes.fromhex("1200") + b"".join(o.raw for o in obus[:-1]) + unsized
    out = Repackager("av1", source.extradata, 320, 240, source.time_base).push(
        Packet(rewritten, 0, 0, True)
    )
    assert isinstance(out[1], Fragment)
    assert sample_bytes(out[1]) == key.data


@pytest.mark.parametrize(("encoder", "container"), COMBOS)
def test_waits_for_a_keyframe_and_counts_what_it_dropped(encoder, container):
    source = clip(container, Segment(encoder, 40, keyint=15))
    repackager = repackager_for(source)
    outputs = push_all(repackager, source.packets[1:])
    assert repackager.dropped_before_keyframe == 14
    assert isinstance(outputs[0], InitSegment)
    first = outputs[1]
    assert isinstance(first, Fragment) and first.keyframe and first.dts == 0
    result = decode(joined(outputs))
    assert len(result.frames) == 25


@pytest.mark.parametrize(("encoder", "container"), COMBOS)
def test_resolution_change_sends_a_new_init_segment(encoder, container):
    source = clip(
        container, Segment(encoder, 20, keyint=10), Segment(encoder, 15, 256, 144, keyint=10)
    )
    outputs = push_all(repackager_for(source), source.packets)
    inits = [index for index, out in enumerate(outputs) if isinstance(out, InitSegment)]
    assert inits == [0, 21]
    second = outputs[21]
    assert isinstance(second, InitSegment)
    assert (second.track.width, second.track.height) == (256, 144)
    assert isinstance(outputs[22], Fragment) and outputs[22].keyframe
    for part, size, count in (
        (outputs[:21], (320, 240), 20),
        (outputs[21:], (256, 144), 15),
    ):
        result = decode(joined(part))
        assert (result.width, result.height) == size
        assert len(result.frames) == count
        assert all((f.width, f.height) == size for f in result.frames)
    dts = [f.dts for f in fragments_of(outputs)]
    assert dts == sorted(set(dts))


@pytest.mark.parametrize(
    ("encoder", "container"), [("libsvtav1", "matroska"), ("libx264", "mpegts")]
)
def test_reset_source_continues_the_timeline(encoder, container):
    first = clip(container, Segment(encoder, 10))
    second = clip(container, Segment(encoder, 12))
    repackager = repackager_for(first)
    before = push_all(repackager, first.packets)
    last = fragments_of(before)[-1]
    repackager.reset_source()
    after = push_all(repackager, second.packets)
    # Same codec config and size: viewers keep their decoder, no new init segment.
    assert not any(isinstance(out, InitSegment) for out in after)
    assert fragments_of(after)[0].dts == last.dts + last.duration
    result = decode(joined(before + after))
    assert len(result.frames) == 22


def test_reset_source_with_a_new_container_rescales_and_reinitialises():
    first = clip("matroska", Segment("libx264", 10))
    second = clip("mpegts", Segment("libx264", 10))
    repackager = repackager_for(first)
    before = push_all(repackager, first.packets)
    last = fragments_of(before)[-1]
    assert last.timescale == 1000
    repackager.reset_source(
        codec=second.codec_name,
        extradata=second.extradata,
        width=second.width,
        height=second.height,
        time_base=second.time_base,
    )
    after = push_all(repackager, second.packets)
    assert isinstance(after[0], InitSegment) and after[0].track.timescale == 90000
    assert fragments_of(after)[0].dts == (last.dts + last.duration) * 90
    assert len(decode(joined(after)).frames) == 10


def test_av1_extradata_in_every_form_gives_the_same_output():
    source = clip("matroska", Segment("libsvtav1", 10))
    assert source.extradata is not None and source.extradata[0] == 0x81
    variants = [source.extradata, source.extradata[4:], None, source.extradata[:4]]
    outputs = [
        joined(push_all(Repackager("av1", extradata, 320, 240, source.time_base), source.packets))
        for extradata in variants
    ]
    assert outputs[1:] == outputs[:1] * 3


def test_h26x_from_mpegts_without_extradata():
    source = clip("mpegts", Segment("libx265", 10))
    outputs = push_all(Repackager("hevc", None, 320, 240, source.time_base), source.packets)
    assert len(decode(joined(outputs)).frames) == 10


@pytest.mark.parametrize("container", ["matroska", "mpegts"])
def test_b_frames_keep_presentation_order(container):
    segment = Segment("libx264", 30, extra={"tune": "film", "preset": "veryfast", "bf": "2"})
    source = clip(container, segment)
    assert any(p.pts != p.dts for p in source.packets)
    outputs = push_all(repackager_for(source), source.packets)
    fragments = fragments_of(outputs)
    assert all(b.dts > a.dts for a, b in itertools.pairwise(fragments))
    result = decode(joined(outputs))
    original = decode(raw_clip(container, segment))
    assert len(result.frames) == 30
    pts = [frame.pts or 0 for frame in result.frames]
    assert None not in [frame.pts for frame in result.frames]
    assert pts == sorted(pts)
    assert [planes(f) for f in result.frames] == [planes(f) for f in original.frames]


# --- timeline, on real packets with chosen timestamps -----------------------------------------


@pytest.fixture(scope="module")
def h264_packets() -> list[Packet]:
    """Annex B with in-band parameter sets; only the first is a keyframe."""
    return clip("mpegts", Segment("libx264", 12, keyint=100)).packets


def timed(packets: list[Packet], stamps: Sequence[tuple[int | None, int | None]]) -> list[Packet]:
    return [
        Packet(p.data, pts, dts, p.keyframe) for p, (pts, dts) in zip(packets, stamps, strict=False)
    ]


def dts_and_durations(repackager: Repackager, packets: list[Packet]) -> list[tuple[int, int]]:
    return [(f.dts, f.duration) for f in fragments_of(push_all(repackager, packets))]


def test_first_duration_from_fps_hint_or_thirty_fps(h264_packets):
    hinted = Repackager("h264", None, 320, 240, Fraction(1, 1000), fps_hint=25)
    plain = Repackager("h264", None, 320, 240, Fraction(1, 90000))
    packets = timed(h264_packets, [(0, 0), (40, 40)])
    assert dts_and_durations(hinted, packets) == [(0, 40), (40, 40)]
    assert dts_and_durations(plain, packets[:1]) == [(0, 3000)]


def test_timeline_survives_jumps_and_missing_timestamps(h264_packets):
    repackager = Repackager("h264", None, 320, 240, Fraction(1, 1000))
    stamps = [
        (1000, 1000),  # rebased to 0
        (1033, 1033),
        (1067, 1067),
        (500, 500),  # 567 back: reordering-sized, dts nudged forward, duration kept
        (None, None),  # unknown: one frame later
        (90000, 90000),  # 89 s forward: discontinuity, continue one frame later
        (90033, 90033),
        (0, 0),  # source clock restarted: rebase
        (33, 33),
        (None, 66),
        (99, None),
    ]
    got = dts_and_durations(repackager, timed(h264_packets, stamps))
    assert got == [
        (0, 33),
        (33, 33),
        (67, 34),
        (68, 34),
        (102, 34),
        (136, 34),
        (169, 33),
        (202, 33),
        (235, 33),
        (268, 33),
        (301, 33),
    ]


def test_a_late_frame_never_reads_as_a_discontinuity_to_mse(h264_packets):
    """Chromium's MSE takes a dts step over twice the last frame's duration for a discontinuity
    and drops every frame until the next keyframe (30 s away by default): a capture 150 ms late
    froze the picture. Such a step is closed to twice the last duration; steps within it stay."""
    repackager = Repackager("h264", None, 320, 240, Fraction(1, 1000))
    stamps = [(0, 0), (66, 66), (133, 133), (283, 283), (350, 350), (400, 400), (600, 600)]
    got = dts_and_durations(repackager, timed(h264_packets, stamps))
    assert [dts for dts, _ in got] == [0, 66, 133, 267, 334, 384, 484]
    steps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
    durations = [d for _, d in got]
    assert all(step <= 2 * last for step, last in zip(steps, durations, strict=False))


def test_composition_offsets_follow_pts(h264_packets):
    repackager = Repackager("h264", None, 320, 240, Fraction(1, 90000))
    stamps = [(6000, 0), (15000, 3000), (9000, 6000)]
    fragments = fragments_of(push_all(repackager, timed(h264_packets, stamps)))
    offsets = []
    for fragment in fragments:
        traf = dict(iter_boxes(dict(iter_boxes(fragment.data))[b"moof"]))[b"traf"]
        trun = dict(iter_boxes(traf))[b"trun"]
        offsets.append(int.from_bytes(trun[-4:], "big", signed=True))
    assert offsets == [6000, 12000, 3000]


# --- bad input ----------------------------------------------------------------------------------


def test_unsupported_codec_is_named():
    with pytest.raises(ValueError) as caught:
        Repackager("vp9", None, 320, 240, Fraction(1, 1000))
    assert str(caught.value) == (
        "codec vp9 is not supported: Flumph passes through AV1, H.265 and H.264 only"
    )


@pytest.mark.parametrize(
    ("codec", "extradata", "message"),
    [
        (
            "hevc",
            b"\xff\xfe",
            "hevc extradata is neither an hvcC record nor Annex B (first bytes: 'fffe')",
        ),
        (
            "h264",
            b"\x01\x42",
            "avcC record is truncated: profile_compatibility needs 1 byte(s) at offset 2, 0 left",
        ),
        ("av1", b"\x81\x00", "av1C record of 2 bytes is shorter than its 4-byte header"),
        ("av1", b"\x8a", "AV1 OBU at offset 0 has its forbidden bit set"),
    ],
)
def test_garbage_extradata_is_named(codec, extradata, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Repackager(codec, extradata, 320, 240, Fraction(1, 1000))


def test_garbage_packets_are_named():
    source = clip("matroska", Segment("libx264", 3))
    repackager = repackager_for(source)
    truncated = source.packets[0].data[:-1]
    with pytest.raises(ValueError, match="length-prefixed data is truncated"):
        repackager.push(Packet(truncated, 0, 0, True))
    annexb = Repackager("hevc", None, 320, 240, Fraction(1, 90000))
    with pytest.raises(ValueError, match="does not start with a start code"):
        annexb.push(Packet(b"\x12\x34\x56", 0, 0, True))
    with pytest.raises(ValueError, match="size 0x240 is not positive"):
        Repackager("h264", None, 0, 240, Fraction(1, 90000))
    with pytest.raises(ValueError, match="time base 0 is not positive"):
        Repackager("h264", None, 320, 240, Fraction(0))


def test_nothing_comes_out_without_config_or_data():
    repackager = Repackager("hevc", None, 320, 240, Fraction(1, 90000))
    assert repackager.push(Packet(b"", 0, 0, True)) == []
    idr_without_parameter_sets = b"\x00\x00\x00\x01\x26\x01\xaf\x00"
    assert repackager.push(Packet(idr_without_parameter_sets, 0, 0, True)) == []
    assert repackager.dropped_before_keyframe == 1
    assert repackager.track is None


FUZZ_SOURCES = [("matroska", "libx264"), ("mpegts", "libx265"), ("matroska", "libsvtav1")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(FUZZ_SOURCES),
    st.integers(0, 3),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 10**6),
)
def test_fuzz_push_raises_only_value_errors(source_kind, index, edits, cut):
    container, encoder = source_kind
    source = clip(container, Segment(encoder, 4))
    repackager = repackager_for(source)
    for packet in source.packets[:index]:
        repackager.push(packet)
    data = bytearray(source.packets[index].data)
    for position, value in edits:
        data[position % len(data)] = value
    broken = Packet(bytes(data[: max(1, cut % (len(data) + 1))]), 1000, 1000, True)
    try:
        outputs = repackager.push(broken)
    except ValueError:
        return
    for out in outputs:
        assert out.data
