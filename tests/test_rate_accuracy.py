"""Rate accuracy (issue #11): what the ingest receives stays within +-10 % of ``bitrate_kbps`` in
every 10 s window after the first 10 s.

A representative subset here, one cell per encoder, picked where the encoders strayed most before
the rate loop (SVT-AV1 at 100 kbit/s 360p30: 1.41x with a 4 s GOP; x265 at 500 kbit/s 360p15:
0.85x); the whole codec x size x fps x rate matrix is bench/rate_matrix.py. Real peers: the
agent's pipeline on the synthetic camera, bench/linkproxy.py in its own process counting what it
delivers, a real ingest process.
"""

from __future__ import annotations

import pytest

from bench.rate_common import stream_through_proxy
from flumph.settings import StreamSettings
from tests.conftest import Ingest

CELLS = [
    ("av1", 100, 640, 360, 30),
    ("hevc", 500, 640, 360, 15),
    ("h264", 250, 1280, 720, 15),
]


@pytest.mark.slow
@pytest.mark.parametrize(("codec", "kbps", "width", "height", "fps"), CELLS)
def test_every_10_s_window_after_the_first_10_s_is_within_10_percent(
    shared_ingest: Ingest, codec: str, kbps: int, width: int, height: int, fps: int
) -> None:
    settings = StreamSettings(codec=codec, bitrate_kbps=kbps, width=width, height=height, fps=fps)
    run = stream_through_proxy(settings, shared_ingest.srt_port, 32.0, device_id=f"rate-{codec}")
    windows = run.windows()
    assert len(windows) >= 10, run.payload_kbps
    captured = run.status["frames_captured"]
    # A machine too busy to capture the frames makes any encoder undershoot: say so, not "pass".
    assert run.status["frames_dropped_busy"] + run.status["frames_skipped_late"] < 0.1 * captured
    worst = min(windows), max(windows)
    assert worst[0] >= 0.9 and worst[1] <= 1.1, (
        f"{codec} {kbps} kbit/s {width}x{height}@{fps}: windows {worst}, "
        f"per second {[round(x) for x in run.payload_kbps]}, "
        f"reopens {run.status['encoder_reopens']}, skipped {run.status['frames_skipped_rate']}"
    )
