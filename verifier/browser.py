"""Headless Chromium (Debian's package) driven by Playwright: the real browser as a player."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

from verifier.errors import VerifierError

# Flags that keep a headless, root-run Chromium rendering at full rate with no network chatter
# (shared/FIELD-NOTES.md).
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-gpu",
)


class BrowserMissingError(VerifierError, RuntimeError):
    """No chromium binary on PATH."""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise BrowserMissingError(
            "chromium is not installed: `make test` installs Debian's chromium package "
            "(apt-get install chromium)"
        )
    return path


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright  # noqa: PLC0415  (heavy, optional)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=list(CHROMIUM_FLAGS)
        )
        try:
            yield browser
        finally:
            await browser.close()
