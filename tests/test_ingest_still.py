"""``"still": true``: the newest keyframe of a running stream, then a close, without becoming a
viewer (no demand, no viewer slot). ffmpeg publishes over SRT into a real `flumph ingest`."""

from __future__ import annotations

import asyncio
import json

import websockets

from tests.conftest import Ingest
from tests.peers import decode_fmp4, ffmpeg_publish


async def still(ingest: Ingest, stream_id: str, **extra: object) -> list[str | bytes]:
    url = f"{ingest.ws}/ws/view/{stream_id}"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "stream_id": stream_id, **extra}))
        got: list[str | bytes] = []
        while True:
            try:
                got.append(await asyncio.wait_for(ws.recv(), 10))
            except websockets.ConnectionClosed:
                return got


async def test_a_still_is_one_keyframe_and_no_viewer(shared_ingest: Ingest) -> None:
    proc = ffmpeg_publish(shared_ingest.srt_url("still-cam"), seconds=20, gop=30)
    try:
        await asyncio.to_thread(shared_ingest.wait_stream, "still-cam", 15.0, 40)
        got = await still(shared_ingest, "still-cam", still=True)
        text = [json.loads(m) for m in got if isinstance(m, str)]
        binary = [m for m in got if isinstance(m, bytes)]
        assert [t["type"] for t in text] == ["subscribed", "media"], text
        assert text[1]["still"] is True and "avc1." in text[1]["mime"]
        assert len(binary) == 2  # init segment, then one fragment
        decoded = decode_fmp4(binary)
        assert (decoded.frames, decoded.keyframes) == (1, 1), decoded
        info = {s["id"]: s for s in shared_ingest.streams()}["still-cam"]
        assert info["viewers"] == 0  # never counted as a viewer (nor as demand)
    finally:
        proc.kill()
        await asyncio.to_thread(proc.communicate)


async def test_no_still_of_a_stream_that_is_not_running(shared_ingest: Ingest) -> None:
    got = await still(shared_ingest, "nobody-here", still=True)
    assert len(got) == 1 and isinstance(got[0], str), got
    reply = json.loads(got[0])
    assert reply["type"] == "error"
    assert reply["message"] == "no picture of nobody-here: it is not streaming"


async def test_still_and_wait_together_are_refused(shared_ingest: Ingest) -> None:
    got = await still(shared_ingest, "cam1", still=True, wait=True)
    reply = json.loads(got[0])
    assert reply["type"] == "error" and "wait or still, not both" in reply["message"]
    got = await still(shared_ingest, "cam1", still="yes")
    assert "still must be true or false" in json.loads(got[0])["message"]
