"""The data budget on the dashboard page, in headless Chromium against a real ``flumph up --demo``
(embedded broker, ingest and dashboard; a real demo agent streaming) plus a camera whose month is
published with mosquitto_pub: its card shows the budget used up, when it resets, the charts drawn
from the real history, the tile tells the viewer why no picture comes (the ingest's words), an
operator grants 50 MB (the camera's side answered with mosquitto_sub/mosquitto_pub) and sets a
budget from the settings form. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser import chromium
from tests.conftest import ARTIFACTS
from tests.test_dashboard_page import Backend, card, start_up_demo, wait_online, wait_until

pytestmark = pytest.mark.browser

DEVICE = "cam-budget"
HOUR = 3600
NOW = time.time()
P = NOW - 20 * 86400
RESETS = P + 30 * 86400
LIMIT = 1_000_000_000


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = start_up_demo(tmp_path_factory.mktemp("up-usage"))
    try:
        yield b
    finally:
        b.stop()
    assert "Traceback" not in b.logs(), b.logs()


def pub(b: Backend, topic: str, doc: dict[str, object], *, retain: bool = False) -> None:
    port = b.mqtt_url.rsplit(":", 1)[1]
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv311", "-q", "1",
           "-t", f"flumph/{DEVICE}/{topic}", "-m", json.dumps(doc)]  # fmt: skip
    subprocess.run([*cmd, "-r"] if retain else cmd, check=True, timeout=15)


def counters(i: int) -> dict[str, int]:
    """A camera that streams in the evenings: its counters after report ``i`` (one per hour)."""
    srt = sum(40_000_000 if h % 24 in (18, 19, 20) else 1_500_000 for h in range(i))
    return {"srt": 900_000_000 + srt, "mqtt": 2_000_000 + 2000 * i, "snapshot": 90_000 * (i // 6)}


def usage(i: int) -> dict[str, object]:
    c = counters(i)
    return {"month": "x", "bytes_sent": sum(c.values()), "bytes_received": 0,
            "period_start": P, "by_kind": c}  # fmt: skip


def publish_month(b: Backend) -> int:
    """40 hours of hourly reports ending now, the budget used up; returns the count."""
    first = NOW - 40 * HOUR
    pub(b, "status", {"state": "online", "ts": first, "usage": usage(0)}, retain=True)
    for i in range(1, 41):
        pub(b, "telemetry", {"ts": first + i * HOUR, "streaming": False, "usage": usage(i),
                             "heartbeat_s": 3600})  # fmt: skip
    used = sum(counters(40).values())
    budget = {
        "state": "exhausted",
        "used_bytes": used,
        "budget_bytes": LIMIT,
        "allowance_bytes": 0,
        "period_start": P,
        "resets_at": RESETS,
        "cap_kbps": None,
    }
    pub(b, "reported", {"applied_v": None, "streaming": False, "budget": budget, "ts": NOW},
        retain=True)  # fmt: skip
    return used


def painted(page: Page, selector: str) -> int:
    """Pixels of the chart's canvas that something was drawn on."""
    count: int = page.evaluate(
        """(sel) => {
            const c = document.querySelector(sel);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
            return n;
        }""",
        selector,
    )
    return count


