"""EBML, the binary layout under Matroska/WebM: element IDs and sizes, written and read. Pure bytes.

Also the whole-buffer helpers the agent's tests and benches use on finished documents (walk the
elements, split a concatenation of documents, find CodecPrivate). The incremental reader for live
streams is ``flumph.media.matroska_reader``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# Element IDs (with their length marker bits, as written on the wire).
EBML_ID = 0x1A45DFA3
SEGMENT_ID = 0x18538067
SEEKHEAD_ID = 0x114D9B74
INFO_ID = 0x1549A966
TRACKS_ID = 0x1654AE6B
CLUSTER_ID = 0x1F43B675
CUES_ID = 0x1C53BB6B
CHAPTERS_ID = 0x1043A770
TAGS_ID = 0x1254C367
ATTACHMENTS_ID = 0x1941A469
TIMESTAMP_ID = 0xE7
SIMPLEBLOCK_ID = 0xA3
BLOCKGROUP_ID = 0xA0
VOID_ID = 0xEC
CRC32_ID = 0xBF

UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def encode_id(element_id: int) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")


def encode_size(size: int) -> bytes:
    """The shortest EBML variable-size integer for ``size`` (all-ones patterns are reserved)."""
    for length in range(1, 9):
        if size < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | size).to_bytes(length, "big")
    raise ValueError(f"EBML size {size} too large")


def element(element_id: int, payload: bytes) -> bytes:
    return encode_id(element_id) + encode_size(len(payload)) + payload


def uint_element(element_id: int, value: int) -> bytes:
    return element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def str_element(element_id: int, value: str) -> bytes:
    return element(element_id, value.encode("utf-8"))


def read_id(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise ValueError(f"EBML element ID truncated at offset {pos}")
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if first == 0 or length > 4:
        raise ValueError(f"invalid EBML element ID byte 0x{first:02x} at offset {pos}")
    if pos + length > len(data):
        raise ValueError(f"EBML element ID truncated at offset {pos}")
    return int.from_bytes(data[pos : pos + length], "big"), pos + length


def read_size(data: bytes, pos: int) -> tuple[int | None, int]:
    """(size or None for unknown, position after it)."""
    if pos >= len(data):
        raise ValueError(f"EBML size truncated at offset {pos}")
    first = data[pos]
    if first == 0:
        raise ValueError(f"invalid EBML size byte 0x00 at offset {pos}")
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        raise ValueError(f"EBML size truncated at offset {pos}")
    value = int.from_bytes(data[pos : pos + length], "big") & ((1 << (7 * length)) - 1)
    if value == (1 << (7 * length)) - 1:
        return None, pos + length
    return value, pos + length


def parse_header(
    buf: bytes | memoryview, pos: int, offset: int
) -> tuple[int, int | None, int] | None:
    """(ID, size or None if unknown, header length) at ``pos``, or None if the bytes end first."""
    n = len(buf)
    if pos >= n:
        return None
    first = buf[pos]
    if first >= 0x80:  # the common one-byte IDs (SimpleBlock, Timestamp, Void)
        id_len = 1
        element_id = first
    else:
        id_len = 9 - first.bit_length()
        if first == 0 or id_len > 4:
            raise ValueError(f"invalid EBML element ID byte 0x{first:02x} at offset {offset}")
        if pos + id_len > n:
            return None
        element_id = int.from_bytes(buf[pos : pos + id_len], "big")
    p = pos + id_len
    if p >= n:
        return None
    first = buf[p]
    if first == 0:
        raise ValueError(f"invalid EBML size byte 0x00 at offset {offset + id_len}")
    size_len = 9 - first.bit_length()
    if p + size_len > n:
        return None
    value = int.from_bytes(buf[p : p + size_len], "big") & ((1 << (7 * size_len)) - 1)
    size = None if value == (1 << (7 * size_len)) - 1 else value
    return element_id, size, id_len + size_len


def parse_vint(buf: bytes | memoryview, pos: int) -> tuple[int, int] | None:
    """(value, position after) of an EBML variable-size integer, None if invalid or cut off."""
    if pos >= len(buf) or buf[pos] == 0:
        return None
    length = 9 - buf[pos].bit_length()
    if pos + length > len(buf):
        return None
    value = int.from_bytes(buf[pos : pos + length], "big") & ((1 << (7 * length)) - 1)
    return value, pos + length


@dataclass(frozen=True)
class Element:
    id: int
    start: int  # offset of the ID
    data_start: int
    size: int | None  # None: unknown size (a live Segment or Cluster)


_MASTER_IDS = {SEGMENT_ID, CLUSTER_ID}


def iter_elements(data: bytes) -> Iterator[Element]:
    """Every element in document order, descending into Segment and Cluster (sized or not)."""
    pos = 0
    while pos < len(data):
        element_id, p = read_id(data, pos)
        size, p = read_size(data, p)
        yield Element(element_id, pos, p, size)
        if element_id in _MASTER_IDS:
            pos = p  # descend: children follow
        elif size is None:
            raise ValueError(f"element 0x{element_id:X} at offset {pos} has unknown size")
        else:
            pos = p + size


def split_documents(data: bytes) -> list[bytes]:
    """Cut a concatenation of live Matroska streams at each EBML header."""
    starts = [e.start for e in iter_elements(data) if e.id == EBML_ID]
    if not starts or starts[0] != 0:
        raise ValueError("data does not start with an EBML header")
    return [data[s:e] for s, e in zip(starts, [*starts[1:], len(data)], strict=True)]


def codec_private_of(document: bytes) -> bytes:
    for e in iter_elements(document):
        if e.id == TRACKS_ID and e.size is not None:
            tracks = document[e.data_start : e.data_start + e.size]
            return _find_child(_find_child(tracks, 0xAE), 0x63A2)
    raise ValueError("no Tracks element")


def _find_child(data: bytes, wanted: int) -> bytes:
    pos = 0
    while pos < len(data):
        element_id, p = read_id(data, pos)
        size, p = read_size(data, p)
        if size is None:
            raise ValueError(f"element 0x{element_id:X} has unknown size inside Tracks")
        if element_id == wanted:
            return data[p : p + size]
        pos = p + size
    raise ValueError(f"element 0x{wanted:X} not found")
