"""Bit and byte readers shared by the codec parsers, and config-record NAL lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence

_SHOWN_BYTES = 16
_MAX_RECORD_NAL = 0xFFFF  # config records store NAL lengths in 16 bits


# --- Bit reading ----------------------------------------------------------------------------


class BitReader:
    """MSB-first reader over an RBSP; every overrun is a ValueError naming ``what``."""

    def __init__(self, data: bytes, what: str) -> None:
        self._value = int.from_bytes(data, "big")
        self._total = len(data) * 8
        self._pos = 0
        self.what = what

    @property
    def bits_left(self) -> int:
        return self._total - self._pos

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        if self._pos + n > self._total:
            raise ValueError(
                f"{self.what} is truncated: needed {n} more bit(s) at bit {self._pos} "
                f"of {self._total}"
            )
        shift = self._total - self._pos - n
        self._pos += n
        return (self._value >> shift) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self._pos + n > self._total:
            raise ValueError(
                f"{self.what} is truncated: needed {n} more bit(s) at bit {self._pos} "
                f"of {self._total}"
            )
        self._pos += n

    def ue(self, field: str, maximum: int = 0xFFFFFFFE) -> int:
        """Unsigned exp-Golomb, bounded so garbage cannot produce huge values."""
        leading_zeros = 0
        while self.u(1) == 0:
            leading_zeros += 1
            if leading_zeros > 31:
                raise ValueError(f"{self.what}: exp-Golomb code of {field} is longer than 32 bits")
        value = (1 << leading_zeros) - 1 + self.u(leading_zeros)
        if value > maximum:
            raise ValueError(f"{self.what}: {field} = {value} exceeds its maximum {maximum}")
        return value

    def se(self, field: str) -> int:
        code = self.ue(field)
        return (code + 1) // 2 if code % 2 else -(code // 2)

    def uvlc(self, field: str) -> int:
        """AV1 uvlc(): like ue() but saturating at 2**32 - 1."""
        leading_zeros = 0
        while self.u(1) == 0:
            leading_zeros += 1
            if leading_zeros >= 32:
                return (1 << 32) - 1
        return (1 << leading_zeros) - 1 + self.u(leading_zeros)


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (the 0x03 of every 0x000003)."""
    # bytes.replace scans left to right without overlap, which is exactly the rule: the
    # zero count restarts after each removed 0x03.
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


# --- Config records -----------------------------------------------------------------------


def _nal_list_bytes(nals: Sequence[bytes], what: str) -> bytes:
    out = bytearray()
    for nal in nals:
        if not nal or len(nal) > _MAX_RECORD_NAL:
            raise ValueError(f"{what} of {len(nal)} bytes cannot be stored in a config record")
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


class _ByteReader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.left:
            raise ValueError(
                f"{self.what} is truncated: {field} needs {n} byte(s) at offset {self.pos}, "
                f"{self.left} left"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self, n: int, field: str) -> int:
        return int.from_bytes(self.take(n, field), "big")


def _read_record_nal(
    r: _ByteReader, what: str, expected_type: int, type_of: Callable[[bytes], int]
) -> bytes:
    size = r.int(2, f"{what} length")
    nal = r.take(size, what)
    try:
        got: int | str = type_of(nal)
    except ValueError:
        got = "none (too short)"
    if got != expected_type:
        raise ValueError(f"{r.what}: {what} has NAL type {got}, expected {expected_type}")
    return nal