def test_budget_state_charts_grant_and_the_viewers_notice(up: Backend) -> None:
    used = publish_month(up)
    doc = wait_until(
        lambda: (d := up.api(f"/api/devices/{DEVICE}/usage"))["history_since"] and d, 60, "history"
    )
    assert sum(doc["hourly"]["total"]) == used - sum(counters(0).values())
    resets = datetime.fromtimestamp(RESETS, UTC).strftime("%Y-%m-%d %H:%M UTC")
    wait_online(up, "demo")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(up.dash + "/")
        c = card(DEVICE)
        page.wait_for_selector(f"{c} .badge.budget[data-state=exhausted]", timeout=45_000)
        text = page.inner_text(f"{c} .u-text")
        assert text == f"budget used up: streaming stopped · resets {resets}", text
        assert "of 1.0 GB" in page.inner_text(f"{c} .f-usage")
        page.wait_for_selector(f"{c} .usage[data-rendered]", timeout=45_000)
        # The charts are drawn (uPlot's canvases hold pixels), with the kinds in the legend.
        assert painted(page, f"{c} .u-hourly canvas") > 2000
        assert painted(page, f"{c} .u-period canvas") > 2000
        legend = page.inner_text(f"{c} .u-hourly .u-legend")
        assert "video (SRT)" in legend and "control (MQTT)" in legend, legend
        assert "by " + resets in page.inner_text(f"{c} .u-projection")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator(c).screenshot(path=str(ARTIFACTS / "dashboard-usage-exhausted.png"))

        # Watching it: the ingest tells the viewer why no picture comes.
        page.click(f"{c} button.watch")
        notice = f"{DEVICE}'s data budget for this month is used up; it resets {resets}"
        page.wait_for_function(
            f"() => document.querySelector('{c} .t-state').textContent === {json.dumps(notice)}",
            timeout=45_000,
        )
        page.locator(c).screenshot(path=str(ARTIFACTS / "dashboard-usage-tile-notice.png"))
        page.click(f"{c} button.watch")

        # Grant 50 MB: the camera (mosquitto_sub) gets cmd/grant and answers on ack.
        port = up.mqtt_url.rsplit(":", 1)[1]
        sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv311", "-q", "1",
             "-t", f"flumph/{DEVICE}/cmd/grant", "-C", "1", "-W", "30"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)  # subscribed before the command goes
        page.click(f"{c} button.grant-toggle")
        page.fill(f"{c} input[name=grant_mb]", "50")
        page.click(f"{c} button.grant")
        out, _ = sub.communicate(timeout=30)
        command = json.loads(out)
        assert command["mb"] == 50 and set(command) == {"id", "mb"}, command
        ack = {"id": command["id"], "ok": True, "error": None, "ts": time.time()}
        port_args = ["-h", "127.0.0.1", "-p", port, "-V", "mqttv311", "-q", "1"]
        subprocess.run(["mosquitto_pub", *port_args, "-t", f"flumph/{DEVICE}/ack",
                        "-m", json.dumps(ack)], check=True, timeout=15)  # fmt: skip
        page.wait_for_function(
            f"() => document.querySelector('{c} .result').textContent"
            " === '50 MB granted for this period'",
            timeout=45_000,
        )

        # The budget from the settings form goes to desired like any other setting.
        page.click(f"{c} button.settings-toggle")
        page.fill(f"{c} input[name=data_budget_mb]", "2000")
        page.fill(f"{c} input[name=budget_reset_day]", "5")
        page.check(f"{c} input[name=budget_pacing]")
        page.click(f"{c} button.apply")
        wait_until(
            lambda: up.device(DEVICE).get("desired", {}).get("data_budget_mb") == 2000, 15, "set"
        )
        desired = up.device(DEVICE)["desired"]
        assert desired["budget_reset_day"] == 5 and desired["budget_pacing"] is True

        # The demo camera's real telemetry makes its own history (the agent counts SRT bytes).
        def demo_history() -> bool:
            d = up.api("/api/devices/demo/usage")
            return bool(sum(d["hourly"]["by_kind"]["srt"]) > 0)

        wait_until(demo_history, 120, "demo history")
        page.reload()
        page.wait_for_selector(f"{card('demo')} .usage[data-rendered]", timeout=45_000)
        assert painted(page, f"{card('demo')} .u-hourly canvas") > 500
        page.screenshot(path=str(ARTIFACTS / "dashboard-usage-grid.png"), full_page=True)
        assert not errors, errors
    r = httpx.get(f"{up.dash}/static/vendor/uPlot.esm.js", timeout=10)
    assert r.status_code == 200 and "export { uPlot as default }" in r.text
    assert httpx.get(f"{up.dash}/static/vendor/..%2Fcard.js", timeout=10).status_code == 404
