"""Agent media code against real codecs: encoder choice, CodecPrivate vs FFmpeg's, live Matroska
read back incrementally by PyAV, the synthetic camera's stamps after compression."""

from __future__ import annotations

import io
import queue
import threading
import time

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from flumph.agent.codecconfig import (
    av1c_from_obus,
    avcc_from_annex_b,
    codec_private,
    hvcc_from_annex_b,
    split_annex_b,
)
from flumph.agent.encoders import HARDWARE, EncoderSelector, VideoEncoder, candidates
from flumph.agent.sources import SyntheticSource, read_stamp, stamp_block_size
from flumph.media.ebml import (
    codec_private_of,
    encode_size,
    iter_elements,
    read_size,
    split_documents,
)
from flumph.media.matroska_writer import LiveMatroskaWriter, TrackInfo
from flumph.settings import StreamSettings

SMALL = {"width": 320, "height": 180, "fps": 15, "bitrate_kbps": 150}
FAMILY_ENCODER = {"av1": "libsvtav1", "hevc": "libx265", "h264": "libx264"}


def synthetic_frames(n: int, width: int = 320, height: int = 180) -> list[av.VideoFrame]:
    src = SyntheticSource(width, height, 15, seed=7)
    return [src.read(i, 1_700_000_000 + i / 15) for i in range(n)]


def encode_document(codec: str, frames: list[av.VideoFrame], keyint_s: float = 1.0) -> bytes:
    settings = StreamSettings(codec=codec, keyint_s=keyint_s, **SMALL)
    encoder = VideoEncoder(FAMILY_ENCODER[codec], codec, settings)
    writer: LiveMatroskaWriter | None = None
    out = bytearray()
    for i, frame in enumerate(frames):
        packets = encoder.encode(frame)
        assert len(packets) == 1, f"{codec}: {len(packets)} packets for frame {i}"
        p = packets[0]
        if writer is None:
            writer = LiveMatroskaWriter(
                TrackInfo(codec, 320, 180, encoder.codec_private(p.data), 15.0)
            )
        out += writer.write(i * 67, p.keyframe, p.data)
    encoder.close()
    return bytes(out)


def decode_all(document: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(document), "r") as c:
        return list(c.decode(c.streams.video[0]))


# --- encoder choice ---------------------------------------------------------------------------


def test_auto_really_tries_listed_hardware_and_falls_back_to_svt_av1() -> None:
    listed = [name for name in HARDWARE["hevc"] if name in av.codecs_available]
    assert listed, "PyAV lists no hardware HEVC encoder here; nothing to attempt"
    choice = EncoderSelector().open(StreamSettings(codec="auto", **SMALL))
    results = dict((a.encoder, a.result) for a in choice.attempts)
    # No GPU, VAAPI, QSV, AMF or V4L2 M2M device on these machines: each listed one must have been
    # opened for real and failed, in order, before the software fallback.
    for name in listed:
        assert results[name].startswith("failed: "), (name, results[name])
    assert choice.encoder.name == "libsvtav1"
    assert results["libsvtav1"] == "opened"
    assert [a.encoder for a in choice.attempts] == [n for n, _ in candidates("auto")]
    assert "chose libsvtav1 for codec=auto" in choice.reason
    choice.encoder.close()


def test_failed_hardware_is_not_reopened_and_each_codec_has_its_fallback() -> None:
    selector = EncoderSelector()
    for codec, software in FAMILY_ENCODER.items():
        choice = selector.open(StreamSettings(codec=codec, **SMALL))
        assert choice.encoder.name == software
        choice.encoder.close()
    again = selector.open(StreamSettings(codec="hevc", **SMALL))
    skipped = [a for a in again.attempts if a.result.startswith("skipped: failed before")]
    assert skipped, again.attempts
    again.encoder.close()


def test_unknown_codec_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="codec 'vp9'"):
        candidates("vp9")


@pytest.mark.parametrize("codec", ["av1", "hevc"])
def test_frames_marked_intra_by_a_decoder_do_not_force_all_intra(codec: str) -> None:
    # Frames decoded from rawvideo carry pict_type=I; the encoder must not take that as an order.
    raw = b"".join(f.to_ndarray().tobytes() for f in synthetic_frames(20))
    with av.open(io.BytesIO(raw), "r", format="rawvideo",
                 options={"video_size": "320x180", "pixel_format": "yuv420p"}) as c:  # fmt: skip
        decoded = list(c.decode(c.streams.video[0]))
    assert len(decoded) == 20
    assert all(f.pict_type == PictureType.I for f in decoded)
    settings = StreamSettings(codec=codec, keyint_s=4, **SMALL)
    encoder = VideoEncoder(FAMILY_ENCODER[codec], codec, settings)
    keys = [p.keyframe for f in decoded for p in encoder.encode(f)]
    encoder.close()
    assert len(keys) == 20
    assert keys[0] and not any(keys[1:])


