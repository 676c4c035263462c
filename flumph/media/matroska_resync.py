"""Where a live Matroska stream can be read again after bytes were lost: the next Cluster (the
agent's writer starts one at each keyframe) or the next EBML header (a new document). Pure bytes;
used by :meth:`flumph.media.matroska_reader.MatroskaReader.resync`."""

from __future__ import annotations

from flumph.media.ebml import CLUSTER_ID, EBML_ID, TIMESTAMP_ID, encode_id

_EBML_ID_BYTES = encode_id(EBML_ID)
_CLUSTER_ID_BYTES = encode_id(CLUSTER_ID)
_TIMESTAMP_ID_BYTES = encode_id(TIMESTAMP_ID)


def resume_point(data: bytes, *, cluster_ok: bool) -> int | None:
    """The offset of the first EBML header, or (``cluster_ok``) of the first Cluster whose size is
    followed by its Timestamp, in ``data``. A negative offset -n: a Cluster ID in the last n bytes
    still needs the bytes after it to be checked. None: neither is there."""
    search = 0
    while True:
        ebml = data.find(_EBML_ID_BYTES, search)
        cluster = data.find(_CLUSTER_ID_BYTES, search) if cluster_ok else -1
        if cluster < 0 or 0 <= ebml < cluster:
            return ebml if ebml >= 0 else None
        # Four bytes of payload can look like a Cluster ID (1 in 2^32); its size and the Timestamp
        # that the writer puts first make a false start vanishingly rare.
        size_at = cluster + len(_CLUSTER_ID_BYTES)
        if size_at >= len(data):
            return cluster - len(data)
        length = _vint_length(data[size_at])
        ts_at = size_at + length
        if length and ts_at < len(data):
            if data.startswith(_TIMESTAMP_ID_BYTES, ts_at):
                return cluster
        elif length:
            return cluster - len(data)
        search = cluster + 1


def _vint_length(first: int) -> int:
    """Bytes in an EBML variable-size integer that starts with ``first``; 0 if none is valid."""
    for length in range(1, 9):
        if first & (0x80 >> (length - 1)):
            return length
    return 0


def is_ebml_header(data: bytes, at: int) -> bool:
    return data.startswith(_EBML_ID_BYTES, at)
