"""Browser tests of the Heads tab's answers (issue #20), on the embedded real bases as a visitor meets them: the
similarity of the heads' B_h stated against its chance level (the level drawn equals ``hora.coupling.chance_level``
for the adapters on screen, and each caption's numbers are those of the figure the page drew), and the knock-out's
bars equal to ``hora.knockout.head_knockout`` for the input on screen, on DINOv2 (an example image) and SmolLM2
(a prompt), on a desktop (1440 × 900) and a phone (390 × 844).

Screenshots go to test-artifacts/screenshots/ (``heads-language.png``, ``phone-heads-knockout.png``). Skipped
without Chromium, playwright or the embedded assets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chromium import chromium, expect, needs_chromium
from PIL import Image

from hora import coupling, hub, knockout


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
pytestmark = needs_chromium
if not hub.embedded_assets():
    pytest.skip("needs the embedded assets (python -m hora.assets build)", allow_module_level=True)
FIGURE_JS = "(root) => ({data: root.data.map(t => ({...t})), layout: {...root.layout}})"
OVERLAP_JS = """(root) => {
  const boxes = [...root.querySelectorAll('.infolayer .annotation-text, .infolayer .gtitle')]
    .map(t => [t.textContent, t.getBoundingClientRect()]).filter(([, r]) => r.width > 0);
  const hits = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, ra] = boxes[i], [b, rb] = boxes[j];
    if (ra.left < rb.right - 1 && rb.left < ra.right - 1 && ra.top < rb.bottom - 1 && rb.top < ra.bottom - 1) hits.push(`${a} / ${b}`);
  }
  return hits;
}"""


def open_page(browser, url: str, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#classify-btn").wait_for(timeout=60_000)
    return page


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def no_error_pills(page) -> None:
    assert page.locator("[data-testid=status-tracker]", has_text="Error").count() == 0


def assert_titles_apart(page, selector: str) -> None:
    """No two titles of the plot under ``selector`` overlap (as tests/test_browser.py checks every plot)."""
    plot = page.locator(f"{selector} .js-plotly-plot").first
    expect(plot).to_be_attached(timeout=60_000)
    assert plot.evaluate(OVERLAP_JS) == [], selector


@pytest.fixture(scope="module")
def served():
    """The explorer as ``create_app()`` builds it, with the store it serves (the same models the tests read)."""
    import app.store
    from app.main import create_app, launch

    seen = {}
    real = app.store.embedded_store
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.store, "embedded_store", lambda *a, **k: seen.setdefault("store", real(*a, **k)))
        demo = create_app()
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url, seen["store"]
    demo.close()


@pytest.fixture(scope="module")
def browser(served):
    with chromium() as browser:
        yield browser


def figure(page, key: str) -> dict:
    """The data and layout of the Plotly figure the page shows under ``#heads-<key>``."""
    plot = page.locator(f"#heads-{key} .js-plotly-plot").first
    expect(plot).to_be_attached(timeout=60_000)
    return plot.evaluate(FIGURE_JS)


def mean_offdiagonal(z: list[list[float]]) -> float:
    n = len(z)
    return sum(z[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))


def stated(caption: str) -> dict[str, tuple[float, float, int, int]]:
    """(mean, chance, r, head size) per adapter, as the similarity caption states them."""
    found = re.findall(r"(\S+) \(r = (\d+), heads of (\d+)\): (-?[\d.]+) against a chance level of ([\d.]+)", caption)
    return {name: (float(mean), float(chance), int(r), int(hd)) for name, r, hd, mean, chance in found}


def check_coupling(page, store, base: str, layer: int, metric: str) -> dict[str, tuple]:
    """The similarity and summary on screen: levels from the library, captions from the plotted numbers."""
    similarity, summary = figure(page, "similarity"), figure(page, "summary")
    caption = page.locator("#heads-similarity-caption").inner_text()
    numbers = stated(caption)
    heat = [t for t in similarity["data"] if t["type"] == "heatmap"]
    assert [t["meta"]["adapter"] for t in heat] == list(numbers) and len(numbers) >= 2, caption
    levels = {t["meta"]["adapter"]: t["y"][0] for t in summary["data"] if t["meta"]["kind"] == "chance"}
    for trace in heat:
        name = trace["meta"]["adapter"]
        mean, chance, r, hd = numbers[name]
        model = store.bases[base].variants[name].model
        measured = coupling.layer_coupling(model, layer, "q", metric)
        assert (r, hd) == (measured.rank, measured.head_dim)
        assert levels[name] == pytest.approx(coupling.chance_level(metric, hd, r), abs=1e-9)
        assert chance == round(coupling.chance_level(metric, hd, r), 3)
        assert mean == round(mean_offdiagonal(trace["z"]), 2)
        assert any(f"mean {mean:.2f}<br>chance {chance:.3f}" in a["text"] for a in similarity["layout"]["annotations"])
    ratios = {n: m / c for n, (m, c, _, _) in numbers.items() if c > 1e-3}
    if len(ratios) >= 2:  # the conclusion names the adapter the numbers on screen put first
        assert f"{max(ratios, key=ratios.get)}'s heads share the most" in caption
    summary_caption = page.locator("#heads-summary-caption").inner_text()
    for trace in (t for t in summary["data"] if t["meta"]["kind"] == "mean"):
        low, high = f"{min(trace['y']):.2f}", f"{max(trace['y']):.2f}"
        span = low if low == high else f"{low}–{high}"
        level = numbers[trace["meta"]["adapter"]][1]
        assert f"{trace['meta']['adapter']}: {span} (chance {level:.3f})" in summary_caption, summary_caption
    return numbers


