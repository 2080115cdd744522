"""Debian's Chromium for the tests: where it is, and the flags it runs with here.

Not a browser that Playwright downloads (this machine has no internet): Playwright drives
``/usr/bin/chromium``. Without it a test is skipped, or fails where ``CONGVU_REQUIRE_CHROMIUM``
is set (CI must not pass by skipping).
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No internet here: Chromium's own connections (updates, sync) would only fail.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """The path of Debian's ``chromium``; skips (or fails, where required) without it."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CONGVU_REQUIRE_CHROMIUM"):
            pytest.fail("Debian chromium is required here")
        pytest.skip("Debian chromium not installed")
    return found
