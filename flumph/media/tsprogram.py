"""Watch an MPEG-TS byte stream for a change of program: bytes in, cut points out.

An encoder that changes codec on a live connection (H.264 then H.265) sends a new PMT: its
``version_number`` goes up, or (two encoder runs spliced, as a restarted OBS or ffmpeg behind
srt-live-transmit does) the video ``stream_type`` or PID changes at the same version. FFmpeg's
demuxer keeps the codec it opened with, so before this watcher the H.265 frames went out labelled
``avc1`` and no browser could decode them. The ingest cuts the stream where the new PMT starts
and opens a new demuxer there (a new fMP4 init segment with the right codec string), the same way
it treats a new EBML header in Matroska.

Pure and incremental: :meth:`ProgramWatcher.feed` takes chunks of any size (TS packets may span
chunks) and returns the offsets, within that chunk, of the packets that start a new program.
Only what the cut needs is parsed: the PAT (which PID carries the PMT) and single-packet PMT
sections (every encoder measured sends them in one packet); anything malformed is ignored, never
raised, so the demuxer remains the one that refuses a broken stream.
"""

from __future__ import annotations

from dataclasses import dataclass

TS_PACKET = 188
SYNC = 0x47
PAT_PID = 0x0000
# stream_type values of video (ISO/IEC 13818-1 table 2-34, and H.264/H.265 amendments).
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xEA})


@dataclass(frozen=True)
class Program:
    """What a PMT says about the video: a change of any of these is a new program."""

    version: int
    video_pid: int | None
    video_type: int | None


def _psi_section(packet: bytes) -> bytes | None:
    """The section that starts in this packet (payload_unit_start set), or None."""
    if len(packet) != TS_PACKET or packet[0] != SYNC or not packet[1] & 0x40:
        return None
    afc = (packet[3] >> 4) & 0x3
    pos = 4
    if afc & 0x2:
        pos += 1 + packet[4]
    if not afc & 0x1 or pos >= TS_PACKET:
        return None
    pointer = packet[pos]
    start = pos + 1 + pointer
    if start + 3 > TS_PACKET:
        return None
    length = ((packet[start + 1] & 0x0F) << 8) | packet[start + 2]
    end = start + 3 + length
    if end > TS_PACKET or length < 9:
        return None  # spans packets, or too short to be a PAT/PMT
    return packet[start:end]


def parse_pat(section: bytes) -> int | None:
    """The PMT PID of the first program in a PAT section."""
    if section[0] != 0x00:
        return None
    for i in range(8, len(section) - 4 - 3, 4):
        program = (section[i] << 8) | section[i + 1]
        if program != 0:
            return ((section[i + 2] & 0x1F) << 8) | section[i + 3]
    return None


def parse_pmt(section: bytes) -> Program | None:
    """Version and first video stream of a PMT section."""
    if section[0] != 0x02:
        return None
    version = (section[5] >> 1) & 0x1F
    info_length = ((section[10] & 0x0F) << 8) | section[11]
    i = 12 + info_length
    end = len(section) - 4  # CRC_32
    while i + 5 <= end:
        stream_type = section[i]
        pid = ((section[i + 1] & 0x1F) << 8) | section[i + 2]
        if stream_type in VIDEO_STREAM_TYPES:
            return Program(version, pid, stream_type)
        i += 5 + (((section[i + 3] & 0x0F) << 8) | section[i + 4])
    return Program(version, None, None)


class ProgramWatcher:
    def __init__(self) -> None:
        self._carry = b""  # a packet split across chunks
        self._pmt_pid: int | None = None
        self.program: Program | None = None
        self.last_pat: bytes | None = None  # the newest PAT packet, to start a cut segment with
        self.changes = 0

    def feed(self, chunk: bytes) -> list[int]:
        """Offsets in ``chunk`` where a packet carrying a new program's PMT begins (a packet
        that started in an earlier chunk is reported at offset 0)."""
        data = self._carry + chunk
        base = -len(self._carry)
        cuts: list[int] = []
        pos = 0
        while pos + TS_PACKET <= len(data):
            if data[pos] != SYNC:
                pos += 1  # lost sync: look for the next packet start
                continue
            packet = data[pos : pos + TS_PACKET]
            if self._new_program(packet):
                cuts.append(max(0, base + pos))
            pos += TS_PACKET
        self._carry = data[pos:][-TS_PACKET:]
        return cuts

    def _new_program(self, packet: bytes) -> bool:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if pid != PAT_PID and pid != self._pmt_pid:
            return False
        section = _psi_section(packet)
        if section is None:
            return False
        if pid == PAT_PID:
            pmt_pid = parse_pat(section)
            if pmt_pid is not None:
                self._pmt_pid = pmt_pid
                self.last_pat = packet
            return False
        program = parse_pmt(section)
        if program is None or program == self.program:
            return False
        first, self.program = self.program is None, program
        if first:
            return False
        self.changes += 1
        return True
