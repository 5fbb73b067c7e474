"""The first screen in a real browser: with the trained shapes weights installed (smoke-trained stand-ins), the
Generate tab already plays the start-up clip, captioned, before anything is clicked. A module of its own: Playwright's
sync API cannot open a second browser while `test_browser`'s page is open."""

from __future__ import annotations

import re

import pytest

from .test_browser import _assert_plays, _browser_page

pytestmark = pytest.mark.browser


def test_with_trained_weights_the_first_screen_plays_a_generated_clip(with_trained_weights, tmp_path):
    from diffattn.app import launch

    demo = launch(host="127.0.0.1", port=None, work_dir=tmp_path / "app", prevent_thread_lock=True, quiet=True)
    try:
        with _browser_page(demo.local_url) as page:
            _assert_plays(page, "#generate-result video")  # nothing clicked: the start-up example
            page.get_by_text(re.compile(r"Start-up example: tiny:shapes-wan")).wait_for()
            page.screenshot(path=tmp_path / "first-screen.png", full_page=True)
    finally:
        demo.close()
