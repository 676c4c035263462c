"""The incremental live Matroska reader against real peers: files written by the Debian ffmpeg CLI
(``-f matroska`` / ``-f webm``, live and seekable) for AV1, H.265 and H.264, read in chunks of
every size down to one byte and compared packet by packet with PyAV's demuxer; our writer's output
read back; the things it must refuse or hand over to PyAV."""

from __future__ import annotations

import io
import random
import subprocess
from pathlib import Path

import av
import pytest

from flumph.media.ebml import (
    BLOCKGROUP_ID,
    CLUSTER_ID,
    SIMPLEBLOCK_ID,
    TIMESTAMP_ID,
    TRACKS_ID,
    UNKNOWN_SIZE,
    VOID_ID,
    element,
    encode_id,
    encode_size,
    iter_elements,
    split_documents,
    uint_element,
)
from flumph.media.matroska_reader import MatroskaReader, Packet, StreamHeader, Unsupported
from flumph.media.matroska_writer import LiveMatroskaWriter, TrackInfo
from tests.matroska_golden import GOLDEN, cases

Frame = tuple[int, int, bool, bytes]  # track, timestamp, keyframe, payload

# name: (ffmpeg encoder options, muxer options, written to a seekable file)
FFMPEG_CASES = {
    "av1-webm-live": (["-c:v", "libsvtav1", "-preset", "12"], ["-f", "webm", "-live", "1"], False),
    "hevc-matroska-live": (
        ["-c:v", "libx265", "-x265-params", "log-level=none"],
        ["-f", "matroska", "-live", "1"],
        False,
    ),
    "h264-matroska-live-bframes": (["-c:v", "libx264"], ["-f", "matroska", "-live", "1"], False),
    "h264-matroska-file": (["-c:v", "libx264", "-bf", "0"], ["-f", "matroska"], True),
}


def ffmpeg_clip(encoder: list[str], muxer: list[str], seekable: bool, out: Path) -> bytes:
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15", "-frames:v", "45", "-g", "10",
        *encoder, *muxer, "-cluster_time_limit", "400",
    ]  # fmt: skip
    if seekable:
        subprocess.run([*cmd, str(out)], check=True, capture_output=True, timeout=120)
        return out.read_bytes()
    return subprocess.run([*cmd, "pipe:1"], check=True, capture_output=True, timeout=120).stdout


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("mkv")
    return {
        name: ffmpeg_clip(encoder, muxer, seekable, folder / f"{name}.mkv")
        for name, (encoder, muxer, seekable) in FFMPEG_CASES.items()
    }


def read(data: bytes, sizes: list[int] | None = None) -> list[StreamHeader | Frame | Unsupported]:
    """Every event, payloads as bytes, feeding ``data`` cut into chunks of the given sizes (cycled),
    up to an Unsupported event (the reader takes nothing after it)."""
    reader = MatroskaReader()
    events: list[StreamHeader | Frame | Unsupported] = []
    pos, k = 0, 0
    while pos < len(data) and not (events and isinstance(events[-1], Unsupported)):
        size = sizes[k % len(sizes)] if sizes else len(data)
        k += 1
        chunk = data[pos : pos + size]
        pos += size
        for e in reader.feed(chunk):
            if isinstance(e, Packet):
                events.append((e.track, e.timestamp, e.keyframe, bytes(e.payload)))
            else:
                events.append(e)
    return events


def frames_of(events: list[StreamHeader | Frame | Unsupported]) -> list[Frame]:
    return [e for e in events if isinstance(e, tuple)]


def pyav_frames(data: bytes) -> list[Frame]:
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        return [
            (1, int(p.pts or 0), bool(p.is_keyframe), bytes(p))
            for p in container.demux(stream)
            if p.size
        ]


