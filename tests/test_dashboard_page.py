"""The dashboard page in headless Chromium against a real ``flumph up --demo`` (embedded broker,
ingest and dashboard in one process, page and viewer WebSocket on one origin) and real agents.

The demo camera (synthetic, 640x360, AV1 in software) is listed online; it is stopped and started
from its card, watched, resized from the settings form, stopped again. A second agent encodes
H.265, which headless Chromium cannot decode: its tile says so and switches the camera to AV1.
Tiles subscribe with ``wait``, so opening one starts an idle camera and closing it lets the
on-demand linger (2 s here) stop it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser import chromium
from tests.conftest import ARTIFACTS, free_port

pytestmark = pytest.mark.browser

LINGER_S = 2


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(tmp: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    clean["SVT_LOG"] = "1"
    log_path = tmp / f"{name}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flumph", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean | (env or {}),
        )
    return Proc(name, proc, log_path)


@dataclass
class Backend:
    """URLs of a running backend (one process or several) and its processes."""

    dash: str
    mqtt_url: str
    srt_port: int
    procs: list[Proc]
    tmp: Path

    def api(self, path: str, **kw: Any) -> Any:
        r = httpx.get(self.dash + path, timeout=10, **kw)
        r.raise_for_status()
        return r.json()

    def device(self, device_id: str, **kw: Any) -> dict[str, Any]:
        r = httpx.get(f"{self.dash}/api/devices/{device_id}", timeout=10, **kw)
        return r.json() if r.status_code == 200 else {}

    def agent(self, device_id: str, *extra: str) -> Proc:
        p = spawn(
            self.tmp,
            f"agent-{device_id}",
            [
                "agent",
                "--device-id",
                device_id,
                "--mqtt",
                self.mqtt_url,
                "--ingest",
                f"srt://127.0.0.1:{self.srt_port}",
                "--source",
                "synthetic",
                "--width",
                "320",
                "--height",
                "180",
                "--state-dir",
                str(self.tmp / device_id),
                *extra,
            ],
        )
        self.procs.append(p)
        return p

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.log()}" for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def start_up_demo(tmp: Path, env: dict[str, str] | None = None) -> Backend:
    """`flumph up --demo` on free loopback ports."""
    http, dash = free_port(), free_port()
    mqtt, srt_port = free_port(), free_port(socket.SOCK_DGRAM)
    up = spawn(
        tmp,
        "up",
        [
            "up",
            "--demo",
            "--host",
            "127.0.0.1",
            "--port",
            str(http),
            "--dashboard-port",
            str(dash),
            "--mqtt-port",
            str(mqtt),
            "--srt-port",
            str(srt_port),
            "--state-dir",
            str(tmp / "up"),
        ],
        env={"FLUMPH_DASHBOARD_ONDEMAND_LINGER_S": str(LINGER_S), **(env or {})},
    )
    b = Backend(f"http://127.0.0.1:{dash}", f"mqtt://127.0.0.1:{mqtt}", srt_port, [up], tmp)

    def ready() -> bool:
        if up.proc.poll() is not None:
            raise AssertionError(f"flumph up exited with {up.proc.returncode}:\n{up.log()}")
        return httpx.get(f"{b.dash}/login", timeout=2).status_code in (200, 303)

    wait_until(ready, 60, "flumph up answering")
    return b


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = start_up_demo(tmp_path_factory.mktemp("up-demo"))
    try:
        yield b
    finally:
        b.stop()
    assert "Traceback" not in b.logs(), b.logs()


def wait_online(b: Backend, device_id: str) -> None:
    wait_until(lambda: b.device(device_id).get("presence") == "online", 60, f"{device_id} online")


def card(device_id: str) -> str:
    return f"article.card[data-device={device_id}]"


def video_js(device_id: str) -> str:
    return f"document.querySelector('{card(device_id)} .tile video')"


def wait_playing(page: Page, device_id: str, width: int, timeout_ms: int = 45_000) -> None:
    """The tile's video shows ``width``-wide pictures and its clock advances."""
    v = video_js(device_id)
    page.wait_for_function(
        f"() => {{ const v = {v}; return v && v.videoWidth === {width} && v.currentTime > 0; }}",
        timeout=timeout_ms,
    )
    t1 = page.evaluate(f"{v}.currentTime")
    page.wait_for_function(f"() => {v}.currentTime > {t1} + 0.5", timeout=20_000)