# --- CodecPrivate -----------------------------------------------------------------------------


def ffmpeg_codec_private(document: bytes) -> bytes:
    """Remux our stream with FFmpeg's own Matroska muxer and return the CodecPrivate it writes."""
    out = io.BytesIO()
    with av.open(io.BytesIO(document), "r") as src, av.open(out, "w", format="matroska") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0], opaque=True)
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return bytes(codec_private_of(out.getvalue()))


@pytest.mark.parametrize("codec", ["av1", "hevc", "h264"])
def test_codec_private_matches_ffmpeg_and_decodes(codec: str) -> None:
    doc = encode_document(codec, synthetic_frames(20))
    frames = decode_all(doc)
    assert len(frames) == 20
    assert (frames[0].width, frames[0].height) == (320, 180)
    ours, ffmpegs = codec_private_of(doc), ffmpeg_codec_private(doc)
    if codec == "hevc":
        # FFmpeg's Matroska muxer clears array_completeness; ours sets it because parameter sets
        # are never sent in-band (hvc1 semantics). Everything else must be identical.
        masked = bytearray(ours)
        pos = 23
        for _ in range(ours[22]):
            masked[pos] &= 0x7F
            count = int.from_bytes(ours[pos + 1 : pos + 3], "big")
            pos += 3
            for _ in range(count):
                pos += 2 + int.from_bytes(ours[pos : pos + 2], "big")
        assert bytes(masked) == ffmpegs
    else:
        assert ours == ffmpegs


def test_codec_private_from_in_band_headers_equals_extradata_version() -> None:
    settings = StreamSettings(codec="hevc", **SMALL)
    encoder = VideoEncoder("libx265", "hevc", settings)
    from_extradata = codec_private("hevc", encoder.extradata)
    first = encoder.encode(synthetic_frames(1)[0], force_keyframe=True)[0]
    encoder.close()
    # What a hardware encoder without extradata sends: parameter sets in front of the keyframe.
    assert hvcc_from_annex_b(encoder.extradata + first.data) == from_extradata


@pytest.mark.parametrize(
    ("build", "data", "message"),
    [
        (hvcc_from_annex_b, b"\x00\x00\x01\x40\x01\x0c", "HEVC parameter sets missing: SPS, PPS"),
        (avcc_from_annex_b, b"\x00\x00\x01\x67\x64", "H.264 parameter sets missing: PPS"),
        (av1c_from_obus, b"\x12\x00", "no sequence header OBU"),
        (av1c_from_obus, b"\x0a\x0b\x00", "claims 11 bytes but 1 remain"),
        (av1c_from_obus, b"\x08\x00", "sequence header is truncated"),
    ],
)
def test_bad_headers_are_refused_with_the_reason(build, data, message) -> None:
    with pytest.raises(ValueError, match=message):
        build(data)


def test_annex_b_split_keeps_nal_payloads() -> None:
    data = b"\x00\x00\x00\x01\x40\x01\xaa\x00\x00\x01\x42\x01\xbb\xcc"
    assert split_annex_b(data) == [b"\x40\x01\xaa", b"\x42\x01\xbb\xcc"]


# --- live Matroska ----------------------------------------------------------------------------


def test_ebml_sizes_are_minimal_and_round_trip() -> None:
    for size in (0, 1, 126, 127, 16382, 16383, 2**21, 2**35):
        encoded = encode_size(size)
        assert read_size(encoded, 0) == (size, len(encoded))
    assert len(encode_size(126)) == 1 and len(encode_size(127)) == 2
    assert read_size(b"\x01\xff\xff\xff\xff\xff\xff\xff", 0) == (None, 8)
    with pytest.raises(ValueError, match="invalid EBML size byte 0x00"):
        read_size(b"\x00", 0)


