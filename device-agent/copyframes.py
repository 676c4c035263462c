"""Forwarding a coded stream untouched: demuxed packets -> what our live Matroska carries. Pure.

A source that already carries H.264/H.265/AV1 (an RTSP camera, a phone's camera app, a V4L2 camera
with its own encoder, a file) is forwarded frame by frame. Two things must still be done to each
packet, and they are done here, without a decoder:

* **Parameter sets move to the track's config record.** Our Matroska names H.265 ``hvc1`` (the
  ingest's codec string), whose parameter sets live only in the sample entry, so the VPS/SPS/PPS
  that cameras repeat before each keyframe are taken out of the frame. They come from the source's
  extradata (an RTSP ``sprop-*`` line gives Annex B sets; an MP4/Matroska file gives an avcC/hvcC
  record and length-prefixed packets) or, when it has none (a V4L2 camera), from the first
  keyframe. Sets that differ from the record in force (a camera that changed its resolution) make
  a new record, and the caller starts a new Matroska document at that keyframe.
* **Bytes nobody needs are dropped**: access unit delimiters (6 bytes a frame from x264, most IP
  cameras) and filler data. SEI is kept (it may carry timing or captions).

The record layouts and the NAL/OBU parsing are :mod:`flumph.media.bitstream`'s (shared with the
ingest); this module only decides what goes where.

:class:`SourceClock` turns the source's presentation times into the agent's millisecond timeline,
the one the encode path stamps frames with, so a viewer sees one continuous clock across source
restarts, file loops and a source clock that jumps.
"""

from __future__ import annotations

from dataclasses import dataclass

from flumph.agent.codecconfig import avcc_from_annex_b, hvcc_from_annex_b
from flumph.media import bitstream as bs
from flumph.media.matroska_header import AV1, H264, HEVC

# What the ingest turns into fMP4 (flumph.media.codecstring); anything else must be transcoded.
PASSABLE_CODECS = (H264, HEVC, AV1)

_PARAMETER_SETS = {
    H264: (bs.H264_NAL_SPS, bs.H264_NAL_PPS),
    HEVC: (bs.HEVC_NAL_VPS, bs.HEVC_NAL_SPS, bs.HEVC_NAL_PPS),
}
_DROPPED = {
    H264: frozenset({bs.H264_NAL_AUD, bs.H264_NAL_FILLER}),
    HEVC: frozenset({bs.HEVC_NAL_AUD, bs.HEVC_NAL_FILLER}),
}
_NAL_TYPE = {H264: bs.h264_nal_type, HEVC: bs.hevc_nal_type}
_RECORD_VERSION = 1  # first byte of an avcC/hvcC record (Annex B starts with 0x00)
_AV1C_MARKER = 0x81

ParameterSets = dict[int, tuple[bytes, ...]]  # NAL type -> the sets of that type, in order
# More distinct sets of one kind than any stream may hold (H.264: 32 SPS, 256 PPS; H.265: 16 VPS,
# 16 SPS, 64 PPS) is not a camera: refused, so a hostile source cannot grow the record unbounded.
MAX_SETS_PER_KIND = 256


@dataclass(frozen=True)
class Shaped:
    data: bytes  # Annex B (H.264/H.265) or OBUs (AV1) for LiveMatroskaWriter; b"": no picture
    new_config: bool  # the config record changed at this packet: start a new document
    dropped_bytes: int  # parameter sets, delimiters and filler left out


