"""The SRT thread's Matroska demuxer and the batched hand-off to the loop, in process, with files
the ffmpeg CLI writes."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import pytest

from flumph.ingest.demux import DemuxEvent, DemuxFragment, DemuxInit
from flumph.ingest.handoff import LoopHandoff
from flumph.ingest.mkv_demux import MatroskaDemux
from tests.peers import decode_fmp4, ffmpeg_file


@pytest.mark.parametrize("codec", ["h264", "hevc", "av1"])
def test_each_frame_is_stamped_with_the_message_that_completed_it(
    tmp_path: Path, codec: str
) -> None:
    data = ffmpeg_file(tmp_path / "a.mkv", codec=codec, container="matroska").read_bytes()
    events: list[DemuxEvent] = []
    demux = MatroskaDemux("cam1", events.append)
    stamps: list[float] = []
    for k in range(0, len(data), 1316):
        before = len(events)
        assert demux.feed(data[k : k + 1316], t_in=float(k)) is None
        # Whatever this message completed carries its arrival, not a later one's.
        stamps += [e.t_in for e in events[before:] if isinstance(e, DemuxFragment)]
        assert all(e.t_in == k for e in events[before:] if isinstance(e, DemuxFragment))
    inits = [e for e in events if isinstance(e, DemuxInit)]
    fragments = [e.fragment.data for e in events if isinstance(e, DemuxFragment)]
    assert len(inits) == 1 and inits[0].container == "matroska"
    decoded = decode_fmp4([inits[0].segment.data, *fragments])
    assert (decoded.codec, decoded.frames, decoded.width) == (codec, 30, 320)
    assert stamps == sorted(stamps)


def test_bad_bytes_deliver_what_came_before_and_name_the_problem(tmp_path: Path) -> None:
    data = ffmpeg_file(tmp_path / "a.mkv", codec="h264", container="matroska").read_bytes()
    events: list[DemuxEvent] = []
    demux = MatroskaDemux("cam1", events.append)
    cluster = b"\x1f\x43\xb6\x75"
    second = data.index(cluster, data.index(cluster) + 4)  # the first Cluster, whole
    with pytest.raises(ValueError, match="corrupt matroska stream") as raised:
        demux.feed(data[:second] + bytes(16), 1.0)  # then an element ID of 0x00: no such thing
    assert "offset" in str(raised.value)
    assert sum(isinstance(e, DemuxFragment) for e in events) == 15  # the first GOP arrived


def test_a_stream_without_video_is_refused(tmp_path: Path) -> None:
    audio = tmp_path / "a.mka"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
         "sine=duration=1", "-c:a", "libopus", "-f", "matroska", str(audio)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with pytest.raises(ValueError, match="no video track"):
        MatroskaDemux("cam1", lambda e: None).feed(audio.read_bytes(), 0.0)


async def test_handoff_wakes_the_loop_once_per_round_and_is_bounded() -> None:
    loop = asyncio.get_running_loop()
    batches: list[list[int]] = []
    handoff: LoopHandoff[int] = LoopHandoff(loop, batches.append, max_items=5)

    def round_of_frames() -> None:
        for i in range(7):
            handoff.put(i)
        handoff.put_always(99)  # an end is never refused
        handoff.flush()
        handoff.flush()  # a second flush before the drain schedules nothing

    thread = threading.Thread(target=round_of_frames)
    thread.start()
    thread.join()
    await asyncio.sleep(0.05)
    assert batches == [[0, 1, 2, 3, 4, 99]]
    assert handoff.refused == 2 and handoff.wakeups == 1
    handoff.flush()  # nothing pending: no wake-up
    await asyncio.sleep(0.01)
    assert handoff.wakeups == 1
