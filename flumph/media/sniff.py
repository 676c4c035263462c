"""Tell Matroska from MPEG-TS by the first bytes of a stream."""

from __future__ import annotations

from typing import Literal

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
TS_PACKET_SIZE = 188
TS_SYNC_BYTE = 0x47
_SHOWN_BYTES = 16

Container = Literal["matroska", "mpegts"]


def _neither(head: bytes) -> ValueError:
    return ValueError(
        f"stream is neither Matroska nor MPEG-TS (first bytes: '{head[:_SHOWN_BYTES].hex()}')"
    )


def detect_container(head: bytes) -> Container | None:
    """Return the container of a stream starting with ``head``, or None if more bytes are needed.

    MPEG-TS is recognised by the sync byte at the start of three consecutive 188-byte packets
    (two when only 189..376 bytes have arrived), so a stream is classified after one packet.
    """
    if not head:
        return None
    if head[0] == TS_SYNC_BYTE:
        if len(head) <= TS_PACKET_SIZE:
            return None
        for offset in (TS_PACKET_SIZE, 2 * TS_PACKET_SIZE):
            if offset < len(head) and head[offset] != TS_SYNC_BYTE:
                raise _neither(head)
        return "mpegts"
    if head.startswith(EBML_MAGIC):
        return "matroska"
    if len(head) < len(EBML_MAGIC) and EBML_MAGIC.startswith(head):
        return None
    raise _neither(head)
