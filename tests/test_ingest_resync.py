"""MPEG-TS that starts mid-packet, published the way people do it with a file:
``cat clip.ts | srt-live-transmit file://con srt://…``, into a real `flumph ingest`, watched over
WebSocket and decoded back."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Ingest
from tests.peers import decode_fmp4, watch

pytestmark = pytest.mark.skipif(
    shutil.which("srt-live-transmit") is None, reason="srt-tools not installed"
)
FPS, SECONDS, CUT = 15, 4, 100


def make_clip(path: Path) -> bytes:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
         f"testsrc2=size=256x144:rate={FPS}", "-t", str(SECONDS), "-c:v", "libx264",
         "-g", str(FPS), "-pix_fmt", "yuv420p", "-f", "mpegts", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path.read_bytes()


async def test_cat_of_a_clip_cut_mid_packet_is_resynchronised(
    shared_ingest: Ingest, tmp_path: Path
) -> None:
    data = make_clip(tmp_path / "clip.ts")
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[CUT:])  # starts 100 bytes into a 188-byte packet
    assert data[CUT] != 0x47
    url = f"srt://127.0.0.1:{shared_ingest.srt_port}?streamid=publish:cut1"
    # The file is piped in at its own pace (as a camera would send it), so that a viewer who
    # joins at the first frame sees the stream from its start. srt-live-transmit 1.5.1 reads
    # stdin before its connection is up and drops what it read (measured: 3 of 4 runs of a bare
    # `cat clip.ts |` lost 54-95 % of a 108 KB clip), hence the second before the first byte;
    # its 1456-byte reads are not whole packets either, so a lost read misaligns the stream
    # just like this cut does. After the last byte the pipe stays open for 3 s: at EOF it exits
    # at once, and a burst closed at once never reaches the receiver (see MEASUREMENTS.md).
    pace = (
        "import sys, time; d = open(sys.argv[1], 'rb').read(); time.sleep(1)\n"
        f"for i in range(0, len(d), 1316): sys.stdout.buffer.write(d[i:i + 1316]); "
        f"sys.stdout.flush(); time.sleep({SECONDS} * 1316 / len(d))\n"
        "time.sleep(3)"
    )
    shell = f"{sys.executable} -c \"$PACE\" {cut} | srt-live-transmit -q file://con '{url}'"
    proc = subprocess.Popen(["sh", "-c", shell], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=os.environ | {"PACE": pace})  # fmt: skip
    try:
        await asyncio.to_thread(shared_ingest.wait_stream, "cut1", 15, 1)
        got = await watch(shared_ingest.ws, "cut1", seconds=SECONDS + 4, until_ended=False)
        _, parts = got.segments()[0]
        dec = decode_fmp4(parts)
        assert (dec.codec, dec.width, dec.height) == ("h264", 256, 144)
        # From the first keyframe on: the cut fell in the service table packet opening the
        # file, so no frame is lost to it. The end may lose what srt-live-transmit sends as it
        # exits (its last partial read).
        assert dec.keyframes == SECONDS, dec  # one per second of a 1 s GOP: all of them
        assert dec.frames >= FPS * SECONDS - 3, dec
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # sh, python and srt-live-transmit
        await asyncio.to_thread(proc.wait, 15)
    assert not [e for e in shared_ingest.errors() if e["stream_id"] == "cut1"]
    assert f"skipped {-CUT % 188} bytes before the first whole packet" in shared_ingest.log()
