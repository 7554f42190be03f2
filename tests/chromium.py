"""What every browser test shares: Debian's Chromium (``apt-get install chromium``) driven by Python Playwright.

In CI (``HORA_REQUIRE_BROWSER=1``) a missing browser is a failure; elsewhere a browser test module is skipped,
with the reason, when Chromium or Playwright is missing (importing this module skips it for lack of Playwright;
``needs_chromium`` is its mark for lack of Chromium).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if os.environ.get("HORA_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure, not a skip
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"
    import playwright.sync_api as playwright_api
else:
    playwright_api = pytest.importorskip("playwright.sync_api")
from hora.bench.coldstart import CHROMIUM_ARGS  # noqa: E402 - no sandbox, no GPU, no background traffic to Google


needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"
)
expect = playwright_api.expect


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium, closed on exit."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
