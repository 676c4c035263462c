"""A dashboard you can watch on, in headless Chromium against a real ``flumph up --demo``:

- at 390 px (a phone) and 1920 px (a desktop) nothing is wider than the window, the header keeps
  to two lines, the settings form fits its card (screenshots of both in tests/artifacts/);
- a streaming camera shows its latest picture (a still from the live stream), not "no snapshot";
- nothing the page writes lies over the picture: every readout is outside the video's content;
- a tile can be enlarged to the grid's width and put on the whole screen, and playback goes on;
- closing a tile leaves its last frame; the first figures after a start are never nonsense;
- ``flumph up --demo`` keeps its demo camera streaming with nobody watching.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.browser import chromium
from tests.conftest import ARTIFACTS
from tests.test_dashboard_page import (
    LINGER_S,
    Backend,
    card,
    start_up_demo,
    video_js,
    wait_online,
    wait_playing,
    wait_until,
)

pytestmark = pytest.mark.browser

DEMO = card("demo")
WIDTHS = {"phone": (390, 844), "desktop": (1920, 1080)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = start_up_demo(tmp_path_factory.mktemp("up-layout"))
    try:
        wait_online(b, "demo")
        yield b
    finally:
        b.stop()
    assert "Traceback" not in b.logs(), b.logs()


def open_page(browser: Any, backend: Backend, size: tuple[int, int]) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(backend.dash + "/")
    page.wait_for_selector(f"{DEMO}[data-streaming=true]", timeout=30_000)
    return page, errors


OVERFLOW_JS = """(sel) => {
  const doc = document.documentElement;
  const out = {page: [doc.scrollWidth, innerWidth], wide: []};
  for (const c of document.querySelectorAll('article.card')) {
    const box = c.getBoundingClientRect();
    for (const e of c.querySelectorAll('*')) {
      const r = e.getBoundingClientRect();
      if (r.width && (r.right > box.right + 0.5 || r.left < box.left - 0.5)) {
        out.wide.push(`${e.tagName}.${e.className}: ${r.left}-${r.right}`
          + ` outside ${box.left}-${box.right}`);
      }
    }
  }
  out.header = document.querySelector('header.top').getBoundingClientRect().height;
  out.h1 = document.querySelector('header.top h1').getBoundingClientRect().height;
  return out;
}"""


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_layout_fits_the_window(demo: Backend, name: str) -> None:
    width, height = WIDTHS[name]
    with chromium() as browser:
        page, errors = open_page(browser, demo, (width, height))
        page.click(f"{DEMO} button.settings-toggle")
        page.wait_for_selector(f"{DEMO} form.settings:visible")
        # A streaming camera shows its latest picture, taken from the live stream.
        page.wait_for_selector(f"{DEMO} .stage[data-picture]", timeout=30_000)
        page.wait_for_function(
            f"() => document.querySelector('{DEMO} img.thumb').naturalWidth === 640",
            timeout=10_000,
        )
        caption = page.inner_text(f"{DEMO} .caption")
        assert re.match(r"(live frame|snapshot) · ", caption), caption
        assert "no picture" not in page.inner_text(DEMO)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}.png"), full_page=True)
        fit = page.evaluate(OVERFLOW_JS)
        assert fit["page"][0] <= fit["page"][1], fit  # no sideways scrolling
        assert not fit["wide"], fit["wide"]
        # The header: one line on a desktop, two at most on a phone (the banner wraps).
        assert fit["header"] <= (2 if width < 600 else 1) * fit["h1"] + 40, fit
        assert not errors, errors


CONTENT_RECT_JS = """(sel) => {
  const v = document.querySelector(sel + ' .tile video');
  const box = v.getBoundingClientRect();
  // object-fit: contain: the picture is centred at its own aspect ratio inside the box.
  const scale = Math.min(box.width / v.videoWidth, box.height / v.videoHeight);
  const w = v.videoWidth * scale, h = v.videoHeight * scale;
  const pic = {left: box.left + (box.width - w) / 2, top: box.top + (box.height - h) / 2};
  pic.right = pic.left + w; pic.bottom = pic.top + h;
  const cover = [];
  const root = document.fullscreenElement || document.querySelector(sel);
  for (const e of root.querySelectorAll('*')) {
    if (e === v || e.contains(v)) continue;
    const style = getComputedStyle(e);
    if (style.visibility === 'hidden' || style.display === 'none') continue;
    if (style.opacity === '0') continue;
    for (const r of e.getClientRects()) {
      if (!r.width || !r.height) continue;
      if (r.left < pic.right - 1 && r.right > pic.left + 1 && r.top < pic.bottom - 1
          && r.bottom > pic.top + 1) {
        cover.push(`${e.tagName}.${e.className} "${e.textContent.slice(0, 40)}"`);
      }
    }
  }
  return {pic, box: [box.width, box.height], cover};
}"""


def assert_nothing_over_the_picture(page: Page) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(CONTENT_RECT_JS, DEMO)
    assert not found["cover"], found
    return found


def test_watch_enlarge_fullscreen_and_nothing_over_the_picture(demo: Backend) -> None:
    width, height = WIDTHS["desktop"]
    with chromium() as browser:
        page, errors = open_page(browser, demo, (width, height))
        page.click(f"{DEMO} button.watch")
        wait_playing(page, "demo", 640)
        page.wait_for_function(
            f"() => /delay \\d+ ms/.test(document.querySelector('{DEMO} .caption').textContent)",
            timeout=20_000,
        )
        small = assert_nothing_over_the_picture(page)

        page.click(f"{DEMO} button.enlarge")
        page.wait_for_function(
            f"() => document.querySelector('{DEMO}').classList.contains('enlarged')"
        )
        wait_playing(page, "demo", 640)  # the same video element plays on
        big = assert_nothing_over_the_picture(page)
        assert big["box"][0] >= 0.9 * (width - 40) > 3 * small["box"][0], (small, big)
        page.screenshot(path=str(ARTIFACTS / "dashboard-1920-enlarged.png"))

        page.click(f"{DEMO} button.fullscreen")
        page.wait_for_function(
            "() => document.fullscreenElement"
            " && document.fullscreenElement.classList.contains('stage')"
        )
        wait_playing(page, "demo", 640)
        full = assert_nothing_over_the_picture(page)
        # The picture takes the screen's height, less the caption line below it.
        assert full["pic"]["bottom"] - full["pic"]["top"] >= height - 80, full
        page.screenshot(path=str(ARTIFACTS / "dashboard-1920-fullscreen.png"))
        page.click(f"{DEMO} button.fullscreen")  # now "Exit fullscreen"
        page.wait_for_function("() => document.fullscreenElement === null")

        # Closing leaves the last frame seen as the card's picture.
        page.click(f"{DEMO} button.watch")
        page.wait_for_selector(f"{DEMO} .stage[data-picture=last-frame-seen]", timeout=10_000)
        assert page.evaluate(f"document.querySelector('{DEMO} img.thumb').naturalWidth") == 640
        assert page.evaluate(video_js("demo")) is None
        assert not errors, errors


RATES_JS = """(sel) => {
  window.rates = [];
  const dd = document.querySelector(sel + ' .f-rate');
  new MutationObserver(() => window.rates.push(dd.textContent))
    .observe(dd, {childList: true, characterData: true, subtree: true});
}"""


def sane_rate(text: str) -> bool:
    """target/measuring, or measured figures near the demo camera's 15 fps and 250 kbit/s."""
    m = re.match(r"([\d.]+) / 15 fps · (\d+) / 250 kbit/s$", text)
    if m is None:
        return text.startswith(("target ", "measuring… (target "))
    return 7.5 <= float(m.group(1)) <= 22.5 and 0 < int(m.group(2)) <= 1250


