"""ffmpeg streams over SRT into the ingest's bare /view page in headless Chromium: AV1 plays
through MSE; H.265 (no decoder here) is named once, with what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.browser import chromium
from tests.conftest import ARTIFACTS, Ingest
from tests.peers import ffmpeg_publish

pytestmark = pytest.mark.browser


@contextmanager
def publishing(ingest: Ingest, stream_id: str, codec: str) -> Iterator[None]:
    """ffmpeg publishing 20 s of 320x240 at 15 fps in Matroska, running once the ingest has it."""
    proc = ffmpeg_publish(
        ingest.srt_url(stream_id), codec=codec, container="matroska",
        size="320x240", fps=15, seconds=20,
    )  # fmt: skip
    try:
        ingest.wait_stream(stream_id)
        yield
    finally:
        proc.kill()
        proc.communicate()


def test_av1_plays_in_chromium_via_mse(shared_ingest: Ingest) -> None:
    with publishing(shared_ingest, "browser1", "av1"):
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"{shared_ingest.http}/view/browser1")
            page.wait_for_function(
                "() => { const v = document.querySelector('video');"
                " return v && v.currentTime > 2 && v.videoWidth > 0; }",
                timeout=30_000,
            )
            t1 = page.evaluate("document.querySelector('video').currentTime")
            page.wait_for_timeout(1500)
            t2 = page.evaluate("document.querySelector('video').currentTime")
            width, height = page.evaluate(
                "[document.querySelector('video').videoWidth,"
                " document.querySelector('video').videoHeight]"
            )
            stats = page.evaluate("window.flumphPlayer.stats")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ingest-view-av1.png"))
        assert t2 > t1 + 0.5, (t1, t2)
        assert (width, height) == (320, 240)
        assert stats["mime"].startswith('video/mp4; codecs="av01.')
        assert stats["state"] in {"playing", "subscribed", "stalled"}
        # Held near the live edge (a second of slack for a loaded machine).
        assert stats["lagS"] is not None and stats["lagS"] < 1.5, stats


def test_h265_view_page_names_the_mime_once_with_a_hint(shared_ingest: Ingest) -> None:
    """Headless Chromium has no H.265 decoder: the bare page says so once, and what to do."""
    with publishing(shared_ingest, "browser265", "hevc"):
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"{shared_ingest.http}/view/browser265")
            page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('unsupported')",
                timeout=30_000,
            )
            text = page.inner_text("#status")
            page.screenshot(path=str(ARTIFACTS / "ingest-view-h265.png"))
        assert text.count('codecs="') == 1 and "hvc1" in text, text
        assert "cannot play H.265" in text and "switch the camera to AV1" in text, text