def player_stats(page: Page, device_id: str) -> dict[str, Any]:
    stats: dict[str, Any] = page.evaluate(
        f"window.flumph.cards.get('{device_id}').tile.player.stats"
    )
    return stats


def test_demo_camera_start_watch_resize_stop(demo: Backend) -> None:
    wait_online(demo, "demo")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(demo.dash + "/")
        page.wait_for_selector(f"{card('demo')}[data-presence=online]", timeout=20_000)
        assert page.inner_text("#banner") == "open: no password set"
        assert page.is_visible("#banner") and not page.is_visible("#logout")

        # The demo agent was started with --stream; stop it from the card, then start it.
        page.wait_for_selector(f"{card('demo')}[data-streaming=true]", timeout=30_000)
        page.click(f"{card('demo')} button.stop")
        page.wait_for_selector(f"{card('demo')}[data-streaming=false]", timeout=30_000)
        page.click(f"{card('demo')} button.start")
        page.wait_for_selector(f"{card('demo')}[data-streaming=true]", timeout=30_000)
        assert demo.device("demo")["desired"]["streaming"] is True
        page.wait_for_selector(f"{card('demo')} .sync[data-state=applied]", timeout=30_000)

        page.click(f"{card('demo')} button.watch")
        wait_playing(page, "demo", 640)
        stats = player_stats(page, "demo")
        assert stats["mime"].startswith('video/mp4; codecs="av01.'), stats
        assert stats["firstFrameMs"] is not None and stats["latencyMs"] is not None, stats
        # The figures come from the live feed: telemetry arrives every 5 s while streaming.
        page.wait_for_function(
            "() => /^[1-9][0-9.]* \\/ 15 fps/.test(document.querySelector("
            f"'{card('demo')} .f-rate').textContent)"
            f" && /RTT/.test(document.querySelector('{card('demo')} .f-link').textContent)"
            # The rate loop's target and why (telemetry.rate): nothing holds the demo down.
            f" && /kbit\\/s · the setting/.test(document.querySelector("
            f"'{card('demo')} .f-control').textContent)",
            timeout=30_000,
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator(card("demo")).screenshot(path=str(ARTIFACTS / "dashboard-tile-playing.png"))

        # Resolution from the settings form: pending, then applied, and the picture follows.
        page.click(f"{card('demo')} button.settings-toggle")
        page.select_option(f"{card('demo')} select[name=resolution]", "320x180")
        page.click(f"{card('demo')} button.apply")
        wanted_v = demo.device("demo")["desired_v"]
        assert demo.device("demo")["desired"]["width"] == 320
        page.wait_for_function(
            f"() => {{ const s = document.querySelector('{card('demo')} .sync');"
            f" return s.dataset.state === 'applied' && s.textContent.includes('v{wanted_v} '); }}",
            timeout=30_000,
        )
        wait_playing(page, "demo", 320)
        assert player_stats(page, "demo")["inits"] >= 2  # rejoined on the new init segment

        page.click(f"{card('demo')} button.stop")
        assert not page.is_visible(f"{card('demo')} .tile")  # stopping closes the tile
        page.wait_for_selector(f"{card('demo')}[data-streaming=false]", timeout=30_000)
        wait_until(lambda: demo.device("demo").get("streaming") is False, 30, "reported stop")
        assert not errors, errors


def test_h265_camera_offers_av1_and_tiles_start_idle_cameras(demo: Backend) -> None:
    demo.agent("cam-hevc", "--codec", "hevc")
    demo.agent("cam-av1", "--codec", "av1")
    for dev in ("cam-hevc", "cam-av1"):
        wait_online(demo, dev)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(demo.dash + "/")
        page.wait_for_selector(f"{card('cam-hevc')}[data-streaming=false]", timeout=20_000)

        # Opening the tile starts the idle camera on demand; Chromium has no H.265 decoder here.
        page.click(f"{card('cam-hevc')} button.watch")
        notice = f"{card('cam-hevc')} .unsupported"
        page.wait_for_selector(f"{notice}:visible", timeout=45_000)
        text = page.inner_text(notice)
        assert "cannot play H.265" in text and "hvc1" in text, text
        assert demo.device("cam-hevc")["streaming"] is True
        page.click(f"{notice} button.switch-av1")
        wait_playing(page, "cam-hevc", 320)
        assert player_stats(page, "cam-hevc")["mime"].startswith('video/mp4; codecs="av01.')
        assert not page.is_visible(notice)
        assert demo.device("cam-hevc")["desired"]["codec"] == "av1"

        # Several tiles at once, and a second browser watching the same camera.
        page.click(f"{card('cam-av1')} button.watch")
        wait_playing(page, "cam-av1", 320)
        other = browser.new_context().new_page()
        other.goto(demo.dash + "/")
        other.wait_for_selector(f"{card('cam-hevc')}[data-streaming=true]", timeout=20_000)
        other.click(f"{card('cam-hevc')} button.watch")
        wait_playing(other, "cam-hevc", 320)
        wait_playing(page, "cam-hevc", 320)  # the first viewer is unaffected
        # A snapshot of the idle demo camera becomes its card's thumbnail.
        page.click(f"{card('demo')} button.snapshot")
        page.wait_for_selector(f"{card('demo')} img.thumb:visible", timeout=30_000)
        page.wait_for_function(
            f"() => document.querySelector('{card('demo')} img.thumb').naturalWidth > 0",
            timeout=10_000,
        )
        page.screenshot(path=str(ARTIFACTS / "dashboard-grid.png"))
        other.close()

        # Closing the last tile: the camera stops after the linger...
        page.click(f"{card('cam-av1')} button.watch")
        wait_until(lambda: demo.device("cam-av1").get("streaming") is False, 30, "linger stop")
        page.wait_for_selector(f"{card('cam-av1')}[data-streaming=false]", timeout=20_000)
        # ...and opening it again starts it again, on a fresh stream.
        page.click(f"{card('cam-av1')} button.watch")
        wait_playing(page, "cam-av1", 320)
        page.click(f"{card('cam-av1')} button.watch")
        page.click(f"{card('cam-hevc')} button.watch")


def test_a_device_error_shows_on_its_card(demo: Backend) -> None:
    """pending -> error: the device could not apply the wish and says why on ``reported``."""
    port = demo.mqtt_url.rsplit(":", 1)[1]

    def publish(topic: str, doc: dict[str, Any]) -> None:
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv311", "-q", "1", "-r",
             "-t", f"flumph/cam-broken/{topic}", "-m", json.dumps(doc)],
            check=True, timeout=15,
        )  # fmt: skip

    publish("status", {"state": "online"})  # a device exists once it has come online
    deadline = time.monotonic() + 10
    while httpx.get(f"{demo.dash}/api/devices/cam-broken", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "cam-broken never appeared"
        time.sleep(0.05)
    r = httpx.post(f"{demo.dash}/api/devices/cam-broken/set", json={"fps": 10}, timeout=10)
    assert r.status_code == 200, r.text
    publish("reported", {"applied_v": None, "error": "no encoder opens: libsvtav1 failed"})
    with chromium() as browser:
        page = browser.new_page()
        page.goto(demo.dash + "/")
        sync = f"{card('cam-broken')} .sync"
        page.wait_for_selector(f"{sync}[data-state=error]", timeout=20_000)
        assert page.inner_text(sync) == (
            "settings v1 not applied: no encoder opens: libsvtav1 failed"
        )
        # The settings form refuses what the API refuses, with the field named.
        page.click(f"{card('cam-broken')} button.settings-toggle")
        fps = f"{card('cam-broken')} input[name=fps]"
        page.eval_on_selector(fps, "e => e.removeAttribute('max')")
        page.fill(fps, "500")
        page.click(f"{card('cam-broken')} button.apply")
        note = f"{card('cam-broken')} .form-note"
        page.wait_for_function(
            f"() => document.querySelector('{note}').textContent.startsWith('refused:')"
        )
        assert "fps" in page.inner_text(note), page.inner_text(note)
