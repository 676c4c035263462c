"""The MPEG-TS program watcher (pure): cut points where a new PMT starts, on files Debian's
ffmpeg wrote, and never an exception on arbitrary bytes."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flumph.media.tsprogram import TS_PACKET, ProgramWatcher, parse_pmt
from tests.peers import ffmpeg_file


def _crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def bump_pmt_version(ts: bytes, pmt_pid: int = 0x1000, version: int = 1) -> bytes:
    """The same stream with every PMT at another version_number (CRC recomputed): what an
    encoder sends when it changes its program."""
    out = bytearray(ts)
    for pos in range(0, len(out) - TS_PACKET + 1, TS_PACKET):
        pid = ((out[pos + 1] & 0x1F) << 8) | out[pos + 2]
        if pid != pmt_pid or not out[pos + 1] & 0x40:
            continue
        start = pos + 4 + 1 + out[pos + 4]  # no adaptation field in ffmpeg's PSI packets
        length = ((out[start + 1] & 0x0F) << 8) | out[start + 2]
        out[start + 5] = (out[start + 5] & 0xC1) | (version << 1)
        body_end = start + 3 + length - 4
        crc = _crc32_mpeg2(bytes(out[start:body_end]))
        out[body_end : body_end + 4] = crc.to_bytes(4, "big")
    return bytes(out)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("ts")
    return {
        codec: ffmpeg_file(
            tmp / f"{codec}.ts", codec=codec, container="mpegts", seconds=1
        ).read_bytes()
        for codec in ("h264", "hevc")
    }


def first_pmt(ts: bytes, pmt_pid: int = 0x1000) -> int:
    """Offset of the first PMT packet (ffmpeg writes SDT, PAT, PMT at the start of a file)."""
    for pos in range(0, len(ts), TS_PACKET):
        if ((ts[pos + 1] & 0x1F) << 8) | ts[pos + 2] == pmt_pid:
            return pos
    raise AssertionError("no PMT")


def cuts_of(data: bytes, chunk: int) -> list[int]:
    w = ProgramWatcher()
    cuts = []
    for i in range(0, len(data), chunk):
        cuts += [i + c for c in w.feed(data[i : i + chunk])]
    return cuts


@pytest.mark.parametrize("chunk", [1316, 188, 1000, 7])
def test_a_codec_change_is_cut_where_the_new_pmt_starts(
    clips: dict[str, bytes], chunk: int
) -> None:
    a, b = clips["h264"], clips["hevc"]
    assert cuts_of(a, chunk) == []  # repeated PMTs of one program: no cut
    (cut,) = cuts_of(a + b, chunk)
    pmt = len(a) + first_pmt(b)  # the second file's PMT
    if chunk % TS_PACKET == 0:  # SRT messages carry whole packets (1316 = 7 x 188)
        assert cut == pmt
    else:  # a PMT packet split across chunks is cut at the chunk that completes it
        assert pmt <= cut < pmt + TS_PACKET, (cut, pmt)


def test_a_pmt_version_change_is_a_new_program(clips: dict[str, bytes]) -> None:
    a = clips["h264"]
    assert cuts_of(a + bump_pmt_version(a), 1316) == [len(a) + first_pmt(a)]
    w = ProgramWatcher()
    w.feed(a)
    assert w.program is not None and (w.program.version, w.program.video_type) == (0, 0x1B)


def test_pmt_parse_of_ffmpeg_hevc(clips: dict[str, bytes]) -> None:
    w = ProgramWatcher()
    w.feed(clips["hevc"])
    assert w.program is not None and w.program.video_type == 0x24 and w.last_pat is not None


@settings(max_examples=300)
@given(st.binary(max_size=4000), st.integers(1, 2000))
def test_arbitrary_bytes_never_raise_and_keep_little_state(data: bytes, chunk: int) -> None:
    w = ProgramWatcher()
    for i in range(0, len(data), chunk):
        for cut in w.feed(data[i : i + chunk]):
            assert 0 <= cut < chunk
        assert len(w._carry) < TS_PACKET


@given(st.binary(min_size=12, max_size=184))
def test_pmt_parser_never_raises(section: bytes) -> None:
    section = b"\x02" + section[1:]
    try:
        parse_pmt(section)
    except IndexError as e:  # the caller checks lengths first; a short section may not parse
        assert len(section) < 12, e


def test_a_cut_packet_is_a_real_ts_packet(clips: dict[str, bytes]) -> None:
    data = clips["h264"] + clips["hevc"]
    (cut,) = cuts_of(data, 1316)
    assert data[cut] == 0x47 and zlib.crc32(data[cut : cut + TS_PACKET]) != 0