def test_first_figures_after_a_start_and_the_demo_keeps_streaming(demo: Backend) -> None:
    with chromium() as browser:
        page, errors = open_page(browser, demo, WIDTHS["phone"])
        # Watched and left: the demo camera (--always-on) keeps streaming past the linger.
        page.click(f"{DEMO} button.watch")
        wait_playing(page, "demo", 640)
        page.click(f"{DEMO} button.watch")
        page.wait_for_timeout((LINGER_S + 3) * 1000)
        assert demo.device("demo")["streaming"] is True
        assert demo.device("demo")["ondemand"]["stops_in_s"] is None

        page.evaluate(RATES_JS, DEMO)
        page.click(f"{DEMO} button.stop")
        page.wait_for_selector(f"{DEMO}[data-streaming=false]", timeout=30_000)
        page.click(f"{DEMO} button.start")
        page.wait_for_selector(f"{DEMO}[data-streaming=true]", timeout=30_000)
        page.wait_for_function(
            f"() => /^[0-9.]+ \\/ 15 fps/.test(document.querySelector('{DEMO} .f-rate')"
            ".textContent)",
            timeout=30_000,
        )
        seen: list[str] = page.evaluate("window.rates")
        assert any(t.startswith("measuring") for t in seen), seen
        assert all(sane_rate(t) for t in seen), seen
        wait_until(lambda: demo.device("demo").get("streaming") is True, 10, "streaming")
        assert not errors, errors
