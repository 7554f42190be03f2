"""Browser test of serving side by side (issue #21): in Compare, the ticked models answer together, one batch, in
the order shown, and the page says so where it shows their latencies. Playwright drives Debian's Chromium against
the app on a store of tiny models (the embedded bases have their own browser tests in test_browser.py)."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from helpers import tiny_samples, tiny_store


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if os.environ.get("HORA_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure, not a skip
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"
    import playwright.sync_api as playwright_api
else:
    pytestmark = pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"
    )
    playwright_api = pytest.importorskip("playwright.sync_api")
from hora.bench.coldstart import CHROMIUM_ARGS  # noqa: E402 - no sandbox, no GPU, no background traffic to Google


expect = playwright_api.expect


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from PIL import Image

    from app.main import build_app, launch

    root = tmp_path_factory.mktemp("models")
    example = root / "square-one.png"  # named by its true class, as the explorer's examples are
    Image.new("RGB", (16, 16), (200, 30, 30)).save(example)
    demo = build_app(tiny_store(root), examples=[str(example)], samples=tiny_samples(root / "samples"))
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#classify-btn").wait_for(timeout=60_000)
        yield page
        browser.close()
    demo.close()


def _ticked(page, group: str) -> list[str]:
    """The ticked models of a checkbox group, in the order the page shows them."""
    boxes = page.locator(f"#{group} label:has(input:checked)")
    return [re.split(r" · ", t.strip())[0] for t in boxes.all_inner_texts()]


def test_ticked_models_answer_together_in_the_order_shown(page):
    page.locator("#lm-variants label", has_text="LORA").click()  # untick one: two models left
    expect(page.locator("#lm-variants label:has(input:checked)")).to_have_count(2)
    ticked = _ticked(page, "lm-variants")
    page.locator("#prompt textarea").fill("to be")
    page.locator("#generate-btn").click()
    notice = page.locator("#generation-notice")
    expect(notice).to_contain_text("2 models answer together", timeout=60_000)
    names = page.locator("#generations .gen-name")
    expect(names).to_have_count(2, timeout=60_000)
    assert names.all_inner_texts() == ticked == ["base", "HoRA"]

    page.locator("#classify-btn").click()
    expect(page.locator("#vision-note")).to_contain_text("through 3 models at once", timeout=60_000)
    expect(page.locator("#vision-plot")).to_contain_text("(batch of 3)")
    assert page.locator("[data-testid=status-tracker]", has_text="Error").count() == 0
