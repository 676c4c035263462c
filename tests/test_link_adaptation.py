"""Uplink adaptation (issue #11) through bench/linkproxy.py, with a real ingest and a viewer: the
agent lowers its rate within about two seconds when the link cannot carry it, the viewer keeps
getting pictures, and the rate climbs back when the link recovers, never above the setting.
Numbers (freezes, frames delivered, drops, on vs off) are bench/rate_adaptation.py's."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.rate_common import stream_through_proxy
from bench.rate_viewer import Viewer
from flumph.settings import StreamSettings
from tests.conftest import Ingest, start_ingest, stop_ingest

SCHEDULE = "600kbps for 10s, 120kbps for 14s, 600kbps"
DROP_AT, BACK_AT, SECONDS = 10.0, 24.0, 44.0


# A sender must not depend on how the listener delivers: both of the ingest's modes (and any SRT
# listener is one or the other). Without TSBPD the receiver waits for every lost packet and cannot
# skip one the sender dropped (see device-agent/linkestimate.py).
@pytest.fixture(params=[True, False], ids=["tsbpd-on", "tsbpd-off"])
def link_ingest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ingest]:
    flag = "--srt-tsbpd" if request.param else "--no-srt-tsbpd"
    ing = start_ingest(tmp_path, args=["--reconnect-grace-s", "2", flag])
    yield ing
    stop_ingest(ing)


@pytest.mark.slow
def test_rate_follows_the_link_down_and_back_up(link_ingest: Ingest) -> None:
    settings = StreamSettings(codec="av1", bitrate_kbps=300, width=320, height=180, fps=15)
    viewer = Viewer(link_ingest.ws, "adapt-cam").start()
    run = stream_through_proxy(
        settings,
        link_ingest.srt_port,
        SECONDS,
        device_id="adapt-cam",
        proxy_options={"schedule": SCHEDULE, "delay_ms": 20, "queue_bytes": 32768},
        sample_every_s=0.25,
    )
    log = viewer.stop()

    def at(t: float) -> float:  # the proxy's clock -> time since the pipeline started
        return t - run.offset_s

    samples = [(s["t"], s["rate"]) for s in run.samples if s.get("rate")]
    assert all(r["target_kbps"] <= 300 for _, r in samples), "never above the setting"
    before = [r for t, r in samples if t < at(DROP_AT)]
    assert before and before[-1]["reason"] == "setting"
    # Down within ~2 s of the drop (polls every 0.25 s; a loaded machine gets a second more).
    down = next((t for t, r in samples if t >= at(DROP_AT) and r["target_kbps"] < 300), None)
    assert down is not None and down - at(DROP_AT) <= 3.0, samples
    low = [r for t, r in samples if at(DROP_AT) + 6 <= t < at(BACK_AT)]
    assert low and all(r["reason"].startswith("link: ") for r in low)
    # What is sent fits the 120 kbit/s link. (Not the target: the gate skips frames while the
    # queue drains, so a target left above the capacity can already send less than it.)
    assert statistics.median(r["current_kbps"] for r in low) <= 150, low
    # Back up gradually once the link has room again, reaching the setting.
    after = [(t, r) for t, r in samples if t >= at(BACK_AT)]
    assert after[0][1]["target_kbps"] < 300
    back = next((t for t, r in after if r["reason"] == "setting"), None)
    assert back is not None, after[-1]
    assert 3.0 <= back - at(BACK_AT) <= 18.0, timeline(run.samples, run.offset_s)
    # Once the queue built up before the cut has drained, the viewer gets pictures again
    # through the rest of the narrow phase (the freeze at the drop itself, and how it compares
    # with adaptation off, is bench/rate_adaptation.py's to measure).
    start = run.started_at + at(DROP_AT) + 8
    gap, _ = log.longest_gap(start, run.started_at + at(BACK_AT))
    assert gap < 3.0, (gap, timeline(run.samples, run.offset_s))
    assert log.frames_between(start, run.started_at + at(BACK_AT)) > 0
    # The ingest kept receiving: it drops a publisher that sent no data for 15 s (a receiver
    # without TSBPD stalled that way behind a packet the sender had dropped).
    assert "sent no data" not in link_ingest.log(), link_ingest.log()


def timeline(samples: list[dict[str, Any]], offset_s: float) -> str:
    """What the sender saw, poll by poll on the proxy's clock: for a failure to be read from CI's
    output (it froze once for the whole window with TSBPD on, and once here the climb back took
    18.6 s, where 19 logged runs took 7.9-14.1 s)."""
    lines = []
    for s in samples:
        r = s.get("rate") or {}
        lines.append(
            f"{s['t'] + offset_s:6.2f} target {r.get('target_kbps')} sent {r.get('current_kbps')}"
            f" rtt {s.get('srt_rtt_ms')} lost {s.get('srt_packets_lost_sent')}"
            f" connects {s.get('srt_connects')} reopens {s.get('encoder_reopens')}"
            f" skipped {s.get('frames_skipped_rate')} {r.get('reason')}"
        )
    return "\n".join(lines)