class CopyShaper:
    """One source session's packets -> Matroska frame payloads and the current config record.

    ``config`` is None until parameter sets are known (from extradata or a keyframe); frames
    before that cannot be forwarded. Raises ValueError for a packet that cannot be parsed.
    """

    def __init__(self, codec: str, extradata: bytes) -> None:
        if codec not in PASSABLE_CODECS:
            raise ValueError(f"codec {codec!r} cannot be forwarded (one of h264, hevc, av1)")
        self.codec = codec
        self.config: bytes | None = None
        self.width = self.height = 0
        self._sets: ParameterSets = {}
        self._length_size: int | None = None  # set when packets are length-prefixed (from files)
        self._av1_sequence: bytes | None = None
        if codec == AV1:
            self._init_av1(extradata)
        elif extradata[:1] == bytes([_RECORD_VERSION]):
            self._init_record(extradata)
        elif extradata:
            self._adopt(self._parameter_sets(bs.split_annexb(extradata)))

    # --- H.264 / H.265 ----------------------------------------------------------------------

    def _init_record(self, record: bytes) -> None:
        if self.codec == H264:
            avc = bs.parse_avcc(record)
            sets: ParameterSets = {bs.H264_NAL_SPS: avc.sps, bs.H264_NAL_PPS: avc.pps}
            self._length_size = avc.length_size
        else:
            hevc = bs.parse_hvcc(record)
            sets = {t: tuple(hevc.nals_of_type(t)) for t in _PARAMETER_SETS[HEVC]}
            self._length_size = hevc.length_size
        self._sets = {t: nals for t, nals in sets.items() if nals}
        self.config = record  # the source's own record, kept byte for byte
        self._read_size()

    def _parameter_sets(self, nals: list[bytes]) -> ParameterSets:
        nal_type = _NAL_TYPE[self.codec]
        found: dict[int, list[bytes]] = {}
        for nal in nals:
            kind = nal_type(nal)
            if kind in _PARAMETER_SETS[self.codec] and nal not in found.setdefault(kind, []):
                found[kind].append(nal)
        for kind, sets in found.items():
            if len(sets) > MAX_SETS_PER_KIND:
                raise ValueError(
                    f"{len(sets)} parameter sets of NAL type {kind} in one packet "
                    f"(at most {MAX_SETS_PER_KIND})"
                )
        return {kind: tuple(sets) for kind, sets in found.items() if sets}

    def _adopt(self, inband: ParameterSets) -> bool:
        """Take parameter sets seen in the stream; True if the config record changed."""
        merged = {**self._sets, **inband}  # a kind the packet lacks keeps the record's sets
        if merged == self._sets and self.config is not None:
            return False
        if any(kind not in merged for kind in _PARAMETER_SETS[self.codec]):
            self._sets = merged  # incomplete: wait for the rest (a later keyframe)
            return False
        annexb = bs.to_annexb(n for kind in _PARAMETER_SETS[self.codec] for n in merged[kind])
        build = avcc_from_annex_b if self.codec == H264 else hvcc_from_annex_b
        config = build(annexb)
        changed = config != self.config
        self.config, self._sets = config, merged
        self._read_size()
        return changed

    def _read_size(self) -> None:
        if self.codec == H264:
            sps = bs.parse_h264_sps(self._sets[bs.H264_NAL_SPS][0])
            self.width, self.height = sps.width, sps.height
        elif self.codec == HEVC:
            hsps = bs.parse_hevc_sps(self._sets[bs.HEVC_NAL_SPS][0])
            self.width, self.height = hsps.width, hsps.height

    def _split(self, packet: bytes) -> list[bytes]:
        if self._length_size is not None:
            return bs.split_length_prefixed(packet, self._length_size)
        return bs.split_annexb(packet)

    # --- AV1 --------------------------------------------------------------------------------

    def _init_av1(self, extradata: bytes) -> None:
        if extradata[:1] == bytes([_AV1C_MARKER]):
            self._adopt_av1(bs.parse_av1c(extradata).config_obus, record=extradata)
        elif extradata:
            self._adopt_av1(extradata)

    def _adopt_av1(self, obus: bytes, record: bytes | None = None) -> bool:
        header = bs.find_sequence_header(bs.split_obus(obus))
        if header is None or header.payload == self._av1_sequence:
            return False
        seq = bs.parse_av1_sequence_header(header.payload)
        self.config = record or bs.av1c_from_sequence_header(obus)
        self._av1_sequence = header.payload
        self.width, self.height = seq.max_width, seq.max_height
        return True

    # --- packets ----------------------------------------------------------------------------

    def shape(self, packet: bytes, keyframe: bool) -> Shaped:
        if self.codec == AV1:
            # In-band sequence headers may stay (Matroska allows them when they match av1C).
            return Shaped(packet, self._adopt_av1(packet) if keyframe else False, 0)
        nals = self._split(packet)
        if not nals:
            raise ValueError(f"a {self.codec} packet of {len(packet)} bytes holds no NAL unit")
        nal_type = _NAL_TYPE[self.codec]
        left_out = _DROPPED[self.codec].union(_PARAMETER_SETS[self.codec])
        kept = [n for n in nals if nal_type(n) not in left_out]
        changed = False
        if len(kept) != len(nals):
            inband = self._parameter_sets(nals)
            if inband:
                changed = self._adopt(inband)
        data = bs.to_annexb(kept)
        return Shaped(data, changed, max(0, len(packet) - len(data)))


@dataclass
class SourceClock:
    """Source presentation times (seconds) -> the agent's timeline (integer ms).

    The first timed packet lands at ``origin_ms`` (or one frame after the last stamp, when the
    clock continues across a source restart); later ones follow the source's own spacing, so
    network jitter never reaches the viewer. A packet without a time is one frame after the
    previous one. A jump backwards of more than ``max_back_s`` (a file looping, a camera
    restarting its clock) or forwards of more than ``max_gap_s`` re-anchors one frame after the
    last stamp; smaller steps backwards are B-frame reordering and are kept.
    """

    origin_ms: int
    frame_ms: float = 1000 / 30
    max_back_s: float = 1.0
    max_gap_s: float = 5.0
    _anchor: tuple[float, float] | None = None  # (source seconds, agent ms)
    _last_ms: int | None = None
    _last_pts: float | None = None

    def _next_ms(self) -> float:
        return self.origin_ms if self._last_ms is None else self._last_ms + self.frame_ms

    def restart(self) -> None:
        """The source's clock starts over (a reconnect): continue one frame after the last."""
        self._anchor = self._last_pts = None

    def stamp(self, pts_s: float | None) -> int:
        if pts_s is None:
            ms = round(self._next_ms())
        else:
            last = self._last_pts
            jumped = last is not None and not -self.max_back_s <= pts_s - last <= self.max_gap_s
            if self._anchor is None or jumped:
                self._anchor = (pts_s, self._next_ms())
            ms = round(self._anchor[1] + (pts_s - self._anchor[0]) * 1000)
            self._last_pts = pts_s
        self._last_ms = ms
        return ms
