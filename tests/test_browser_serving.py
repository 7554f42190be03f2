"""Browser test of serving side by side (issue #21): in Compare, the ticked models answer together, one batch, in
the order shown, and the page says so where it shows their latencies. Playwright drives Debian's Chromium against
the app on a store of tiny models (the embedded bases have their own browser tests in test_browser.py)."""

from __future__ import annotations

import re

import pytest
from chromium import chromium, expect, needs_chromium
from helpers import tiny_samples, tiny_store


pytestmark = needs_chromium


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from PIL import Image

    from app.main import build_app, launch

    root = tmp_path_factory.mktemp("models")
    example = root / "square-one.png"  # named by its true class, as the explorer's examples are
    Image.new("RGB", (16, 16), (200, 30, 30)).save(example)
    demo = build_app(tiny_store(root), examples=[str(example)], samples=tiny_samples(root / "samples"))
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#classify-btn").wait_for(timeout=60_000)
        yield page
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
