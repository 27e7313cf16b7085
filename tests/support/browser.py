"""Headless Chromium (Debian's) driven by Playwright for Python, for the portal's tests.

Never ``playwright install``: the browser is Debian's ``chromium`` package. Playwright
gives every launch a fresh, empty profile. The flags keep Chromium off the network (this
machine has none) and quiet. Screenshots go to ``FASTGW_SCREENSHOTS`` when it is set (the
README's pictures are taken that way) and nowhere otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import require_tool

CHROMIUM_INSTALL = "apt-get install chromium"
PLAYWRIGHT_INSTALL = "pip install playwright (never 'playwright install': Debian's chromium)"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
TIMEOUT_MS = 10_000  # every wait of a test: generous on a loaded 2-core machine


def chromium_path() -> str:
    return require_tool("chromium", CHROMIUM_INSTALL)


def sync_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"playwright is required in CI ({PLAYWRIGHT_INSTALL})")
        pytest.skip(f"playwright not installed: {PLAYWRIGHT_INSTALL}")
    return start


def browser_session() -> Iterator[Any]:
    """A launched browser for a module of tests; closed (and Chromium stopped) after."""
    executable = chromium_path()
    with sync_playwright()() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=FLAGS, headless=True,
                                     timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any) -> Any:
    """A page in a fresh context (no storage shared between tests), failing on any script
    error or dialog (an ``alert`` would be an XSS)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.errors = []
    page.confirms = []  # answers for the confirm() dialogs a test expects, in order
    page.asked = []  # the messages of those dialogs
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))

    def dialog(d: Any) -> None:
        if d.type == "confirm" and page.confirms:
            page.asked.append(d.message)
            if page.confirms.pop(0):
                d.accept()
            else:
                d.dismiss()
            return
        page.errors.append(f"dialog opened: {d.type} {d.message!r}")
        d.dismiss()

    page.on("dialog", dialog)
    return page


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("FASTGW_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
