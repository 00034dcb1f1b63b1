"""Real Chromium for the playground tests: Debian's `chromium`, driven by Playwright's Python package.

Playwright cannot download its own browsers here, so it launches the system binary (`executable_path`).
Every page records its console errors and any request that would leave the server under test (those are
aborted), so a test can assert that the page stays on its own origin.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

SCREENSHOTS = REPO / "tests" / "screenshots"  # git-ignored: look at them after a run
MISSING = ("Chromium is missing, so the browser tests are skipped: install Debian's `chromium` package "
           "(`just test` does when run as root with apt) or set CHROMIUM=/path/to/chromium.")


def chromium_path() -> str | None:
    candidates = [os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((path for path in candidates if path and Path(path).is_file()), None)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Per test module: Playwright's sync API runs an event loop on this thread while it is open, and
    tests elsewhere that call asyncio.run() must not find one running."""
    path = chromium_path()
    if path is None:
        pytest.skip(MISSING)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


class WatchedPage:
    """A page on `base_url` that records console errors and blocks (and records) requests elsewhere."""

    def __init__(self, browser, base_url: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.outside_requests: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        self.context.route("**/*", self._only_here)

    def _only_here(self, route) -> None:
        url = route.request.url
        if url.startswith(self.base_url + "/"):
            route.continue_()
        else:
            self.outside_requests.append(url)
            route.abort()

    def open(self):
        self.page.goto(self.base_url + "/")
        return self.page

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()
