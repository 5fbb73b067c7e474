"""The app in a real browser: Debian's Chromium, driven by Playwright with that executable, loads the page, runs a
generation and an edit, and checks that both result videos decode and play. Screenshots go to `tmp_path`.

Skips (saying why) only when Playwright or Chromium is missing or Chromium cannot start; `.ci/run` installs both.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_MS = 120_000


@contextlib.contextmanager
def _browser_page(url: str) -> Iterator[Any]:
    """A page of the app at `url` in headless Chromium (a fresh profile), or a skip with the reason it cannot run."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"the playwright package is not installed ({exc}); pip install -e '.[test]'")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        try:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000})
        except Exception as exc:  # any launch failure means the browser cannot run here: say why
            pytest.skip(f"Chromium at {chromium} could not be launched: {exc}")
        page = context.new_page()
        page.goto(url)
        page.get_by_role("heading", name="diffattn").wait_for()
        yield page
        context.close()


@pytest.fixture(scope="module")
def page(app_server):
    """A page of the shared app (random tiny models)."""
    with _browser_page(app_server[0]) as page:
        yield page


def _assert_plays(page, selector: str) -> None:
    """The result video has decoded frames, a duration, and its time advances once playing."""
    page.locator(selector).wait_for(state="attached", timeout=RUN_TIMEOUT_MS)
    video = page.locator(selector).element_handle()
    page.wait_for_function("v => v.readyState >= 2 && v.duration > 0 && v.videoWidth > 0", arg=video, timeout=30_000)
    video.evaluate("v => { v.muted = true; v.currentTime = 0; return v.play(); }")
    page.wait_for_function("v => !v.paused && v.currentTime > 0", arg=video, timeout=10_000)


def test_generation_and_edit_play_in_the_browser(page, clip_file, tmp_path):
    page.get_by_role("button", name="Generate", exact=True).click()
    _assert_plays(page, "#generate-result video")
    page.get_by_text(re.compile(r"\d+ frames at \d+×\d+")).first.wait_for()
    page.screenshot(path=tmp_path / "generate.png", full_page=True)

    page.get_by_role("tab", name="Edit video").click()
    page.locator("#edit-input input[type=file]").set_input_files(str(clip_file))
    page.locator("#edit-input video").wait_for(timeout=30_000)
    page.locator("#edit-frames input").fill("4")
    page.locator("#fatezero-settings").get_by_label("num inference steps").fill("2")
    page.get_by_role("button", name="Edit video").click()
    _assert_plays(page, "#edit-result video")
    page.get_by_text(re.compile(r"4 frames at 64×64.* edited with FateZero")).wait_for()
    page.screenshot(path=tmp_path / "edit.png", full_page=True)

