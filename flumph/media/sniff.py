"""Tell Matroska from MPEG-TS by the first bytes of a stream, and find where an MPEG-TS stream
that does not start on a packet boundary does start.

Why resynchronise: ``cat clip.ts | srt-live-transmit file://con srt://…`` sends a file as it is,
and a clip cut with ``dd``/``tail -c`` or a capture joined late starts mid-packet. FFmpeg's own
players skip to the next sync byte run; an ingest that refuses such a stream looks broken.
"""

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


# Starting anywhere but at byte 0 takes more proof: 5 sync bytes 188 apart (4 whole packets). Random
# bytes pass at a given offset with probability 256^-5, so 1316 candidate offsets of a junk
# publisher pass with odds of about 1 in 800 million.
RESYNC_RUN = 5
# How many leading bytes may be skipped: one SRT payload (7 packets) of junk or a partial packet.
MAX_SKIP = 1316
# With this many bytes (or the end of the stream) :func:`locate_stream` always decides.
DECISIVE_BYTES = MAX_SKIP + (RESYNC_RUN - 1) * TS_PACKET_SIZE + 1


def _run_at(head: bytes, offset: int, length: int) -> int | None:
    """How many of the bytes at ``offset`` + k·188 (k < ``length``) have arrived, if all of them
    are sync bytes (fewer than ``length``: the rest has not arrived); None if one is not."""
    count = 0
    for pos in range(offset, min(len(head), offset + length * TS_PACKET_SIZE), TS_PACKET_SIZE):
        if head[pos] != TS_SYNC_BYTE:
            return None
        count += 1
    return count


def locate_stream(head: bytes, *, final: bool = False) -> tuple[Container, int] | None:
    """The container of a stream starting with ``head`` and the offset of its first byte
    (MPEG-TS that starts mid-packet: of its first whole packet), or None if more bytes are needed.

    ``final``: no more bytes will come (the stream or segment ended), so decide now. With at least
    :data:`DECISIVE_BYTES` bytes it always decides. Raises ValueError naming the problem.
    """
    if head.startswith(EBML_MAGIC):
        return "matroska", 0
    if not head or (len(head) < len(EBML_MAGIC) and EBML_MAGIC.startswith(head)):
        if final:
            raise ValueError(f"stream ended after {len(head)} bytes, too short to recognise")
        return None
    # At byte 0, detect_container's rule: sync bytes at 0, 188 and 376 (two when 189..376 bytes).
    run = _run_at(head, 0, 3)
    if run is not None and run >= 2:
        return "mpegts", 0
    if run == 1 and not final:
        return None  # one packet so far
    for offset in range(1, min(len(head), MAX_SKIP + 1)):
        if head[offset] != TS_SYNC_BYTE:
            continue
        run = _run_at(head, offset, RESYNC_RUN)
        if run == RESYNC_RUN:
            return "mpegts", offset
        if run is not None and not final:
            return None  # a run has begun; its proof has not all arrived
    if final and len(head) < DECISIVE_BYTES:
        raise ValueError(
            f"stream ended after {len(head)} bytes without a Matroska header or a run of "
            f"{RESYNC_RUN} MPEG-TS packets (first bytes: '{head[:_SHOWN_BYTES].hex()}')"
        )
    if len(head) <= MAX_SKIP and not final:
        return None
    raise _neither(head)
