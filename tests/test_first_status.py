"""No nonsense first status: the figures shown right after a camera starts are either measured
over a real window or unknown, never a rate over a few milliseconds (the first status after a
start once read 91.7 fps and 0.0 kbit/s: one frame 11 ms after a throw-away sample).

A real agent process against the embedded broker and a real ingest; the dashboard's rule is
checked on its fleet model with the messages such an agent sends."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flumph.agent.pipelinestats import MIN_RATE_SPAN_S, PipelineStats
from flumph.control import Topics
from flumph.dashboard.api import device_view
from flumph.dashboard.fleet import Fleet
from flumph.mqtt import MqttSettings
from tests.brokers import start_embedded
from tests.conftest import Ingest
from tests.test_agent_control import DEV, Agent, Watch, pub, start_agent

T = Topics()
FPS = 10  # tests.test_agent_control.SMALL
BITRATE = 250


def test_a_bitrate_over_a_few_milliseconds_is_unknown_not_a_number() -> None:
    stats = PipelineStats()
    stats.recent.extend([(100.000, 12_000), (100.011, 300)])  # a keyframe, then one frame
    assert stats.bitrate_kbps(100.02) is None
    stats.recent.append((100.0 + MIN_RATE_SPAN_S, 300))
    assert stats.bitrate_kbps(101.1) == (300 + 300) * 8 / MIN_RATE_SPAN_S / 1000


def sane(t: dict[str, Any]) -> bool:
    """Unknown, or near what the camera was told (a keyframe makes a first second run high)."""
    fps, kbps = t.get("fps"), t.get("bitrate_kbps")
    return (fps is None or 0.5 * FPS <= fps <= 1.5 * FPS) and (
        kbps is None or 0 < kbps <= 5 * BITRATE
    )


def streaming_telemetry(watch: Watch, since: int, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        mark = watch.mark()
        out.append(watch.wait(T.telemetry(DEV), lambda d: d["streaming"], max(since, mark)))
        since = watch.mark()
    return out


def test_first_telemetry_after_each_start_is_measured_or_unknown(
    ingest: Ingest, tmp_path: Path
) -> None:
    broker = start_embedded(tmp_path)
    watch = Watch(broker)
    agent: Agent | None = None
    try:
        mark = watch.mark()
        agent = start_agent(
            tmp_path, broker, f"srt://127.0.0.1:{ingest.srt_port}",
            "--stream", "--telemetry-interval-s", "1", "--bitrate-kbps", str(BITRATE),
        )  # fmt: skip
        first, second, third = streaming_telemetry(watch, mark, 3)
        assert all(sane(t) for t in (first, second, third)), (first, second, third)
        # Measured once a window has passed: the same figures an operator expects.
        assert third.get("fps") is not None and third.get("bitrate_kbps") is not None, third

        # Stopped and started again: the first figures are again measured or unknown.
        pub(broker, T.desired(DEV), '{"v":1,"streaming":false}', retain=True)
        watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 1 and not d["streaming"], mark)
        time.sleep(1.5)
        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":2,"streaming":true}', retain=True)
        after = streaming_telemetry(watch, mark, 2)
        assert all(sane(t) for t in after), after
        assert after[-1].get("fps") is not None, after
    finally:
        watch.close()
        if agent is not None:
            assert agent.stop() == 0, agent.log()
        broker.stop()


async def test_the_card_shows_no_figures_of_a_previous_session() -> None:
    """A restart's ``reported`` comes after the last telemetry of the session before: until a
    new telemetry arrives, the view says unknown rather than the old session's figures."""
    fleet = Fleet(MqttSettings())

    def handle(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        fleet.handle(T.prefix + f"/cam1/{kind}", json.dumps(doc).encode(), retain=False)
        time.sleep(0.002)  # receipt times order the messages
        return device_view(fleet, fleet.devices["cam1"])

    settings = {"fps": 15, "bitrate_kbps": 250, "width": 640, "height": 360, "streaming": True}
    handle("status", {"state": "online"})
    handle("reported", {"applied_v": 1, "settings": settings, "streaming": True})
    view = handle(
        "telemetry",
        {"streaming": True, "fps": 15.0, "bitrate_kbps": 248.0, "srt": {"rtt_ms": 30.0}},
    )
    assert (view["video"]["fps"], view["video"]["bitrate_kbps"]) == (15.0, 248.0)
    assert view["srt"]["rtt_ms"] == 30.0
    view = handle("reported", {"applied_v": 2, "settings": {**settings, "streaming": False}})
    assert view["streaming"] is False and view["video"]["fps"] is None
    view = handle("reported", {"applied_v": 3, "settings": settings, "streaming": True})
    assert view["streaming"] is True
    assert (view["video"]["fps"], view["video"]["bitrate_kbps"], view["srt"]) == (None, None, None)
    view = handle("telemetry", {"streaming": True, "fps": 14.8, "bitrate_kbps": 251.0})
    assert (view["video"]["fps"], view["video"]["bitrate_kbps"]) == (14.8, 251.0)
