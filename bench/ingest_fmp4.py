"""Just enough ISO-BMFF reading to identify what a viewer received: the init segment's timescale and
each fragment's decode time and sync flag. Pure bytes in, values out."""

from __future__ import annotations

import struct
from collections.abc import Iterator

_SAMPLE_IS_NON_SYNC = 0x00010000


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise ValueError(f"box {kind!r} at offset {pos}: truncated 64-bit size")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {kind!r} at offset {pos}: size {size} does not fit")
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    for k, s, e in boxes(data, start, end):
        if k == kind:
            return s, e
    raise ValueError(f"no {kind.decode()} box")


def _path(data: bytes, *kinds: bytes) -> tuple[int, int]:
    start, end = 0, len(data)
    for kind in kinds:
        start, end = _child(data, start, end, kind)
    return start, end


def init_timescale(init: bytes) -> int:
    """The first track's media timescale (moov/trak/mdia/mdhd)."""
    s, _ = _path(init, b"moov", b"trak", b"mdia", b"mdhd")
    version = init[s]
    offset = s + (4 + 16 if version == 1 else 4 + 8)
    return int(struct.unpack_from(">I", init, offset)[0])


def fragment_info(fragment: bytes) -> tuple[int, bool]:
    """(baseMediaDecodeTime, first sample is a sync sample) of a moof+mdat fragment."""
    traf_s, traf_e = _path(fragment, b"moof", b"traf")
    decode_time = 0
    default_flags: int | None = None
    first_flags: int | None = None
    for kind, s, e in boxes(fragment, traf_s, traf_e):
        if kind == b"tfdt":
            if fragment[s] == 1:
                (decode_time,) = struct.unpack_from(">Q", fragment, s + 4)
            else:
                (decode_time,) = struct.unpack_from(">I", fragment, s + 4)
        elif kind == b"tfhd":
            default_flags = _tfhd_default_flags(fragment, s, e)
        elif kind == b"trun" and first_flags is None:
            first_flags = _trun_first_flags(fragment, s)
    flags = first_flags if first_flags is not None else default_flags
    # Without tfhd/trun flags the defaults live in the init's trex: treat the sample as sync.
    return int(decode_time), not (flags or 0) & _SAMPLE_IS_NON_SYNC


def _tfhd_default_flags(data: bytes, s: int, e: int) -> int | None:
    (tf_flags,) = struct.unpack_from(">I", data, s)
    tf_flags &= 0xFFFFFF
    pos = s + 8  # version+flags, track_ID
    if tf_flags & 0x01:
        pos += 8  # base_data_offset
    if tf_flags & 0x02:
        pos += 4  # sample_description_index
    if tf_flags & 0x08:
        pos += 4  # default_sample_duration
    if tf_flags & 0x10:
        pos += 4  # default_sample_size
    if tf_flags & 0x20 and pos + 4 <= e:
        return int(struct.unpack_from(">I", data, pos)[0])
    return None


def _trun_first_flags(data: bytes, s: int) -> int | None:
    (tr_flags,) = struct.unpack_from(">I", data, s)
    tr_flags &= 0xFFFFFF
    (count,) = struct.unpack_from(">I", data, s + 4)
    pos = s + 8
    if tr_flags & 0x001:
        pos += 4  # data_offset
    if tr_flags & 0x004:
        return int(struct.unpack_from(">I", data, pos)[0])  # first_sample_flags
    if tr_flags & 0x400 and count:
        pos += 4 * bool(tr_flags & 0x100) + 4 * bool(tr_flags & 0x200)
        return int(struct.unpack_from(">I", data, pos)[0])
    return None


class BoxStream:
    """Cuts a byte stream (ffmpeg's stdout) into init segment and moof+mdat fragments."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending_moof: bytes | None = None
        self._init = bytearray()
        self.init: bytes | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Feed bytes; returns the fragments completed by them."""
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= 8:
            size, kind = struct.unpack_from(">I4s", self._buffer, 0)
            if size == 1:
                if len(self._buffer) < 16:
                    break
                (size,) = struct.unpack_from(">Q", self._buffer, 8)
            if size < 8:
                raise ValueError(f"box {kind!r} with size {size} in the stream")
            if len(self._buffer) < size:
                break
            box = bytes(self._buffer[:size])
            del self._buffer[:size]
            if kind == b"moof":
                self._pending_moof = box
            elif kind == b"mdat" and self._pending_moof is not None:
                out.append(self._pending_moof + box)
                self._pending_moof = None
            elif self.init is None and kind in (b"ftyp", b"moov"):
                self._init += box
                if kind == b"moov":
                    self.init = bytes(self._init)
        return out