@pytest.mark.parametrize("name", list(FFMPEG_CASES))
def test_ffmpeg_files_read_like_pyav_in_any_chunking(name: str, clips: dict[str, bytes]) -> None:
    data = clips[name]
    expected = pyav_frames(data)
    assert len(expected) == 45
    whole = read(data)
    header = whole[0]
    assert isinstance(header, StreamHeader)
    video = header.video
    assert video is not None and (video.width, video.height) == (320, 180)
    assert video.codec == name.split("-")[0]
    with av.open(io.BytesIO(data), "r") as container:
        assert video.codec_private == container.streams.video[0].codec_context.extradata
    assert header.timestamp_scale_ns == 1_000_000
    assert frames_of(whole) == expected
    rng = random.Random(name)
    for sizes in ([1], [rng.randint(1, 2000) for _ in range(50)], [7, 1316, 3, 188]):
        assert read(data, sizes) == whole


def test_each_packet_comes_out_with_the_chunk_that_holds_its_last_byte() -> None:
    data = GOLDEN.read_bytes()
    blocks = [e for e in iter_elements(data) if e.id == SIMPLEBLOCK_ID]
    ends = sorted(b.data_start + (b.size or 0) for b in blocks)
    reader = MatroskaReader()
    seen = 0
    for pos in range(len(data)):
        seen += sum(isinstance(e, Packet) for e in reader.feed(data[pos : pos + 1]))
        assert seen == sum(end <= pos + 1 for end in ends), pos
    assert reader.offset == len(data)


def test_a_frame_inside_one_chunk_is_not_copied() -> None:
    data = GOLDEN.read_bytes()
    events = MatroskaReader().feed(data)
    packet = next(e for e in events if isinstance(e, Packet))
    assert packet.payload.obj is data


def test_writer_output_reads_back_document_by_document() -> None:
    """New EBML headers (the agent reopened its encoder) give a new StreamHeader each."""
    events = read(GOLDEN.read_bytes(), [5, 1000])
    headers = [e for e in events if isinstance(e, StreamHeader)]
    codecs = [h.video.codec if h.video else None for h in headers]
    assert codecs == [c[0] for c in cases()]
    expected = []
    for document in split_documents(GOLDEN.read_bytes()):
        expected += pyav_frames(document)
    assert [(t, ts, p) for t, ts, _, p in frames_of(events)] == [
        (t, ts, p) for t, ts, _, p in expected
    ]
    assert [k for _, _, k, _ in frames_of(events)] == [k for *_, fr in cases() for _, k, _ in fr]


def test_writer_frames_round_trip_with_timestamps_beyond_a_cluster() -> None:
    writer = LiveMatroskaWriter(TrackInfo("h264", 64, 64, b"\x01\x42\x00\x0a", 30.0))
    sent = [(t, t % 3000 == 0, (4).to_bytes(4, "big") + t.to_bytes(4, "big")) for t in
            range(0, 100_000, 250)]  # fmt: skip
    data = b"".join(writer.write(*frame) for frame in sent)
    assert frames_of(read(data, [3, 1316])) == [(1, t, k, p) for t, k, p in sent]


# --- building odd streams by hand ----------------------------------------------------------------


def stream(*children: bytes, tracks_extra: bytes = b"", cluster_size: bool = False) -> bytes:
    header = LiveMatroskaWriter(TrackInfo("av1", 64, 64, b"\x81\x00\x0c\x00")).write(
        0, True, b"\x32\x01\x00"
    )
    first_cluster = header.index(encode_id(CLUSTER_ID))
    head = header[:first_cluster]
    if tracks_extra:
        tracks_at = head.index(encode_id(TRACKS_ID))
        tracks = next(e for e in iter_elements(head) if e.id == TRACKS_ID)
        assert tracks.size is not None
        body = head[tracks.data_start : tracks.data_start + tracks.size]
        entry = body[2:] + tracks_extra  # TrackEntry (0xAE + 1-byte size) gets a child
        head = head[:tracks_at] + element(TRACKS_ID, element(0xAE, entry))
    body = uint_element(TIMESTAMP_ID, 1000) + b"".join(children)
    if cluster_size:
        return head + element(CLUSTER_ID, body)
    return head + encode_id(CLUSTER_ID) + UNKNOWN_SIZE + body


def block(relative: int, flags: int, payload: bytes, track: int = 1) -> bytes:
    body = bytes([0x80 | track]) + relative.to_bytes(2, "big", signed=True) + bytes([flags])
    return element(SIMPLEBLOCK_ID, body + payload)


