"""JSON depth bombs and lax types against the running services (issue 13, attacks 6 and 7): the
viewer and streamer WebSockets answer an error and a close frame, the dashboard API a 4xx, an
MQTT set is refused by name, a device answers a bombed command on ack and a bombed desired on
reported.error, and carries on. Real embedded broker, `flumph dashboard`, `flumph ingest`,
`flumph agent`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from tests.brokers import Broker, Probe, start_embedded
from tests.conftest import Ingest, start_ingest, stop_ingest
from tests.test_agent_control import DEV, Agent, Watch, start_agent
from tests.test_fleet_service import Dashboard, start_dashboard, wait_until

BOMB = "[" * 2000 + "]" * 2000  # ~4 KB: under every size limit, 2000 levels deep


def bombed(doc: dict[str, object]) -> str:
    return json.dumps(doc)[:-1] + ', "x": ' + BOMB + "}"


@dataclass
class Services:
    broker: Broker
    dash: Dashboard
    ingest: Ingest
    agent: Agent
    watch: Watch


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("json-attacks")
    broker = start_embedded(tmp)
    ingest = start_ingest(tmp, args=["--mqtt", broker.url])
    dash = start_dashboard(tmp, broker)
    watch = Watch(broker)
    agent = start_agent(tmp, broker, "srt://127.0.0.1:9")
    try:
        watch.wait(f"flumph/{DEV}/status", lambda d: d["state"] == "online")
        wait_until(lambda: dash.device(DEV), 15, "the agent in the dashboard")
        yield Services(broker, dash, ingest, agent, watch)
        assert agent.proc.poll() is None, agent.log()
        assert "Traceback" not in agent.log(), agent.log()
        assert "Traceback" not in dash.log(), dash.log()
        assert "Traceback" not in ingest.log(), ingest.log()
    finally:
        agent.stop()
        watch.close()
        dash.stop()
        stop_ingest(ingest)
        broker.stop()


async def _ws_refusal(url: str, message: str) -> tuple[dict[str, object], int | None]:
    async with websockets.connect(url) as ws:
        await ws.send(message)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await asyncio.wait_for(ws.wait_closed(), 10)
        return reply, ws.close_code


async def test_websockets_answer_a_depth_bomb_with_an_error_and_a_close_frame(
    services: Services,
) -> None:
    ws = services.ingest.ws
    reply, code = await _ws_refusal(
        f"{ws}/ws/view/{DEV}", bombed({"type": "subscribe", "stream_id": DEV})
    )
    assert reply["type"] == "error" and "nested more than" in str(reply["message"]), reply
    assert code == 1008
    reply, code = await _ws_refusal(f"{ws}/ws/stream", bombed({"type": "register"}))
    assert reply["type"] == "error" and "nested more than" in str(reply["message"]), reply
    assert code == 1008


def test_the_dashboard_api_answers_4xx_naming_the_problem(services: Services) -> None:
    d = services.dash.url
    r = httpx.post(f"{d}/api/devices/{DEV}/set", content=bombed({"fps": 10}), timeout=10)
    assert r.status_code == 422 and "nested more than" in r.json()["detail"], r.text
    r = httpx.post(f"{d}/api/devices", content=bombed({"id": "cam-x"}), timeout=10)
    assert r.status_code == 400 and "nested more than" in r.json()["detail"], r.text
    r = httpx.post(f"{d}/api/devices/{DEV}/grant", content="[" * 500 + "]" * 500, timeout=10)
    assert r.status_code == 422 and "nested more than" in r.json()["detail"], r.text
    r = httpx.post(f"{d}/api/devices/no-such-cam/grant", json={"mb": 5}, timeout=10)
    assert r.status_code == 404, r.text
    r = httpx.post(f"{d}/api/login", content=bombed({"password": "x"}), timeout=10)
    assert r.status_code == 400 and "nested more than" in r.json()["detail"], r.text
    r = httpx.post(f"{d}/api/devices/{DEV}/set", content=b"{" + b" " * 200_000 + b"}", timeout=10)
    assert r.status_code == 413 and "exceeds" in r.json()["detail"], r.text
    # Lax types: refused, not coerced.
    r = httpx.post(f"{d}/api/devices/{DEV}/set", json={"streaming": "yes"}, timeout=10)
    assert r.status_code == 422 and "streaming" in r.json()["detail"], r.text
    assert httpx.get(f"{d}/api/health", timeout=10).status_code == 200


def _pub(broker: Broker, topic: str, payload: str, retain: bool = False) -> None:
    p = Probe(broker)
    try:
        p.publish(topic, payload, retain=retain)
    finally:
        p.close()


def test_an_mqtt_set_bomb_or_lax_type_is_refused_by_name(services: Services) -> None:
    dash, broker = services.dash, services.broker
    before = dash.device(DEV)["desired_v"]
    for payload, words in ((bombed({"fps": 10}), "nested more than"), ('{"fps": true}', "fps")):
        _pub(broker, f"flumph/{DEV}/set", payload)

        def refused(w: str = words) -> bool:
            e = dash.device(DEV).get("last_set_error") or {}
            return w in str(e.get("error"))

        wait_until(refused, 10, f"set refused ({words})")
    assert dash.device(DEV)["desired_v"] == before  # nothing merged


def test_a_device_answers_a_bombed_command_and_a_bombed_desired(services: Services) -> None:
    broker, watch = services.broker, services.watch
    mark = watch.mark()
    _pub(broker, f"flumph/{DEV}/cmd/keyframe", bombed({"id": "bomb-1"}))
    ack = watch.wait(f"flumph/{DEV}/ack", lambda d: not d["ok"], mark)
    assert "nested more than" in ack["error"], ack
    # A retained desired written past the backend (an ops tool): refused on reported.error.
    mark = watch.mark()
    _pub(broker, f"flumph/{DEV}/desired", bombed({"v": 99, "fps": 10}), retain=True)
    rep = watch.wait(
        f"flumph/{DEV}/reported", lambda d: "nested more than" in (d.get("error") or ""), mark
    )
    assert rep["applied_v"] != 99
    _pub(broker, f"flumph/{DEV}/desired", '{"v": 99, "fps": true}', retain=True)
    rep = watch.wait(f"flumph/{DEV}/reported", lambda d: "fps" in (d.get("error") or ""), mark)
    assert rep["settings"]["fps"] != 1  # true was not applied as fps 1
    # ... and the device still answers a good command.
    mark = watch.mark()
    _pub(broker, f"flumph/{DEV}/cmd/keyframe", '{"id": "fine-1"}')
    ack = watch.ack("fine-1", mark)
    assert ack["ok"] is False and "not streaming" in ack["error"]  # understood, and answered
    _pub(broker, f"flumph/{DEV}/desired", "", retain=True)


@pytest.mark.parametrize("component", ["agent", "ingest", "dashboard", "broker"])
def test_a_config_file_depth_bomb_is_refused_by_name(tmp_path: Path, component: str) -> None:
    path = tmp_path / "bomb.toml"
    path.write_text(f"[{component}]\nx = " + "[" * 3000 + "]" * 3000 + "\n")
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "flumph", component, "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "nested too deeply" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert time.monotonic() - started < 30
