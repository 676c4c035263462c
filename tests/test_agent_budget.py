"""The data budget enforced by a real `flumph agent` process: mosquitto for control (driven with
mosquitto_pub, watched with a paho probe), srt-live-transmit or the Flumph ingest receiving the
stream. The budget's clock is moved with FLUMPH_TEST_CLOCK_START (see flumph.agent.main)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flumph.agent.usage import FILE_NAME
from flumph.control import Topics
from tests.brokers import Broker, start_mosquitto
from tests.conftest import Ingest, free_port, wait_until
from tests.test_agent_control import DEV, Agent, Watch, pub, stream_frames

pytestmark = pytest.mark.skipif(
    shutil.which("srt-live-transmit") is None, reason="srt-tools not installed"
)

T = Topics()
VIDEO = ["--codec", "h264", "--width", "640", "--height", "360", "--fps", "15"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_mosquitto(tmp_path)
    yield b
    b.stop()


def agent_process(
    tmp: Path, broker: Broker, ingest_url: str, *args: str, clock: str | None = None
) -> Agent:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    env["SVT_LOG"] = "1"
    if clock is not None:
        env["FLUMPH_TEST_CLOCK_START"] = clock
    log_path = tmp / f"agent-{time.monotonic_ns()}.log"
    cmd = [
        sys.executable, "-m", "flumph", "agent", "--device-id", DEV, "--ingest", ingest_url,
        "--state-dir", str(tmp / "agent-state"), *VIDEO,
        "--mqtt", broker.url, "--mqtt-keepalive-s", "30",
        "--mqtt-reconnect-min-s", "1", "--mqtt-reconnect-max-s", "2",
        "--telemetry-interval-s", "1", *args,
    ]  # fmt: skip
    with log_path.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    return Agent(proc, log_path)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


class SrtSink:
    """srt-live-transmit as the receiving peer, writing what it gets to a file."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port(2)  # SOCK_DGRAM
        self.path = tmp / f"received-{self.port}.mkv"
        with self.path.open("wb") as sink:
            self.proc = subprocess.Popen(
                ["srt-live-transmit", "-q", f"srt://127.0.0.1:{self.port}?mode=listener",
                 "file://con"],
                stdout=sink, stderr=subprocess.DEVNULL,
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"srt://127.0.0.1:{self.port}"

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def flumph_ctl(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    env["FLUMPH_CTL_MQTT"] = broker.url
    cmd = [sys.executable, "-m", "flumph", "ctl", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def budget_of(doc: dict[str, Any]) -> dict[str, Any]:
    budget: dict[str, Any] = doc["budget"]
    return budget


def stopped_by_budget(doc: dict[str, Any]) -> bool:
    return budget_of(doc)["state"] == "exhausted" and not doc["streaming"]


def saved_periods(tmp: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((tmp / "agent-state" / FILE_NAME).read_text())
    return {m["month"]: m for m in doc["months"]}


def test_a_small_budget_stops_the_stream_within_one_second_of_video(
    broker: Broker, tmp_path: Path, agents: list[Agent]
) -> None:
    """1 MB at 500 kbit/s: the receiver gets no more than the budget plus one second of video,
    the 80 % warning comes first, and the agent says why it stopped."""
    sink = SrtSink(tmp_path)
    watch = Watch(broker)
    try:
        agent = agent_process(
            tmp_path, broker, sink.url, "--bitrate-kbps", "500", "--data-budget-mb", "1", "--stream"
        )
        agents.append(agent)
        started = watch.wait(T.reported(DEV), lambda d: d["streaming"], timeout=30)
        assert budget_of(started)["budget_bytes"] == 1_000_000
        t0 = time.monotonic()
        warn = watch.wait(T.reported(DEV), lambda d: budget_of(d)["state"] == "warn", timeout=60)
        assert budget_of(warn)["used_bytes"] >= 800_000
        assert "% of the data budget used" in budget_of(warn)["message"]
        watch.wait(T.reported(DEV), lambda d: budget_of(d)["state"] == "exhausted", timeout=60)
        elapsed = time.monotonic() - t0
        received_at_stop = sink.size()
        time.sleep(3)  # nothing more may arrive
        received = sink.size()
        assert received == received_at_stop, "bytes kept arriving after the stop"
        final = watch.wait(T.reported(DEV), lambda d: not d["streaming"], timeout=10)
        b = budget_of(final)
        assert b["state"] == "exhausted" and "data budget used up" in b["message"]
        assert "resets" in b["message"] and b["resets_at"] > time.time()
        # One second of video at the rate actually achieved (the encoder may overshoot).
        rate = max(500_000 / 8, received / max(elapsed, 1.0))
        assert received <= 1_000_000 + rate, (received, rate)
        # The device's own count: IP level, every kind, within the budget (the control
        # connection goes on and may add its few bytes, never a frame).
        assert b["used_bytes"] <= 1_000_000 + 2_000
        # Not stopped too early: the video payload is most of the budget (the rest is SRT
        # headers and ACKs, MQTT, and the last frame that did not fit).
        assert received >= 0.8 * 1_000_000, received
        agent_log = agent.log()
        assert "data budget reached" in agent_log
    finally:
        watch.close()
        sink.stop()
    assert agent.stop() == 0


def test_refusals_warning_and_a_grant_that_takes_effect_at_once(
    broker: Broker, tmp_path: Path, agents: list[Agent]
) -> None:
    sink = SrtSink(tmp_path)
    watch = Watch(broker)
    try:
        agent = agent_process(
            tmp_path, broker, sink.url, "--bitrate-kbps", "300", "--data-budget-mb", "0.4",
            "--stream",
        )  # fmt: skip
        agents.append(agent)
        watch.wait(T.reported(DEV), lambda d: budget_of(d)["state"] == "exhausted", timeout=60)
        watch.wait(T.reported(DEV), lambda d: not d["streaming"], timeout=10)
        size_at_stop = sink.size()

        # An operator start (what on-demand also sends): applied, but no stream, and why.
        mark = watch.mark()
        pub(broker, T.desired(DEV), json.dumps({"v": 5, "streaming": True}), retain=True)
        refused = watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 5, since=mark)
        assert not refused["streaming"] and refused["error"] is None
        assert "data budget used up" in budget_of(refused)["message"]

        # Commands that would start or cost bytes are refused on ack, in words.
        for name in ("restart", "snapshot"):
            mark = watch.mark()
            pub(broker, T.cmd(DEV, name), json.dumps({"id": f"{name}-1"}))
            ack = watch.ack(f"{name}-1", mark)
            assert not ack["ok"] and "data budget used up" in ack["error"], ack
            assert "0.40 MB" in ack["error"] and "resets" in ack["error"]

        # A bad grant names the field; a good one resumes the stream at once.
        mark = watch.mark()
        pub(broker, T.cmd(DEV, "grant"), json.dumps({"id": "g-0", "mb": -1}))
        assert "mb" in watch.ack("g-0", mark)["error"]
        mark = watch.mark()
        granted = flumph_ctl(broker, "grant", DEV, "0.3")
        acked = time.monotonic()  # flumph ctl returns once the device acked the grant
        assert granted.returncode == 0 and "grant ok" in granted.stdout, granted.stderr
        resumed = watch.wait(T.reported(DEV), lambda d: d["streaming"], since=mark, timeout=10)
        assert time.monotonic() - acked < 3, "the grant must take effect at once"
        assert budget_of(resumed)["allowance_bytes"] == 300_000
        wait_until(lambda: sink.size() > size_at_stop + 50_000, "video after the grant", timeout=30)
        # ... and it stops again at the new limit.
        again = watch.wait(
            T.reported(DEV),
            lambda d: budget_of(d)["state"] == "exhausted" and not d["streaming"],
            since=mark,
            timeout=60,
        )
        assert "(budget + 0.30 MB granted)" in budget_of(again)["message"]

        # Raising the budget takes effect at once too.
        mark = watch.mark()
        pub(broker, T.desired(DEV), json.dumps({"v": 6, "data_budget_mb": 5}), retain=True)
        raised = watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 6, since=mark)
        assert budget_of(raised)["budget_bytes"] == 5_000_000
        watch.wait(T.reported(DEV), lambda d: d["streaming"], since=mark, timeout=10)
        tel = watch.wait(T.telemetry(DEV), lambda d: d["streaming"], since=mark, timeout=15)
        assert tel["budget"]["state"] in ("ok", "warn")
        assert set(tel["usage"]["by_kind"]) == {"srt", "mqtt", "snapshot"}
        assert tel["usage"]["by_kind"]["mqtt"] > 0
    finally:
        watch.close()
        sink.stop()
    assert agent.stop() == 0


def test_usage_survives_a_restart_and_starts_over_at_the_month_boundary(
    broker: Broker, tmp_path: Path, agents: list[Agent]
) -> None:
    sink = SrtSink(tmp_path)
    watch = Watch(broker)
    try:
        # January, near its end: stream a little, stop.
        first = agent_process(tmp_path, broker, sink.url, "--data-budget-mb", "50", "--stream",
                              clock="2027-01-31T23:58:00Z")  # fmt: skip
        agents.append(first)
        wait_until(lambda: sink.size() > 50_000, "video from the first agent", timeout=30)
        assert first.stop() == 0
        january = saved_periods(tmp_path)["2027-01"]
        used_before = january["wire_bytes_sent"] + january["wire_bytes_received"]
        assert january["by_kind"]["srt"] > 50_000 and january["by_kind"]["mqtt"] > 0

        # A new process, 20 s before February: its birth carries January's count at once.
        mark = watch.mark()
        second = agent_process(tmp_path, broker, sink.url, "--data-budget-mb", "50", "--stream",
                               clock="2027-01-31T23:59:40Z")  # fmt: skip
        agents.append(second)
        birth = watch.wait(T.status(DEV), lambda d: d["state"] == "online", since=mark)
        assert birth["usage"]["month"] == "2027-01"
        assert birth["usage"]["bytes_sent"] + birth["usage"]["bytes_received"] >= used_before
        assert birth["usage"]["period_start"] == 1798761600.0  # 2027-01-01 00:00 UTC
        # Then the period turns: the count starts over and the reset moves a month on.
        feb = watch.wait(
            T.telemetry(DEV), lambda d: d["usage"]["month"] == "2027-02", since=mark, timeout=60
        )
        assert feb["budget"]["period_start"] == 1801440000.0  # 2027-02-01 00:00 UTC
        assert feb["budget"]["resets_at"] == 1803859200.0  # 2027-03-01 00:00 UTC
        assert feb["budget"]["used_bytes"] < used_before
        assert second.stop() == 0
        periods = saved_periods(tmp_path)
        assert set(periods) == {"2027-01", "2027-02"}
        assert periods["2027-01"]["wire_bytes_sent"] > january["wire_bytes_sent"]
    finally:
        watch.close()
        sink.stop()


def test_the_flumph_ingest_gets_nothing_once_the_budget_is_used(
    broker: Broker, ingest: Ingest, tmp_path: Path, agents: list[Agent]
) -> None:
    """The same stop against the real ingest: its frame count freezes at the stop."""
    agent = agent_process(
        tmp_path, broker, f"srt://127.0.0.1:{ingest.srt_port}", "--bitrate-kbps", "300",
        "--data-budget-mb", "0.3", "--stream",
    )  # fmt: skip
    agents.append(agent)
    watch = Watch(broker)
    try:
        ingest.wait_stream(DEV, timeout=30)
        frames, deadline = 0, time.monotonic() + 60
        while time.monotonic() < deadline:
            frames = max(frames, stream_frames(ingest))
            try:
                watch.wait(T.reported(DEV), stopped_by_budget, timeout=0.1)
                break
            except AssertionError:
                continue
        frames = max(frames, stream_frames(ingest))
        time.sleep(2.5)  # past the ingest's reconnect grace: the stream has ended
        assert all(s["id"] != DEV or not s["publishing"] for s in ingest.streams())
        # 0.3 MB at ~300 kbit/s is ~8 s of video: at 15 fps, at most 9 s of frames arrived.
        assert 5 * 15 <= frames <= 9 * 15, frames
    finally:
        watch.close()
    assert agent.stop() == 0


def start_backend_dashboard(tmp: Path, broker: Broker) -> subprocess.Popen[bytes]:
    """The real fleet service (on-demand linger 1 s) on the anonymous test broker."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    cmd = [sys.executable, "-m", "flumph", "dashboard", "--host", "127.0.0.1", "--port",
           str(port), "--mqtt", broker.url, "--ondemand-linger-s", "1"]  # fmt: skip
    with (tmp / f"dashboard-{port}.log").open("wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


async def test_an_on_demand_start_is_refused_until_a_grant(
    broker: Broker, tmp_path: Path, agents: list[Agent]
) -> None:
    """Viewer waits at the real ingest → ingest demand → fleet service merges streaming:true →
    the exhausted agent applies it but does not stream; a grant starts it for the viewer."""
    import asyncio

    import websockets

    from tests.conftest import start_ingest, stop_ingest

    ingest = start_ingest(tmp_path, args=["--mqtt", broker.url, "--reconnect-grace-s", "2"])
    dashboard = start_backend_dashboard(tmp_path, broker)
    watch = Watch(broker)
    try:
        agent = agent_process(
            tmp_path, broker, f"srt://127.0.0.1:{ingest.srt_port}", "--bitrate-kbps", "300",
            "--data-budget-mb", "0.2", "--stream",
        )  # fmt: skip
        agents.append(agent)
        await asyncio.to_thread(watch.wait, T.reported(DEV), stopped_by_budget, 0, 60)
        mark = watch.mark()
        async with websockets.connect(f"{ingest.ws}/ws/view/{DEV}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "stream_id": DEV, "wait": True}))
            applied = await asyncio.to_thread(
                watch.wait, T.reported(DEV), lambda d: d["applied_v"] is not None, mark, 30
            )
            assert applied["settings"]["streaming"] is True and not applied["streaming"]
            assert "data budget used up" in budget_of(applied)["message"]
            # Nothing reaches the viewer while the budget is used up.
            got: list[object] = []
            try:
                async with asyncio.timeout(3):
                    while True:
                        got.append(await ws.recv())
            except TimeoutError:
                pass
            assert not [m for m in got if isinstance(m, bytes)], "video sent past the budget"
            granted = await asyncio.to_thread(flumph_ctl, broker, "grant", DEV, "1")
            assert granted.returncode == 0, granted.stderr
            async with asyncio.timeout(20):
                while not isinstance(await ws.recv(), bytes):
                    pass  # the media message, then the init segment: the viewer is served
    finally:
        watch.close()
        dashboard.terminate()
        dashboard.wait(15)
        stop_ingest(ingest)
    assert agent.stop() == 0