def test_void_crc_and_unknown_elements_are_skipped_and_offsets_are_signed() -> None:
    data = stream(
        element(VOID_ID, b"\x00" * 300),
        block(-5, 0x80, b"a"),
        element(0xBF, b"\x01\x02\x03\x04"),  # CRC-32
        element(0xA7, b"\x05"),  # Position
        block(32767, 0, b"b"),
    )
    assert frames_of(read(data, [1])) == [(1, 995, True, b"a"), (1, 33767, False, b"b")]


def test_sized_cluster_ends_where_its_size_says() -> None:
    data = stream(block(0, 0x80, b"x"), cluster_size=True)
    data += element(CLUSTER_ID, uint_element(TIMESTAMP_ID, 2000) + block(1, 0, b"y"))
    assert frames_of(read(data, [2])) == [(1, 1000, True, b"x"), (1, 2001, False, b"y")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x1f\x43\xb6\x75\xff", r"expected an EBML header or a Segment at offset 0, got 0x1F"),
        (b"\x00", r"invalid EBML element ID byte 0x00 at offset 0"),
        (b"\x08\x00\x00\x00\x00", r"invalid EBML element ID byte 0x08 at offset 0"),
        (b"\xec\x00", r"invalid EBML size byte 0x00 at offset 1"),
        (b"\x18\x53\x80\x67\x80", r"Segment at offset 0 before an EBML header"),
        (element(0x1A45DFA3, element(0x4282, b"mp4")), r"DocType 'mp4' at offset 0 is not"),
        (stream(block(0, 0x80, b"x", track=2)), r"SimpleBlock at offset \d+ for track 2, not in"),
        (stream(element(SIMPLEBLOCK_ID, b"\x81\x00")), r"SimpleBlock at offset \d+ is 2 bytes"),
        (
            stream(element(VOID_ID, b"") + encode_id(0xA7) + UNKNOWN_SIZE),
            r"0xA7 at offset \d+ has an unknown",
        ),
        (
            stream(uint_element(TIMESTAMP_ID, 1 << 70)),
            r"Cluster Timestamp at offset \d+ is 9 bytes, over the limit",
        ),
    ],
)
def test_bad_bytes_are_refused_naming_the_problem_and_offset(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read(data)
    with pytest.raises(ValueError, match=message):
        read(data, [1])


def test_an_element_over_the_limit_is_refused_before_its_bytes_arrive() -> None:
    reader = MatroskaReader(max_element_bytes=1000)
    head = stream()
    reader.feed(head)
    with pytest.raises(ValueError, match=r"SimpleBlock at offset \d+ is 5000 bytes, over the"):
        reader.feed(encode_id(SIMPLEBLOCK_ID) + encode_size(5000))
    with pytest.raises(ValueError, match="the reader was stopped"):
        reader.feed(b"\x00")


def test_an_unknown_size_cluster_ends_with_its_sized_segment() -> None:
    live = stream(block(0, 0x80, b"x"))
    segment_at = live.index(b"\x18\x53\x80\x67")
    body = live[segment_at + 12 :]  # after the Segment's ID and its 8-byte unknown size
    sized = live[:segment_at] + element(0x18538067, body)
    assert frames_of(read(sized + stream(block(1, 0x80, b"y")))) == [
        (1, 1000, True, b"x"),
        (1, 1001, True, b"y"),
    ]
    for sizes in ([1], [len(sized) + 50]):
        with pytest.raises(ValueError, match="expected an EBML header or a Segment"):
            read(sized + block(1, 0, b"outside"), sizes)


def test_block_before_the_cluster_timestamp_is_refused() -> None:
    data = stream()
    data += encode_id(CLUSTER_ID) + UNKNOWN_SIZE + block(0, 0x80, b"x")
    with pytest.raises(ValueError, match="before its Cluster's Timestamp"):
        read(data)


def test_element_running_past_its_sized_cluster_is_refused() -> None:
    children = uint_element(TIMESTAMP_ID, 0) + encode_id(SIMPLEBLOCK_ID) + encode_size(10)
    data = stream(cluster_size=True) + encode_id(CLUSTER_ID) + encode_size(len(children) + 5)
    with pytest.raises(ValueError, match=r"element 0xA3 at offset \d+ runs past its Cluster"):
        read(data + children + b"\x81\x00\x00\x80x" * 2)


# --- handing over to PyAV ------------------------------------------------------------------------


def assert_resume_demuxes(resume: bytes, later: bytes, payloads: list[bytes]) -> None:
    with av.open(io.BytesIO(resume + later), "r") as container:
        got = [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]
    assert got[-len(payloads) :] == payloads


def test_a_blockgroup_is_handed_over_with_bytes_pyav_can_start_from() -> None:
    inner = element(0xA1, b"\x81\x00\x02\x00" + b"bg") + uint_element(0x9B, 5)  # Block, Duration
    group = element(BLOCKGROUP_ID, inner)
    data = stream(block(0, 0x80, b"kf"), group)
    later = block(4, 0, b"after")
    events = read(data)
    assert frames_of(events) == [(1, 1000, True, b"kf")]
    handed = events[-1]
    assert isinstance(handed, Unsupported)
    assert handed.reason.startswith("BlockGroup at offset")
    assert_resume_demuxes(handed.resume, later, [b"bg", b"after"])


def test_a_laced_block_is_handed_over_whole() -> None:
    # Xiph lacing (flags 0x02): 2 frames, the first 3 bytes long.
    laced = block(2, 0x02, b"\x01\x03abcde")
    data = stream(block(0, 0x80, b"kf"), laced)
    for sizes in ([len(data)], [1]):
        handed = read(data + block(9, 0, b"next"), sizes)
        unsupported = [e for e in handed if isinstance(e, Unsupported)]
        assert len(unsupported) == 1
        assert unsupported[0].reason.startswith("laced SimpleBlock at offset")
    events = read(data)
    handed_over = events[-1]
    assert isinstance(handed_over, Unsupported)
    assert_resume_demuxes(handed_over.resume, block(9, 0, b"next"), [b"abc", b"de", b"next"])


def test_content_encoded_tracks_are_handed_over_at_the_first_cluster() -> None:
    # Header stripping (ContentCompAlgo 3) of the bytes "hd".
    compression = element(0x5034, uint_element(0x4254, 3) + element(0x4255, b"hd"))
    encodings = element(0x6D80, element(0x6240, compression))
    data = stream(block(0, 0x80, b"kf"), tracks_extra=encodings)
    events = read(data)
    assert not frames_of(events)
    handed = events[-1]
    assert isinstance(handed, Unsupported) and "ContentEncodings" in handed.reason
    assert_resume_demuxes(handed.resume, b"", [b"hdkf"])


def test_ffmpeg_subtitle_blockgroups_hand_the_rest_of_the_stream_to_pyav(tmp_path: Path) -> None:
    """FFmpeg writes a subtitle track's frames as BlockGroups: a real stream the ingest must give
    to PyAV; what PyAV reads from the hand-over continues exactly where the reader stopped."""
    srt = tmp_path / "subtitles.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,000\nhello\n", encoding="utf-8")
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15", "-i", str(srt),
        "-frames:v", "45", "-g", "10", "-c:v", "libx264", "-c:s", "srt",
        "-f", "matroska", "-live", "1", "pipe:1",
    ]  # fmt: skip
    data = subprocess.run(cmd, check=True, capture_output=True, timeout=120).stdout
    expected = pyav_frames(data)
    reader = MatroskaReader()
    got: list[Frame] = []
    handed: Unsupported | None = None
    pos = 0
    while handed is None:
        chunk, pos = data[pos : pos + 1316], pos + 1316
        for e in reader.feed(chunk):
            if isinstance(e, Packet):
                got.append((e.track, e.timestamp, e.keyframe, bytes(e.payload)))
            elif isinstance(e, Unsupported):
                handed = e
    assert handed.reason.startswith("BlockGroup at offset")
    assert 0 < len(got) < len(expected)
    assert got == expected[: len(got)]
    assert pyav_frames(handed.resume + data[pos:]) == expected[len(got) :]
