"""The fleet service's usage history, budget API and `flumph ctl usage`, with real peers: Debian's
mosquitto (password file + the deploy ACL), a real `flumph dashboard` process stopped and started
again on the same state directory, the camera's messages published with mosquitto_pub under the
camera's own account, and `flumph ctl` as a process.

The camera reports its own budget period (``period_start`` ten days ago), so what is checked
does not depend on the day of the month the test runs on.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from flumph.control import Ack, Topics, decode
from flumph.control import Grant as GrantCommand
from tests.brokers import (
    BACKEND_PASSWORD,
    BACKEND_USER,
    OPS_PASSWORD,
    OPS_USER,
    Broker,
    Probe,
    start_mosquitto,
)
from tests.test_fleet_service import Dashboard, start_dashboard, wait_until

T = Topics()
CAMS = {"cam-a": "a-pw", "cam-b": "b-pw", "cam-c": "c-pw"}
USERS = {BACKEND_USER: BACKEND_PASSWORD, OPS_USER: OPS_PASSWORD, **CAMS}
HOUR = 3600
NOW = time.time()
P = NOW - 10 * 86400  # the camera's budget period began ten days ago
RESETS = P + 30 * 86400
BUDGET = 100_000_000


def usage(ts: float, srt: int, mqtt: int, snapshot: int) -> dict[str, Any]:
    return {
        "month": "2026-01",
        "bytes_sent": srt + mqtt + snapshot,
        "bytes_received": 0,
        "period_start": P,
        "by_kind": {"srt": srt, "mqtt": mqtt, "snapshot": snapshot},
    }


def budget(used: int, state: str = "ok") -> dict[str, Any]:
    return {"state": state, "used_bytes": used, "budget_bytes": BUDGET, "allowance_bytes": 0,
            "period_start": P, "resets_at": RESETS, "cap_kbps": None}  # fmt: skip


@dataclass
class Env:
    broker: Broker
    tmp: Path
    state: Path

    def device_pub(self, device: str, kind: str, doc: dict[str, Any] | None, retain: bool) -> None:
        topic = f"flumph/{device}/{kind}"
        cmd = ["mosquitto_pub", *self.broker.cli_auth(device), "-q", "1", "-t", topic]
        cmd += ["-r"] if retain else []
        cmd += ["-n"] if doc is None else ["-m", json.dumps(doc)]
        subprocess.run(cmd, check=True, timeout=15)

    def birth(self, device: str, ts: float, **counters: int) -> None:
        doc = {"state": "online", "ts": ts, "agent": "test", "usage": usage(ts, **counters)}
        self.device_pub(device, "status", doc, retain=True)

    def telemetry(self, device: str, ts: float, **counters: int) -> None:
        doc = {"ts": ts, "streaming": True, "usage": usage(ts, **counters)}
        self.device_pub(device, "telemetry", doc, retain=False)

    def dashboard(self) -> Dashboard:
        return start_dashboard(self.tmp, self.broker, "--state-dir", str(self.state))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("fleet-usage")
    broker = start_mosquitto(tmp, USERS)
    yield Env(broker, tmp, tmp / "dashboard-state")
    broker.stop()


def doc_of(dash: Dashboard, device: str) -> dict[str, Any]:
    r = httpx.get(f"{dash.url}/api/devices/{device}/usage", timeout=10)
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def hourly_sum(doc: dict[str, Any], kind: str | None = None) -> int:
    series = doc["hourly"]["total"] if kind is None else doc["hourly"]["by_kind"][kind]
    return int(sum(series))


def wait_for_sum(dash: Dashboard, device: str, total: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        doc = doc_of(dash, device)
        return doc if hourly_sum(doc) == total else None

    found: dict[str, Any] = wait_until(check, 10, f"{total} bytes in the history of {device}")
    return found


def ctl(dash: Dashboard, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    return subprocess.run(
        [sys.executable, "-m", "flumph", "ctl", "usage", *args, "--dashboard", dash.url],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_history_survives_a_restart_and_counts_the_hours_it_was_down(env: Env) -> None:
    t0 = NOW - 4 * HOUR
    dash = env.dashboard()
    try:
        env.device_pub("cam-a", "reported", {"applied_v": None, "ts": t0, "budget": budget(0)},
                       retain=True)  # fmt: skip
        env.birth("cam-a", t0, srt=1_000_000, mqtt=10_000, snapshot=0)
        env.telemetry("cam-a", t0 + HOUR, srt=3_000_000, mqtt=11_000, snapshot=0)
        env.telemetry("cam-a", t0 + 2 * HOUR, srt=4_000_000, mqtt=12_000, snapshot=50_000)
        doc = wait_for_sum(dash, "cam-a", 3_052_000)
        assert hourly_sum(doc, "srt") == 3_000_000 and hourly_sum(doc, "snapshot") == 50_000
        assert doc["history_since"] == pytest.approx(t0)
        assert doc["used_bytes"] == 4_062_000 and doc["by_kind"]["srt"] == 4_000_000
        # A camera without a retained status is not a known device: no history for it.
        env.telemetry("cam-c", t0 + HOUR, srt=5, mqtt=0, snapshot=0)
        env.telemetry("cam-c", t0 + 2 * HOUR, srt=500, mqtt=0, snapshot=0)
        time.sleep(1)
        r = httpx.get(f"{dash.url}/api/devices/cam-c/usage", timeout=10)
        assert r.status_code == 404, r.text  # telemetry does not make a device (lifecycle)
    finally:
        assert dash.stop() == 0, dash.log()

    # While the dashboard is down the camera streams on and reconnects: a new retained birth.
    t_birth = NOW - 60
    env.birth("cam-a", t_birth, srt=4_600_000, mqtt=13_000, snapshot=50_000)
    with sqlite3.connect(env.state / "usage.sqlite3") as db:
        stored = db.execute("SELECT SUM(bytes) FROM hourly WHERE device = 'cam-a'").fetchone()
    assert stored == (3_052_000,)

    dash = env.dashboard()
    try:
        # At once, from the retained birth: the card knows the camera's count and its budget.
        view = dash.device("cam-a")
        assert view["usage"]["bytes_total"] == 4_663_000, view["usage"]
        assert view["usage"]["by_kind"] == {"srt": 4_600_000, "mqtt": 13_000, "snapshot": 50_000}
        assert view["budget"]["state"] == "ok" and view["budget"]["limit_bytes"] == BUDGET
        doc = doc_of(dash, "cam-a")
        # Nothing lost, and the 601,000 bytes of the gap spread over the hours it covered.
        assert hourly_sum(doc) == 3_052_000 + 601_000
        gap_hours = [
            h for h, v in zip(doc["hourly"]["hours"], doc["hourly"]["total"], strict=True)
            if v and h + HOUR > t0 + 2 * HOUR
        ]  # fmt: skip
        assert len(gap_hours) >= 2, doc["hourly"]
        assert doc["history_since"] == pytest.approx(t0)
        # The month to date, walked back from the camera's count: it ends at that count.
        assert doc["cumulative"][-1][1] == 4_663_000 and doc["cumulative"][0] == [P, 0]
        assert doc["period"] == {"start": P, "end": RESETS, "from": "device"}
        assert doc["projected_bytes"] == pytest.approx(4_663_000 * 30 / 10, rel=0.01)

        # The camera lost its count (a reset): what it counts now is new use, not negative use.
        env.telemetry("cam-a", NOW - 30, srt=20_000, mqtt=100, snapshot=0)
        wait_for_sum(dash, "cam-a", 3_653_000 + 20_100)

        # `flumph ctl usage`: the fleet table and one camera's 48 hours.
        fleet = ctl(dash)
        assert fleet.returncode == 0, fleet.stderr
        head, *rows = fleet.stdout.splitlines()
        assert head.split() == ["DEVICE", "STATE", "USED", "BUDGET", "USED%", "PROJECTED",
                                "RESETS", "(UTC)"]  # fmt: skip
        row = next(r for r in rows if r.startswith("cam-a "))
        assert row.split()[:8] == ["cam-a", "ok", "20.1", "KB", "100", "MB", "0.0", "%"], row
        one = ctl(dash, "cam-a")
        assert one.returncode == 0, one.stderr
        lines = one.stdout.splitlines()
        assert lines[0] == "cam-a: budget ok"
        assert "used       20.1 KB of 100 MB (0.0 %)" in one.stdout, one.stdout
        table = lines[lines.index("") + 1 :]
        assert table[0].split() == ["HOUR", "(UTC)", "SRT", "MQTT", "SNAPSHOT", "TOTAL"]
        assert len(table) == 1 + 48 + 1 and table[-1].split()[:2] == ["48", "h"]
        assert table[-1].split()[-2:] == ["3.7", "MB"]  # 3,673,100 bytes in 48 h
        as_json = json.loads(ctl(dash, "cam-a", "--json").stdout)
        assert as_json["device"] == "cam-a" and len(as_json["hourly"]["hours"]) == 48
        missing = ctl(dash, "nobody")
        assert missing.returncode == 1 and "no device 'nobody'" in missing.stderr
    finally:
        assert dash.stop() == 0, dash.log()
    assert "Traceback" not in dash.log(), dash.log()


def test_ctl_usage_without_a_dashboard_says_so(env: Env) -> None:
    dead = Dashboard(1, None, Path("/dev/null"))  # type: ignore[arg-type]
    r = ctl(dead)
    assert r.returncode == 1 and "cannot reach the dashboard at http://127.0.0.1:1" in r.stderr


def test_grant_and_budget_settings_reach_the_camera(env: Env) -> None:
    dash = env.dashboard()
    cam: Probe | None = None
    try:
        cam = Probe(env.broker, "cam-b")
        env.birth("cam-b", NOW - 5, srt=1, mqtt=1, snapshot=0)
        wait_until(lambda: dash.device("cam-b").get("presence") == "online", 10, "cam-b online")
        assert cam.subscribe(T.cmd_all("cam-b")) == [1]
        r = httpx.post(f"{dash.url}/api/devices/cam-b/grant", json={"mb": 50}, timeout=10)
        assert r.status_code == 202 and r.json()["name"] == "grant", r.text
        msg = cam.wait_for(T.cmd("cam-b", "grant"))
        grant = decode(GrantCommand, msg.payload)
        assert grant.mb == 50 and grant.id == r.json()["id"] and not msg.retain
        cam.publish(T.ack("cam-b"), Ack(id=grant.id, ok=True).payload())
        wait_until(
            lambda: dash.get("/api/devices/cam-b")["commands"][0]["state"] == "acked", 10, "ack"
        )
        for body, why in (
            ({"mb": 0}, "mb"),
            ({"mb": "lots"}, "mb"),
            ({"mb": 5, "extra": 1}, '{"mb": N}'),
            ([5], '{"mb": N}'),
        ):
            r = httpx.post(f"{dash.url}/api/devices/cam-b/grant", json=body, timeout=10)
            assert r.status_code == 422 and why in r.json()["detail"], (body, r.text)
        # The budget is a setting: through the shadow like any other.
        r = httpx.post(
            f"{dash.url}/api/devices/cam-b/set",
            json={"data_budget_mb": 250, "budget_reset_day": 5, "budget_pacing": True},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        desired = decode_retained(env, T.desired("cam-b"))
        assert desired["data_budget_mb"] == 250 and desired["budget_reset_day"] == 5
        r = httpx.post(f"{dash.url}/api/devices/cam-b/set", json={"budget_reset_day": 31})
        assert r.status_code == 422 and "budget_reset_day" in r.json()["detail"]

        # Forgetting the camera (its retained status cleared) drops its history.
        env.telemetry("cam-b", NOW - 2, srt=900, mqtt=1, snapshot=0)
        wait_for_sum(dash, "cam-b", 899)
        env.device_pub("cam-b", "status", None, retain=True)
        usage_url = f"{dash.url}/api/devices/cam-b/usage"
        wait_until(lambda: httpx.get(usage_url, timeout=10).status_code == 404, 10, "forgotten")
    finally:
        if cam is not None:
            cam.close()
        assert dash.stop() == 0, dash.log()
    with sqlite3.connect(env.state / "usage.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM hourly WHERE device = 'cam-b'").fetchone() == (0,)


def decode_retained(env: Env, topic: str) -> dict[str, Any]:
    r = subprocess.run(
        ["mosquitto_sub", *env.broker.cli_auth(OPS_USER), "-t", topic, "-C", "1", "-W", "5",
         "--retained-only"],
        capture_output=True, timeout=20, check=True,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def test_an_unusable_state_dir_is_refused_by_name(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    r = subprocess.run(
        [sys.executable, "-m", "flumph", "dashboard", "--port", "0",
         "--state-dir", str(blocker / "state")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert f"usage history {blocker / 'state' / 'usage.sqlite3'}: cannot open" in r.stderr
    assert "Traceback" not in r.stderr