def test_stream_must_start_with_a_keyframe() -> None:
    writer = LiveMatroskaWriter(TrackInfo("av1", 320, 180, b"\x81\x00\x0c\x00", 15.0))
    with pytest.raises(ValueError, match="must start with a keyframe"):
        writer.write(0, False, b"\x12\x00")


def test_truncated_matroska_is_refused_naming_the_offset() -> None:
    with pytest.raises(ValueError, match="truncated at offset"):
        list(iter_elements(b"\x1a\x45\xdf"))
    with pytest.raises(ValueError, match="does not start with an EBML header"):
        split_documents(b"\x1f\x43\xb6\x75\xff\xe7\x81\x00")


class BlockingReader(io.RawIOBase):
    """A pipe-like file for PyAV: read() waits for bytes the test feeds in."""

    def __init__(self) -> None:
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._pending = b""
        self._ended = False

    def feed(self, data: bytes | None) -> None:
        self._chunks.put(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._pending:
            if self._ended:
                return 0  # FFmpeg may read again after end of file
            chunk = self._chunks.get(timeout=30)
            if chunk is None:
                self._ended = True
                return 0
            self._pending = chunk
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


@pytest.mark.parametrize("codec", ["av1", "hevc"])
def test_each_frame_is_demuxable_as_soon_as_its_bytes_arrive(codec: str) -> None:
    """A live demuxer (PyAV) gets frame N out of the bytes written for frame N alone."""
    settings = StreamSettings(codec=codec, keyint_s=1, **SMALL)
    encoder = VideoEncoder(FAMILY_ENCODER[codec], codec, settings)
    packets = [encoder.encode(f)[0] for f in synthetic_frames(12)]
    encoder.close()
    writer = LiveMatroskaWriter(
        TrackInfo(codec, 320, 180, encoder.codec_private(packets[0].data), 15.0)
    )
    reader = BlockingReader()
    demuxed: queue.Queue[int] = queue.Queue()

    def demux() -> None:
        with av.open(reader, "r", options={"probesize": "32", "analyzeduration": "0"}) as c:
            for packet in c.demux(c.streams.video[0]):
                if packet.size:
                    demuxed.put(int(packet.pts or 0))

    thread = threading.Thread(target=demux, daemon=True)
    thread.start()
    for i, p in enumerate(packets):
        reader.feed(writer.write(i * 67, p.keyframe, p.data))
        # Nothing else is fed until this frame came out of the demuxer.
        assert demuxed.get(timeout=10) == i * 67
    reader.feed(None)
    thread.join(10)
    assert not thread.is_alive()
    assert writer.overhead_per_frame() < 10, writer.overhead_per_frame()


def test_documents_split_and_decode_separately() -> None:
    frames = synthetic_frames(10)
    first, second = encode_document("av1", frames), encode_document("hevc", frames)
    docs = split_documents(first + second)
    assert docs == [first, second]
    assert [len(decode_all(d)) for d in docs] == [10, 10]


# --- the synthetic camera ---------------------------------------------------------------------


def test_stamps_survive_compression_at_low_bitrate() -> None:
    src = SyntheticSource(320, 180, 15, seed=3)
    wall = 1_700_000_123.456
    frames = [src.read(100 + i, wall + i / 15) for i in range(15)]
    doc = encode_document("av1", frames)
    decoded = decode_all(doc)
    assert len(decoded) == 15
    for i, frame in enumerate(decoded):
        luma = frame.to_ndarray()[:180]
        number, ms = read_stamp(luma.astype(np.uint8))
        assert number == 100 + i
        assert (
            ms == round((wall + i / 15) * 1000) % 2**32
            or abs(ms - (wall + i / 15) * 1000 % 2**32) <= 1
        )


def test_synthetic_camera_moves_and_is_noisy() -> None:
    src = SyntheticSource(320, 180, 15, seed=1)
    a = src.render(0, time.time())
    time.sleep(0.5)
    b = src.render(1, time.time())
    c = src.render(1, time.time())
    h = 180
    # The picture moves between ticks, and even the same instant differs by sensor noise.
    assert np.abs(a[2 * 8 : h].astype(int) - b[2 * 8 : h]).mean() > 1.0
    noise = np.abs(b[2 * 8 : h - 30].astype(int) - c[2 * 8 : h - 30])
    assert 0.5 < noise.mean() < 5
    assert stamp_block_size(320) == 8 and stamp_block_size(640) == 16
    with pytest.raises(ValueError, match="must be even"):
        src.configure(321, 180, 15)
