"""Demuxed packets (bytes + ints) in, fMP4 init segments and one-frame fragments out.

No frame is ever held back: a sample's duration is estimated from the previous dts delta
instead of waiting for the next frame.

Per frame the hot path does integer arithmetic only (no Fraction) and copies the payload once, into
the fragment: a length-prefixed H.264/H.265 or sized-OBU AV1 frame that needs no rewriting is
passed through as given (a memoryview is fine), behind a moof patched from a template.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from flumph.media import bitstream as bs
from flumph.media.fmp4 import VideoTrack, fragment_header, init_segment

CodecName = Literal["av1", "hevc", "h264"]

# PyAV names streams by decoder: AV1 from Matroska arrives as "libdav1d".
_CODEC_ALIASES: dict[str, CodecName] = {
    "av1": "av1",
    "libdav1d": "av1",
    "libaom-av1": "av1",
    "hevc": "hevc",
    "h265": "hevc",
    "h264": "h264",
}
DEFAULT_TIMESCALE = 90000
DEFAULT_FPS = 30
# A dts jump larger than these (seconds) is a discontinuity (a restarted or broken source
# clock): the output timeline carries on as if one frame had passed. A smaller step back is
# B-frame reordering whose first dts the demuxer could not know (Matroska has no dts).
MAX_TIMESTAMP_GAP = Fraction(10)
MAX_REORDER_STEP = Fraction(1)

_H264_DROPPED = frozenset({bs.H264_NAL_AUD, bs.H264_NAL_FILLER})
_HEVC_DROPPED = frozenset({bs.HEVC_NAL_AUD, bs.HEVC_NAL_FILLER})
_AV1_DROPPED = frozenset({bs.OBU_TEMPORAL_DELIMITER, bs.OBU_PADDING})
_AV1_FRAME_OBUS = frozenset({bs.OBU_FRAME, bs.OBU_FRAME_HEADER, bs.OBU_TILE_GROUP})
# NAL unit types a sample never carries: dropped, or moved into avcC/hvcC.
_H264_MOVED = _H264_DROPPED | {bs.H264_NAL_SPS, bs.H264_NAL_PPS}
_HEVC_MOVED = _HEVC_DROPPED | {bs.HEVC_NAL_VPS, bs.HEVC_NAL_SPS, bs.HEVC_NAL_PPS}


@dataclass(frozen=True)
class Packet:
    data: bytes | memoryview  # a memoryview is read, never kept beyond push()
    pts: int | None
    dts: int | None
    keyframe: bool


@dataclass(frozen=True)
class InitSegment:
    data: bytes
    track: VideoTrack


@dataclass(frozen=True)
class Fragment:
    data: bytes
    keyframe: bool
    dts: int
    timescale: int
    size: int  # sample bytes, without the moof/mdat overhead
    duration: int


def normalize_codec(name: str) -> CodecName:
    codec = _CODEC_ALIASES.get(name)
    if codec is None:
        raise ValueError(
            f"codec {name} is not supported: Flumph passes through AV1, H.265 and H.264 only"
        )
    return codec


def output_timescale(time_base: Fraction) -> int:
    """1/N time bases map exactly to timescale N; anything else is rounded onto 90 kHz."""
    if time_base <= 0:
        raise ValueError(f"time base {time_base} is not positive")
    if time_base.numerator == 1 and time_base.denominator <= 0xFFFFFFFF:
        return time_base.denominator
    return DEFAULT_TIMESCALE


class _ParameterSets:
    """H.264/H.265 parameter sets by kind and id, as the latest in-band or extradata gave them."""

    def __init__(self, codec: CodecName) -> None:
        self.codec = codec
        self.by_kind: dict[int, dict[int, bytes]] = {}
        self.changed = True

    def kind_of(self, nal: bytes) -> int | None:
        if self.codec == "h264":
            kind = bs.h264_nal_type(nal)
            return kind if kind in (bs.H264_NAL_SPS, bs.H264_NAL_PPS) else None
        kind = bs.hevc_nal_type(nal)
        return kind if kind in (bs.HEVC_NAL_VPS, bs.HEVC_NAL_SPS, bs.HEVC_NAL_PPS) else None

    def _id_of(self, kind: int, nal: bytes) -> int:
        if self.codec == "h264":
            if kind == bs.H264_NAL_SPS:
                return bs.parse_h264_sps(nal).sps_id
            return bs.h264_pps_id(nal)
        if kind == bs.HEVC_NAL_VPS:
            return bs.hevc_vps_id(nal)
        if kind == bs.HEVC_NAL_SPS:
            return bs.parse_hevc_sps(nal).sps_id
        return bs.hevc_pps_id(nal)

    def store(self, kind: int, nal: bytes) -> None:
        table = self.by_kind.setdefault(kind, {})
        ident = self._id_of(kind, nal)
        if table.get(ident) != nal:
            table[ident] = nal
            self.changed = True

    def ordered(self, kind: int) -> list[bytes]:
        table = self.by_kind.get(kind, {})
        return [table[ident] for ident in sorted(table)]

    def config(self) -> tuple[bytes, int, int] | None:
        """(record, width, height), or None while a needed parameter set is missing."""
        if self.codec == "h264":
            sps, pps = self.ordered(bs.H264_NAL_SPS), self.ordered(bs.H264_NAL_PPS)
            if not sps or not pps:
                return None
            parsed = bs.parse_h264_sps(sps[0])
            return bs.build_avcc(sps, pps), parsed.width, parsed.height
        vps, sps, pps = (
            self.ordered(bs.HEVC_NAL_VPS),
            self.ordered(bs.HEVC_NAL_SPS),
            self.ordered(bs.HEVC_NAL_PPS),
        )
        if not vps or not sps or not pps:
            return None
        hevc_sps = bs.parse_hevc_sps(sps[0])
        return bs.build_hvcc(vps, sps, pps), hevc_sps.width, hevc_sps.height


class Repackager:
    """Turns one video stream's demuxed packets into fMP4 for MSE.

    Counters: ``dropped_before_keyframe`` counts packets dropped while waiting for a keyframe
    (at the start, after ``reset_source`` and after a mid-GOP config change); ``fragments``
    counts fragments produced.
    """

    def __init__(
        self,
        codec: str,
        extradata: bytes | None,
        width: int,
        height: int,
        time_base: Fraction,
        fps_hint: float | None = None,
    ) -> None:
        self.dropped_before_keyframe = 0
        self.fragments = 0
        self._sequence = 1
        self._emitted: VideoTrack | None = None
        self._last_out_dts: int | None = None
        self._last_duration = 0
        self._in_origin: int | None = None
        self._out_origin = 0
        self._configure(codec, extradata, width, height, time_base, fps_hint)

    # --- configuration ------------------------------------------------------------------------

    def _configure(
        self,
        codec: str,
        extradata: bytes | None,
        width: int,
        height: int,
        time_base: Fraction,
        fps_hint: float | None,
    ) -> None:
        self.codec = normalize_codec(codec)
        if width < 1 or height < 1:
            raise ValueError(f"stream size {width}x{height} is not positive")
        if fps_hint is not None and not fps_hint > 0:
            raise ValueError(f"fps hint {fps_hint} is not positive")
        self._width, self._height = width, height
        self._time_base = Fraction(time_base)
        self.timescale = output_timescale(self._time_base)
        # ticks * num / den on the output timescale, in integers (no Fraction per frame).
        self._scale_num = self._time_base.numerator * self.timescale
        self._scale_den = self._time_base.denominator
        self._max_gap = int(MAX_TIMESTAMP_GAP * self.timescale)
        self._max_back = int(MAX_REORDER_STEP * self.timescale)
        self._fps_hint = fps_hint
        self._length_size: int | None = None  # None: packets are Annex B
        self._params = _ParameterSets(self.codec)
        self._track: VideoTrack | None = None
        self._av1_changed = True
        self._av1_sequence_header: bytes | None = None
        self._av1_record: bytes | None = None
        self._need_keyframe = True
        data = bytes(extradata or b"")
        if self.codec == "av1":
            self._configure_av1(data)
        elif data:
            self._configure_h26x(data)

    def _configure_av1(self, extradata: bytes) -> None:
        if not extradata:
            return
        if extradata[0] == 0x81:
            config = bs.parse_av1c(extradata)
            header = bs.find_sequence_header(bs.split_obus(config.config_obus))
            if header is None:
                # A bare av1C: usable until an in-band sequence header gives the full story.
                self._av1_record = extradata
                return
        else:
            header = bs.find_sequence_header(bs.split_obus(extradata))
            if header is None:
                return
        self._av1_sequence_header = header.raw

    def _configure_h26x(self, extradata: bytes) -> None:
        if extradata[0] == 1:
            if self.codec == "h264":
                avc = bs.parse_avcc(extradata)
                self._length_size = avc.length_size
                nals = list(avc.sps + avc.pps)
            else:
                hevc = bs.parse_hvcc(extradata)
                self._length_size = hevc.length_size
                nals = [nal for array in hevc.arrays for nal in array.nals]
        elif bs.is_annexb(extradata):
            nals = bs.split_annexb(extradata)
        else:
            name = "avcC" if self.codec == "h264" else "hvcC"
            raise ValueError(
                f"{self.codec} extradata is neither an {name} record nor Annex B "
                f"(first bytes: '{extradata[:16].hex()}')"
            )
        for nal in nals:
            kind = self._params.kind_of(nal)
            if kind is not None:
                self._params.store(kind, nal)

    def reset_source(
        self,
        *,
        codec: str | None = None,
        extradata: bytes | None = None,
        width: int | None = None,
        height: int | None = None,
        time_base: Fraction | None = None,
        fps_hint: float | None = None,
    ) -> None:
        """A new publisher session under the same id: its timestamps may restart.

        The next output dts continues from the last output dts + last duration, and output
        waits for a keyframe. With no arguments the stream is assumed to be the same kind as
        before; pass ``codec`` (with the new session's extradata, size and time base, exactly
        as to the constructor) when the new session was demuxed afresh. An init segment is
        sent again only if codec config, size or timescale changed.
        """
        self._in_origin = None
        self._need_keyframe = True
        if codec is None:
            return
        if width is None or height is None or time_base is None:
            raise ValueError("reset_source(codec=...) also needs width, height and time_base")
        old_timescale = self.timescale
        self._configure(codec, extradata, width, height, time_base, fps_hint)
        if self._last_out_dts is not None and self.timescale != old_timescale:
            scale = Fraction(self.timescale, old_timescale)
            self._last_out_dts = round(self._last_out_dts * scale)
            self._last_duration = max(1, round(self._last_duration * scale))

    # --- packets --------------------------------------------------------------------------------

    @property
    def track(self) -> VideoTrack | None:
        """The track of the last init segment sent."""
        return self._emitted

    def push(self, pkt: Packet) -> list[InitSegment | Fragment]:
        if not pkt.data:
            return []  # demuxer flush packets carry nothing
        sample_data = self._av1_sample(pkt.data) if self.codec == "av1" else self._h26x_sample(pkt)
        if not sample_data:
            return []  # only parameter sets / delimiters: absorbed into the config
        track = self._current_track()
        changed = track != self._emitted
        if track is None or ((self._need_keyframe or changed) and not pkt.keyframe):
            self.dropped_before_keyframe += 1
            return []
        out: list[InitSegment | Fragment] = []
        if changed:
            out.append(InitSegment(data=init_segment(track), track=track))
            self._emitted = track
        self._need_keyframe = False
        out.append(self._fragment(sample_data, pkt))
        return out

    def _h26x_sample(self, pkt: Packet) -> bytes | memoryview:
        if self._length_size == 4 and self._h26x_passes_through(pkt.data):
            return pkt.data
        data = bytes(pkt.data)
        if self._length_size is None:
            nals = bs.split_annexb(data)
        else:
            nals = bs.split_length_prefixed(data, self._length_size)
        dropped = _H264_DROPPED if self.codec == "h264" else _HEVC_DROPPED
        type_of = bs.h264_nal_type if self.codec == "h264" else bs.hevc_nal_type
        kept: list[bytes] = []
        for nal in nals:
            nal_type = type_of(nal)
            if nal_type in dropped:
                continue
            kind = self._params.kind_of(nal)
            if kind is not None:
                # Parameter sets move into hvcC/avcC: hvc1/avc1 keep them out of samples.
                self._params.store(kind, nal)
            else:
                kept.append(nal)
        return bs.to_length_prefixed(kept) if kept else b""

    def _h26x_passes_through(self, data: bytes | memoryview) -> bool:
        """True when 4-byte length-prefixed ``data`` is a sample as it stands: whole NAL units,
        none dropped (AUD, filler) nor moved into the config (parameter sets)."""
        h264 = self.codec == "h264"
        moved = _H264_MOVED if h264 else _HEVC_MOVED
        pos, end = 0, len(data)
        while pos < end:
            if pos + 5 > end:
                return False
            size = int.from_bytes(data[pos : pos + 4], "big")
            if size < 2 or pos + 4 + size > end:
                return False
            header = data[pos + 4]
            if (header & 0x1F if h264 else (header >> 1) & 0x3F) in moved:
                return False
            pos += 4 + size
        return pos > 0

    def _av1_sample(self, raw: bytes | memoryview) -> bytes | memoryview:
        if self._av1_passes_through(raw):
            return raw
        data = bytes(raw)
        obus = bs.split_obus(data)
        kept: list[bytes] = []
        for obu in obus:
            if obu.obu_type in _AV1_DROPPED:
                continue
            if obu.obu_type == bs.OBU_SEQUENCE_HEADER and obu.raw != self._av1_sequence_header:
                self._av1_sequence_header = obu.raw
                self._av1_changed = True
            # Sequence headers stay in the sample too: decoders expect one at each key frame.
            has_size = bool(obu.raw[0] & 0x02)
            kept.append(
                obu.raw if has_size else bs.obu_bytes(obu.obu_type, obu.payload, obu.extension)
            )
        if not any(obu.obu_type in _AV1_FRAME_OBUS for obu in obus):
            return b""
        return b"".join(kept)

    def _av1_passes_through(self, data: bytes | memoryview) -> bool:
        """True when ``data`` is a sample as it stands: OBUs with size fields, a frame among them,
        no temporal delimiter or padding, no sequence header other than the one we have."""
        pos, end, frame = 0, len(data), False
        while pos < end:
            header = data[pos]
            if header & 0x80 or not header & 0x02:
                return False
            obu_type = (header >> 3) & 0x0F
            start = pos
            pos += 2 if header & 0x04 else 1
            size = 0
            for shift in range(0, 56, 7):
                if pos >= end:
                    return False
                byte = data[pos]
                pos += 1
                size |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
            else:
                return False
            if pos + size > end or obu_type in _AV1_DROPPED:
                return False
            if obu_type == bs.OBU_SEQUENCE_HEADER and (
                self._av1_sequence_header is None
                or data[start : pos + size] != self._av1_sequence_header
            ):
                return False
            frame = frame or obu_type in _AV1_FRAME_OBUS
            pos += size
        return frame

    def _current_track(self) -> VideoTrack | None:
        """The track the latest parameter sets describe; rebuilt only when they changed."""
        if self.codec == "av1":
            if self._av1_changed:
                self._av1_changed = False
                self._track = self._av1_track()
        elif self._params.changed:
            self._params.changed = False
            config = self._params.config()
            self._track = None if config is None else self._make_track(*config)
        return self._track

    def _av1_track(self) -> VideoTrack | None:
        if self._av1_sequence_header is not None:
            header = bs.split_obus(self._av1_sequence_header)[0]
            seq = bs.parse_av1_sequence_header(header.payload)
            record = bs.av1c_from_sequence_header(self._av1_sequence_header)
            return self._make_track(record, seq.max_width, seq.max_height)
        if self._av1_record is not None:
            return self._make_track(self._av1_record, self._width, self._height)
        return None

    def _make_track(self, record: bytes, width: int, height: int) -> VideoTrack:
        track = VideoTrack(self.codec, width, height, self.timescale, record)
        # Keep the emitted object when nothing changed, so later comparisons are identity.
        return self._emitted if track == self._emitted and self._emitted else track

    # --- timeline -------------------------------------------------------------------------------

    def _rescale(self, ticks: int) -> int:
        # round(ticks * time_base * timescale), half to even as round() does, in integers.
        quotient, remainder = divmod(ticks * self._scale_num, self._scale_den)
        twice = 2 * remainder
        if twice > self._scale_den or (twice == self._scale_den and quotient & 1):
            quotient += 1
        return quotient

    def _default_duration(self) -> int:
        fps = Fraction(self._fps_hint) if self._fps_hint else Fraction(DEFAULT_FPS)
        return max(1, round(self.timescale / fps))

    def _next_dts(self) -> int:
        if self._last_out_dts is None:
            return 0
        return self._last_out_dts + self._last_duration

    def _map(self, ticks: int) -> int:
        assert self._in_origin is not None
        return self._out_origin + self._rescale(ticks - self._in_origin)

    def _timestamps(self, pkt: Packet) -> tuple[int, int, int]:
        """(dts, pts, duration) on the output timeline, which never goes backwards."""
        next_dts = self._next_dts()
        last = self._last_out_dts
        anchor = pkt.dts if pkt.dts is not None else pkt.pts
        if anchor is None:
            return next_dts, next_dts, self._duration(None)
        if self._in_origin is None:
            self._in_origin, self._out_origin = anchor, next_dts
        elif pkt.dts is not None and last is not None:
            step = self._map(pkt.dts) - last
            if step > self._max_gap or -step > self._max_back:
                self._in_origin, self._out_origin = pkt.dts, next_dts
        pts = self._map(pkt.pts if pkt.pts is not None else anchor)
        if pkt.dts is None:
            # Unknown dts (the first frames of a B-frame stream from Matroska): decode now.
            dts = next_dts if last is None else max(last + 1, min(pts, next_dts))
            return dts, pts, self._duration(None)
        dts = self._map(pkt.dts)
        if last is not None and dts <= last:
            return last + 1, pts, self._duration(None)
        return dts, pts, self._duration(None if last is None else dts - last)

    def _duration(self, observed: int | None) -> int:
        if observed is not None:
            return observed
        if self._last_out_dts is not None and self._last_duration:
            return self._last_duration
        return self._default_duration()

    def _fragment(self, sample_data: bytes | memoryview, pkt: Packet) -> Fragment:
        out_dts, out_pts, duration = self._timestamps(pkt)
        size = len(sample_data)
        head = fragment_header(
            self._sequence, out_dts, duration, size, pkt.keyframe, out_pts - out_dts
        )
        data = b"".join((head, sample_data))
        self._sequence = self._sequence % 0xFFFFFFFF + 1
        self._last_out_dts = out_dts
        self._last_duration = duration
        self.fragments += 1
        return Fragment(
            data=data,
            keyframe=pkt.keyframe,
            dts=out_dts,
            timescale=self.timescale,
            size=size,
            duration=duration,
        )