def check_knockout(page, model, inputs, layer: int, name: str) -> None:
    """The bars of adapter ``name`` are ``head_knockout``'s effects for these inputs, the reference named."""
    bars = [t for t in figure(page, "knockout")["data"] if t["meta"]["adapter"] == name]
    result = knockout.head_knockout(model, inputs, "q", layer)
    assert len(bars) == 1 and bars[0]["x"][-1] == "whole"
    assert bars[0]["y"] == pytest.approx([*result.effects, result.whole], abs=2e-4)


def test_heads_show_chance_levels_and_conclude_from_the_numbers_on_screen(browser, served):
    url, store = served
    page = open_page(browser, url, 1440, 900)
    try:
        tab(page, "Heads")
        base = page.locator("#heads-base input").input_value()
        expect(page.locator("#heads-similarity-caption")).to_contain_text("chance level", timeout=60_000)
        first = check_coupling(page, store, base, 0, "subspace")  # the first paint: subspace overlap of B_h
        assert set(first) == {"LoRA", "HoRA"} and first["HoRA"][0] / first["HoRA"][1] > 2  # HoRA's heads share
        page.locator("#heads-metric").get_by_text("CKA").click()
        expect(page.locator("#heads-similarity-caption")).to_contain_text("mean CKA", timeout=60_000)
        check_coupling(page, store, base, 0, "cka")
        page.locator("#heads-layer input").click()
        page.get_by_role("option", name="5", exact=True).click()
        expect(page.locator("#heads-similarity-caption")).to_contain_text("In layer 5, q", timeout=60_000)
        check_coupling(page, store, base, 5, "cka")
        no_error_pills(page)
    finally:
        page.close()


def test_knockout_bars_are_the_librarys_on_both_real_bases(browser, served):
    url, store = served
    page = open_page(browser, url, 1440, 900)
    try:
        tab(page, "Heads")
        caption = page.locator("#heads-knockout-caption")
        expect(caption).to_contain_text("predicts the class", timeout=60_000)  # DINOv2, the first paint
        label = page.locator("#heads-example input").input_value()
        path = dict(examples(store, "dinov2-small"))[label]
        base = store.bases["dinov2-small"]
        with Image.open(path) as image:
            inputs = knockout.image_inputs(base.processor, image)
        for name in ("LoRA", "HoRA"):
            check_knockout(page, base.variants[name].model, inputs, 0, name)
            result = knockout.head_knockout(base.variants[name].model, inputs, "q", 0)
            expect(caption).to_contain_text(
                f"{name} predicts the class {knockout.reference_name(base.variants[name].model, result)}"
            )
        page.locator("#heads-base input").click()
        page.get_by_role("option", name="smollm2-135m-instruct").click()
        expect(caption).to_contain_text("predicts the next token", timeout=120_000)
        prompt = page.locator("#heads-prompt input").input_value()
        assert prompt == "What is the capital of France?"
        check_lm(page, store, prompt, 0)
        page.locator("#heads-prompt input").fill("Tell me about the sea.")
        expect(caption).to_contain_text("Press Knock out heads", timeout=15_000)  # the bars were for the old prompt
        page.locator("#heads-knock-btn").click()
        expect(caption).to_contain_text("predicts the next token", timeout=120_000)
        check_lm(page, store, "Tell me about the sea.", 0)
        for key in ("similarity", "summary", "knockout"):
            assert_titles_apart(page, f"#heads-{key}")
        no_error_pills(page)
        shot(page, "heads-language")
    finally:
        page.close()


def check_lm(page, store, prompt: str, layer: int) -> None:
    base = store.bases["smollm2-135m-instruct"]
    inputs, _ = knockout.prompt_inputs(base.processor, prompt)
    for name in ("LoRA", "HoRA"):
        check_knockout(page, base.variants[name].model, inputs, layer, name)


def examples(store, base: str) -> list[tuple[str, str]]:
    """(label, path) of the base's example images, as the picker lists them (the Compare tab's examples)."""
    from app.context import Context
    from app.heads_knockout import examples_of

    root = hub.assets_dir()
    paths = [str(p) for f in [root, *(root / n for n in store.bases)] for p in sorted((f / "examples").glob("*.png"))]
    return examples_of(Context(store, None, examples=paths), None, base)


def test_phone_keeps_the_heads_answers_legible(browser, served):
    url, _ = served
    phone = open_page(browser, url, 390, 844)
    try:
        phone.get_by_role("tab", name="Heads").click()
        expect(phone.locator("#heads-knockout .js-plotly-plot .bars path").first).to_be_attached(timeout=60_000)
        for key in ("similarity", "summary", "knockout"):
            assert_titles_apart(phone, f"#heads-{key}")
        expect(phone.locator("#heads-similarity-caption")).to_contain_text("chance level")
        example = phone.locator("#heads-example-image img").first
        expect(example).to_have_attribute("alt", re.compile("example image"))
        phone.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=example.element_handle())
        shot(phone, "phone-heads-knockout")
    finally:
        phone.close()
