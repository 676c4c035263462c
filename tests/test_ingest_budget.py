"""A viewer waiting for a camera whose data budget is used up is told so, in words, over the real
viewer WebSocket of a real `flumph ingest` that follows the devices' retained ``reported`` on
Debian's mosquitto (password file + the deploy ACL; the ingest logs in as the backend, the camera
as itself and publishes with mosquitto_pub)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import websockets

from flumph.ingest.budget_notice import budget_message, exhausted_until
from tests.brokers import BACKEND_PASSWORD, BACKEND_USER, Broker, start_mosquitto
from tests.conftest import Ingest, start_ingest, stop_ingest
from tests.peers import ffmpeg_publish

CAMS = {"cam-dry": "dry-pw", "cam-ok": "ok-pw"}
RESETS = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
MESSAGE = "cam-dry's data budget for this month is used up; it resets 2027-01-01 00:00 UTC"


def reported(state: str) -> str:
    budget = {
        "state": state,
        "used_bytes": 1_000_000 if state == "exhausted" else 10,
        "budget_bytes": 1_000_000,
        "allowance_bytes": 0,
        "period_start": RESETS - 31 * 86400,
        "resets_at": RESETS,
        "cap_kbps": None,
    }
    return json.dumps({"applied_v": 1, "streaming": False, "budget": budget, "ts": time.time()})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Ingest]]:
    tmp = tmp_path_factory.mktemp("ingest-budget")
    broker = start_mosquitto(tmp, {BACKEND_USER: BACKEND_PASSWORD, **CAMS})
    for cam in CAMS:  # the cameras have come online: known devices, which viewers may wait for
        device_pub(broker, cam, "status", json.dumps({"state": "online"}))
    ing = start_ingest(
        tmp,
        env_extra={"FLUMPH_INGEST_MQTT_USERNAME": BACKEND_USER,
                   "FLUMPH_INGEST_MQTT_PASSWORD": BACKEND_PASSWORD},
        args=["--mqtt", broker.url, "--reconnect-grace-s", "1"],
    )  # fmt: skip
    yield broker, ing
    stop_ingest(ing)
    broker.stop()
    assert "Traceback" not in ing.log(), ing.log()


def device_pub(broker: Broker, device: str, kind: str, payload: str) -> None:
    subprocess.run(
        ["mosquitto_pub", *broker.cli_auth(device), "-q", "1", "-r",
         "-t", f"flumph/{device}/{kind}", "-m", payload],
        check=True, timeout=15,
    )  # fmt: skip


async def texts_until(
    ws: websockets.ClientConnection, kind: str, within_s: float = 10
) -> dict[str, object]:
    async with asyncio.timeout(within_s):
        while True:
            msg = await ws.recv()
            if isinstance(msg, str) and json.loads(msg)["type"] == kind:
                return dict(json.loads(msg))


async def subscribe(ing: Ingest, device: str) -> websockets.ClientConnection:
    ws = await websockets.connect(f"{ing.ws}/ws/view/{device}", max_size=None)
    await ws.send(json.dumps({"type": "subscribe", "stream_id": device, "wait": True}))
    assert json.loads(await ws.recv()) == {"type": "subscribed", "stream_id": device}
    assert json.loads(await ws.recv()) == {"type": "waiting", "stream_id": device}
    return ws


async def until_known(ing: Ingest, device: str, deadline: float) -> None:
    """Until a viewer may wait for ``device`` (the ingest has read its retained status)."""
    while True:
        async with websockets.connect(f"{ing.ws}/ws/view/{device}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "stream_id": device, "wait": True}))
            reply = json.loads(await ws.recv())
        if reply["type"] == "subscribed":
            return
        assert "not a known device" in reply.get("message", ""), reply
        assert time.monotonic() < deadline, ing.log()
        await asyncio.sleep(0.2)


def test_the_notice_in_words() -> None:
    assert budget_message("cam1", datetime(2027, 1, 1, tzinfo=UTC).timestamp()) == (
        "cam1's data budget for this month is used up; it resets 2027-01-01 00:00 UTC"
    )
    assert exhausted_until(reported("exhausted").encode()) == RESETS
    assert exhausted_until(reported("warn").encode()) is None
    assert exhausted_until(b"") is None


async def test_a_waiting_viewer_is_told_the_budget_is_used_up(
    stack: tuple[Broker, Ingest],
) -> None:
    broker, ing = stack
    device_pub(broker, "cam-dry", "reported", reported("exhausted"))
    device_pub(broker, "cam-ok", "reported", reported("ok"))
    deadline = time.monotonic() + 15
    # The ingest learns the devices (their retained status) and this retained document
    # asynchronously after it starts: wait for it to know both.
    await until_known(ing, "cam-dry", deadline)
    while True:
        ws = await subscribe(ing, "cam-dry")
        try:
            doc = json.loads(await asyncio.wait_for(ws.recv(), 1))
            break
        except TimeoutError:
            await ws.close()
            assert time.monotonic() < deadline, ing.log()
    try:
        assert doc == {"type": "unavailable", "stream_id": "cam-dry", "reason": "budget",
                       "message": MESSAGE}  # fmt: skip
        # A camera within its budget: the viewer only waits.
        ok = await subscribe(ing, "cam-ok")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ok.recv(), 1.0)
        await ok.close()

        # An operator grants more: the device reports ok, the waiting viewer waits again...
        device_pub(broker, "cam-dry", "reported", reported("ok"))
        assert await texts_until(ws, "waiting") == {"type": "waiting", "stream_id": "cam-dry"}
        # ...and used up again: told at once, still connected.
        device_pub(broker, "cam-dry", "reported", reported("exhausted"))
        assert (await texts_until(ws, "unavailable"))["message"] == MESSAGE
        # When the camera may stream again and does, the same socket gets the picture.
        device_pub(broker, "cam-dry", "reported", reported("ok"))
        await texts_until(ws, "waiting")
        proc = ffmpeg_publish(ing.srt_url("cam-dry"), seconds=2)
        media = await texts_until(ws, "media", within_s=30)
        assert "avc1." in str(media["mime"])
        await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        await ws.close()


async def test_a_bad_reported_document_changes_nothing(stack: tuple[Broker, Ingest]) -> None:
    broker, ing = stack
    device_pub(broker, "cam-ok", "reported", "{not json")
    device_pub(broker, "cam-ok", "reported", json.dumps({"budget": {"state": "exhausted"}}))
    await asyncio.sleep(1)
    ws = await subscribe(ing, "cam-ok")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 1.0)
    await ws.close()
    assert (await asyncio.to_thread(ing.streams)) is not None  # the ingest is fine
