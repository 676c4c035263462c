"""RFC 6455 frames a server sends (final, unmasked, no extension), built once per fragment so the
same bytes go to every viewer. Pure: bytes in, bytes out."""

from __future__ import annotations

import struct

OP_TEXT, OP_BINARY = 0x1, 0x2
_FIN = 0x80
_LEN16 = struct.Struct(">BBH")
_LEN64 = struct.Struct(">BBQ")


def frame_header(opcode: int, length: int) -> bytes:
    """The header of a final, unmasked frame carrying ``length`` payload bytes (RFC 6455 5.2)."""
    if not 0 <= length < 1 << 63:
        raise ValueError(f"a WebSocket payload of {length} bytes cannot be framed")
    first = _FIN | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return _LEN16.pack(first, 126, length)
    return _LEN64.pack(first, 127, length)


def binary_frame(payload: bytes | memoryview) -> bytes:
    return b"".join((frame_header(OP_BINARY, len(payload)), payload))


def text_frame(text: str) -> bytes:
    data = text.encode()
    return frame_header(OP_TEXT, len(data)) + data
