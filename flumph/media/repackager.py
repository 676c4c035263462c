"""Demuxed packets (bytes + ints) in, fMP4 init segments and one-frame fragments out.

No frame is ever held back: a sample's duration is estimated from the previous dts delta
instead of waiting for the next frame (the timeline: :mod:`.timeline`; what a sample of each codec
carries: :mod:`.samples`).

Per frame the hot path does integer arithmetic only (no Fraction) and copies the payload once, into
the fragment: a length-prefixed H.264/H.265 or sized-OBU AV1 frame that needs no rewriting is
passed through as given (a memoryview is fine), behind a moof patched from a template.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from flumph.media import bitstream as bs
from flumph.media.fmp4 import VideoTrack, fragment_header, init_segment
from flumph.media.samples import (
    AV1_DROPPED,
    AV1_FRAME_OBUS,
    H264_DROPPED,
    HEVC_DROPPED,
    ParameterSets,
    av1_passes_through,
    h26x_passes_through,
    normalize_codec,
)
from flumph.media.timeline import Timeline


# Packet and Fragment are made once per frame: NamedTuples, built several times faster than
# frozen dataclasses (whose __init__ goes through object.__setattr__ field by field).
class Packet(NamedTuple):
    data: bytes | memoryview  # a memoryview is read, never kept beyond push()
    pts: int | None
    dts: int | None
    keyframe: bool


@dataclass(frozen=True)
class InitSegment:
    data: bytes
    track: VideoTrack


class Fragment(NamedTuple):
    data: bytes
    keyframe: bool
    dts: int
    timescale: int
    size: int  # sample bytes, without the moof/mdat overhead
    duration: int


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
        self._timeline = Timeline()
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
        self._timeline.rebase(time_base, fps_hint)
        self.timescale = self._timeline.timescale
        self._length_size: int | None = None  # None: packets are Annex B
        self._params = ParameterSets(self.codec)
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
        self._timeline.restart()
        self._need_keyframe = True
        if codec is None:
            return
        if width is None or height is None or time_base is None:
            raise ValueError("reset_source(codec=...) also needs width, height and time_base")
        self._configure(codec, extradata, width, height, time_base, fps_hint)

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
        # Identity first: the dataclass comparison (the codec record's bytes) on every frame
        # was 3 % of the per-frame cost.
        changed = track is not self._emitted and track != self._emitted
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
        if self._length_size == 4 and h26x_passes_through(self.codec, pkt.data):
            return pkt.data
        data = bytes(pkt.data)
        if self._length_size is None:
            nals = bs.split_annexb(data)
        else:
            nals = bs.split_length_prefixed(data, self._length_size)
        dropped = H264_DROPPED if self.codec == "h264" else HEVC_DROPPED
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

    def _av1_sample(self, raw: bytes | memoryview) -> bytes | memoryview:
        if av1_passes_through(raw, self._av1_sequence_header):
            return raw
        data = bytes(raw)
        obus = bs.split_obus(data)
        kept: list[bytes] = []
        for obu in obus:
            if obu.obu_type in AV1_DROPPED:
                continue
            if obu.obu_type == bs.OBU_SEQUENCE_HEADER and obu.raw != self._av1_sequence_header:
                self._av1_sequence_header = obu.raw
                self._av1_changed = True
            # Sequence headers stay in the sample too: decoders expect one at each key frame.
            has_size = bool(obu.raw[0] & 0x02)
            kept.append(
                obu.raw if has_size else bs.obu_bytes(obu.obu_type, obu.payload, obu.extension)
            )
        if not any(obu.obu_type in AV1_FRAME_OBUS for obu in obus):
            return b""
        return b"".join(kept)

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

    def _fragment(self, sample_data: bytes | memoryview, pkt: Packet) -> Fragment:
        out_dts, out_pts, duration = self._timeline.stamps(pkt.pts, pkt.dts)
        size = len(sample_data)
        head = fragment_header(
            self._sequence, out_dts, duration, size, pkt.keyframe, out_pts - out_dts
        )
        data = b"".join((head, sample_data))
        self._sequence = self._sequence % 0xFFFFFFFF + 1
        self._timeline.advance(out_dts, duration)
        self.fragments += 1
        return Fragment(
            data=data,
            keyframe=pkt.keyframe,
            dts=out_dts,
            timescale=self.timescale,
            size=size,
            duration=duration,
        )
