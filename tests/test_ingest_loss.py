"""A link outage makes SRT give messages up: the ingest must go on
from the next keyframe, not stall (before: the Matroska reader read the bytes after the gap as the
rest of a half-read frame and no frame came out again while the connection stayed up). A real
agent pipeline streams through bench/linkproxy.py to a real ingest, watched over WebSocket; no
MQTT, so no keyframe is asked for: the next one comes from the agent's 2 s interval.

SRT gives messages up where the sender drops what it could not deliver in time (libsrt's default,
ffmpeg's and OBS's; the agent's sender no longer does, see device-agent/linkestimate.py: here it is
made to) and the receiver skips them, which needs TSBPD (``--srt-tsbpd``): without it libsrt
may fail to skip a hole the sender left (Haivision/srt#1082), and with a sender that drops
nothing the outage loses no message at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.rate_common import stream_through_proxy
from bench.rate_viewer import Viewer
from flumph.settings import StreamSettings
from tests.conftest import Ingest, start_ingest, stop_ingest

# The link's queue holds 3000 bytes: packets sent in the outage are dropped, and 1.5 s is longer
# than the sender keeps a packet for a 120 ms latency: SRT gives them up (a shorter outage may be
# repaired in time, on a loaded machine more so).
SCHEDULE = "unlimited for 6s, outage for 1.5s, unlimited"
OUTAGE_END_S, SECONDS, KEYINT_S = 7.5, 16.0, 2


@pytest.fixture
def tsbpd_ingest(tmp_path: Path) -> Iterator[Ingest]:
    ing = start_ingest(tmp_path, args=["--reconnect-grace-s", "2", "--srt-tsbpd"])
    yield ing
    stop_ingest(ing)


@pytest.mark.slow
def test_a_stream_goes_on_after_srt_gave_messages_up(
    tsbpd_ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flumph.agent.destination.SENDER_DROPS", True)
    settings = StreamSettings(
        codec="h264", bitrate_kbps=300, width=320, height=180, fps=15, keyint_s=KEYINT_S,
        adapt_to_link=False,
    )  # fmt: skip
    viewer = Viewer(tsbpd_ingest.ws, "loss-cam").start()
    run = stream_through_proxy(
        settings, tsbpd_ingest.srt_port, SECONDS, device_id="loss-cam",
        proxy_options={"schedule": SCHEDULE, "delay_ms": 20, "queue_bytes": 3000},
    )  # fmt: skip
    log = viewer.stop()
    assert "SRT messages lost; going on from the next keyframe" in tsbpd_ingest.log()
    # Pictures again within a keyframe interval (plus a second for a loaded machine) of the end
    # of the outage, and from then on to the end.
    back = run.started_at + OUTAGE_END_S - run.offset_s
    end = run.started_at + SECONDS
    assert log.frames_between(back + KEYINT_S + 1, end - 1) > 0
    gap, at = log.longest_gap(back + KEYINT_S + 1, end - 1)
    assert gap < 2.0, (gap, at - run.started_at)
