"""The seed's WebSocket relay protocol, message by message, against a running `flumph ingest`."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import Ingest, start_ingest, stop_ingest

OPEN: list[websockets.ClientConnection] = []


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    # Every connection a test opened is closed, so no socket outlives its test.
    yield
    while OPEN:
        await OPEN.pop().close()


async def register(
    ws_base: str, stream_id: str | None
) -> tuple[websockets.ClientConnection, dict[str, object]]:
    ws = await websockets.connect(f"{ws_base}/ws/stream", max_size=None)
    OPEN.append(ws)
    await ws.send(json.dumps({"type": "register", "stream_id": stream_id}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return ws, reply


async def subscribe(
    ws_base: str, stream_id: str
) -> tuple[websockets.ClientConnection, dict[str, object]]:
    ws = await websockets.connect(f"{ws_base}/ws/view/{stream_id}", max_size=None)
    OPEN.append(ws)
    await ws.send(json.dumps({"type": "subscribe", "stream_id": stream_id}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return ws, reply


async def closed_code(ws: websockets.ClientConnection) -> int | None:
    await asyncio.wait_for(ws.wait_closed(), 5)
    return ws.close_code


def test_health(shared_ingest: Ingest) -> None:
    r = httpx.get(f"{shared_ingest.http}/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_register_assigns_eight_char_id(shared_ingest: Ingest) -> None:
    ws, reply = await register(shared_ingest.ws, None)
    assert reply["type"] == "registered"
    assert re.fullmatch(r"[A-Za-z0-9]{8}", str(reply["stream_id"]))
    await ws.close()


async def test_binary_frames_relayed_byte_for_byte(shared_ingest: Ingest) -> None:
    streamer, reply = await register(shared_ingest.ws, "relay1")
    assert reply == {"type": "registered", "stream_id": "relay1"}
    v1, r1 = await subscribe(shared_ingest.ws, "relay1")
    v2, r2 = await subscribe(shared_ingest.ws, "relay1")
    assert r1 == r2 == {"type": "subscribed", "stream_id": "relay1"}
    frames = [bytes([i % 256]) * (i * 37 % 5000 + 1) for i in range(200)]
    for f in frames:
        await streamer.send(f)
    for v in (v1, v2):
        got = [await asyncio.wait_for(v.recv(), 5) for _ in frames]
        assert got == frames
    info = {s["id"]: s for s in shared_ingest.streams()}["relay1"]
    assert info["source"] == "ws" and info["viewers"] == 2
    # Streamer leaves: viewers are told, then closed normally.
    await streamer.close()
    for v in (v1, v2):
        assert json.loads(await asyncio.wait_for(v.recv(), 5)) == {
            "type": "ended",
            "stream_id": "relay1",
        }
        assert await closed_code(v) == 1000


async def test_subscribe_unknown_stream(shared_ingest: Ingest) -> None:
    ws, reply = await subscribe(shared_ingest.ws, "nosuchid")
    assert reply == {"type": "error", "message": "stream not found"}
    assert await closed_code(ws) == 1008


@pytest.mark.parametrize(
    ("first", "fragment"),
    [
        ("not json", "not JSON"),
        ("[1,2]", "expected a JSON object"),
        ('{"type":"hello"}', "expected a register message"),
        ('{"type":"register","stream_id":"bad id!"}', "stream_id must be"),
        ('{"type":"register","stream_id":"' + "x" * 5000 + '"}', "message too long"),
        (b"\x00\x01binary-first", "must be JSON text, not binary"),
    ],
)
async def test_malformed_register_is_refused_with_reason(
    shared_ingest: Ingest, first: str | bytes, fragment: str
) -> None:
    ws = await websockets.connect(f"{shared_ingest.ws}/ws/stream")
    OPEN.append(ws)
    await ws.send(first)
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["type"] == "error"
    assert fragment in reply["message"]
    assert await closed_code(ws) == 1008


async def test_malformed_subscribe_and_mismatched_id(shared_ingest: Ingest) -> None:
    streamer, _ = await register(shared_ingest.ws, "relay2")
    ws = await websockets.connect(f"{shared_ingest.ws}/ws/view/relay2")
    OPEN.append(ws)
    await ws.send("{oops")
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["type"] == "error" and "not JSON" in reply["message"]
    ws = await websockets.connect(f"{shared_ingest.ws}/ws/view/relay2")
    OPEN.append(ws)
    await ws.send(json.dumps({"type": "subscribe", "stream_id": "other"}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["type"] == "error" and "URL names 'relay2'" in reply["message"]
    await streamer.close()


async def test_second_publisher_on_busy_id_refused_first_carries_on(shared_ingest: Ingest) -> None:
    first, _ = await register(shared_ingest.ws, "busy1")
    viewer, _ = await subscribe(shared_ingest.ws, "busy1")
    second, reply = await register(shared_ingest.ws, "busy1")
    assert reply["type"] == "error" and "busy" in str(reply["message"])
    assert await closed_code(second) == 1008
    await first.send(b"still here")
    assert await asyncio.wait_for(viewer.recv(), 5) == b"still here"
    await first.close()


async def test_text_after_register_answered_stream_continues(shared_ingest: Ingest) -> None:
    streamer, _ = await register(shared_ingest.ws, "chatty")
    viewer, _ = await subscribe(shared_ingest.ws, "chatty")
    await streamer.send("hello?")
    reply = json.loads(await asyncio.wait_for(streamer.recv(), 5))
    assert reply["type"] == "error" and "binary" in reply["message"]
    await streamer.send(b"frame")
    assert await asyncio.wait_for(viewer.recv(), 5) == b"frame"
    await streamer.close()


async def test_oversized_message_closes_offender_only(tmp_path: Path) -> None:
    ing = start_ingest(tmp_path, {"FLUMPH_INGEST_MAX_MESSAGE_BYTES": "65536"})
    try:
        good, _ = await register(ing.ws, "good")
        viewer, _ = await subscribe(ing.ws, "good")
        bad, _ = await register(ing.ws, "bad")
        await bad.send(b"x" * 70000)
        assert await closed_code(bad) == 1009  # RFC 6455: message too big
        await good.send(b"y" * 60000)
        assert await asyncio.wait_for(viewer.recv(), 5) == b"y" * 60000
    finally:
        stop_ingest(ing)


async def test_limits_are_error_messages_from_seed_env(tmp_path: Path) -> None:
    ing = start_ingest(tmp_path, {"MAX_STREAMS": "2", "MAX_VIEWERS_PER_STREAM": "1"})
    try:
        a, _ = await register(ing.ws, None)
        b, rb = await register(ing.ws, None)
        c, rc = await register(ing.ws, None)
        assert rc["type"] == "error" and "MAX_STREAMS" in str(rc["message"])
        assert await closed_code(c) == 1013
        sid = str(rb["stream_id"])
        v1, r1 = await subscribe(ing.ws, sid)
        _, r2 = await subscribe(ing.ws, sid)
        assert r1["type"] == "subscribed"
        assert r2["type"] == "error" and "MAX_VIEWERS_PER_STREAM" in str(r2["message"])
        await b.send(b"ok")
        assert await asyncio.wait_for(v1.recv(), 5) == b"ok"
        await a.close()
        await b.close()
    finally:
        stop_ingest(ing)


def test_seed_host_and_port_env(tmp_path: Path) -> None:
    # PORT from the environment is used when no flag is given.
    import socket
    import subprocess
    import sys
    import time

    from tests.conftest import free_port

    port = free_port()
    srt_port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flumph", "ingest", "--srt-host", "127.0.0.1",
         "--srt-port", str(srt_port)],
        env={"HOST": "127.0.0.1", "PORT": str(port), "PATH": "/usr/bin:/bin",
             "PYTHONPATH": ":".join(sys.path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("ingest did not listen on $PORT")
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "bad.toml"
    cfg.write_text("[ingest]\nmax_streams = 0\nprot = 1\n")
    r = subprocess.run(
        [sys.executable, "-m", "flumph", "ingest", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "max_streams" in r.stderr and "prot: unknown key" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "flumph", "ingest"],
        capture_output=True, text=True, timeout=60,
        env={"FLUMPH_INGEST_PROT": "1", "PATH": "/usr/bin"},
    )  # fmt: skip
    assert r.returncode == 2 and "FLUMPH_INGEST_PROT" in r.stderr


async def test_viewers_get_no_websocket_compression(shared_ingest: Ingest) -> None:
    # Browsers offer permessage-deflate; compressed AV1 is no smaller and costs the ingest CPU.
    ws = await websockets.connect(f"{shared_ingest.ws}/ws/view/nosuch")
    OPEN.append(ws)
    assert ws.response is not None
    assert "Sec-WebSocket-Extensions" not in ws.response.headers
