"""Browser tests: Playwright driving Debian's Chromium against the app served on 127.0.0.1, as a first-time visitor
meets it (issue #15): first paint on every tab, examples named by their truth, Heads that redraw and label their
plots, Stop that keeps the run, data problems shown on their control, a failed load that stays on the Models tab,
a phone layout with every tab in reach, WCAG AA contrast and names for every control.

Screenshots of each tab go to test-artifacts/screenshots/ (``python -m hora.assets screenshots`` copies them into
the README's assets). Without /usr/bin/chromium (Debian package `chromium`) or the playwright package they are
skipped; .ci/run installs both.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from chromium import chromium, expect, needs_chromium

from hora.methods import label


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
pytestmark = needs_chromium
TABS = ("Compare", "Heads", "Fine-tune", "Models")

# WCAG 2.1 contrast of every visible text against what is behind it (backgrounds composited, opacity applied).
# Plotly's SVG, hidden and disabled elements are left out (inactive controls are exempt, WCAG 1.4.3).
CONTRAST_JS = """() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const blend = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const background = (el) => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const s = getComputedStyle(e);
      if (s.backgroundImage && s.backgroundImage !== 'none') return null;
      const c = parse(s.backgroundColor); if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    return layers.reverse().reduce((bg, c) => blend(c, bg), [255, 255, 255, 1]); };
  const opacity = (el) => { let o = 1; for (let e = el; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity); return o; };
  const bad = []; let checked = 0;
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg, .js-plotly-plot, [aria-hidden=true], .visually-hidden, .hide, [disabled], [aria-disabled=true]')) continue;
    const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent.trim()).join(' ');
    const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    if (!own || r.width === 0 || r.height === 0 || s.visibility === 'hidden') continue;
    const bg = background(el); if (!bg) continue;
    const fg = parse(s.color); const shown = blend([fg[0], fg[1], fg[2], fg[3] * opacity(el)], bg);
    const [a, b] = [lum(shown), lum(bg)]; const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(s.fontSize), large = size >= 24 || (parseInt(s.fontWeight) >= 700 && size >= 18.66);
    checked += 1;
    if (ratio < (large ? 3 : 4.5)) bad.push(`${own.slice(0, 40)}: ${ratio.toFixed(2)}`);
  }
  return {bad, checked};
}"""

# Pairs of overlapping titles (the plot's own and its subplots') in the plot under `root`.
OVERLAP_JS = """(root) => {
  const boxes = [...root.querySelectorAll('.infolayer .annotation-text, .infolayer .gtitle')]
    .map(t => [t.textContent, t.getBoundingClientRect()])
    .filter(([, r]) => r.width > 0);
  const hits = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, ra] = boxes[i], [b, rb] = boxes[j];
    if (ra.left < rb.right - 1 && rb.left < ra.right - 1 && ra.top < rb.bottom - 1 && rb.top < ra.bottom - 1) hits.push(`${a} / ${b}`);
  }
  return {hits, titles: boxes.length};
}"""

AXES_JS = """(root) => ({
  titles: [...root.querySelectorAll('text')].filter(t => /^[xy]\\d*title$/.test(t.getAttribute('class') || '')
    && t.textContent.trim()).length,
  colorbars: root.querySelectorAll('.colorbar').length,
})"""

NAMES_JS = """() => {
  const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && !e.closest('.hide, [aria-hidden=true]'); };
  const name = (e) => (e.getAttribute('aria-label') || e.getAttribute('title') || e.textContent || '').trim();
  return {
    unnamed: [...document.querySelectorAll('button, [role=button], [role=tab]')].filter(visible).filter(e => !name(e)).map(e => e.outerHTML.slice(0, 80)),
    no_alt: [...document.querySelectorAll('img')].filter(visible).filter(e => !e.hasAttribute('alt')).map(e => e.outerHTML.slice(0, 80)),
  };
}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from app.main import build_app, create_app, launch
    from hora import hub

    if hub.embedded_assets():
        demo = create_app()
    else:  # no embedded assets in this checkout: the tiny test store still exercises the UI
        from helpers import tiny_samples, tiny_store

        root = tmp_path_factory.mktemp("models")
        demo = build_app(tiny_store(root), samples=tiny_samples(root / "samples"))
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def browser(app_url):
    with chromium() as browser:
        yield browser


def open_page(browser, url: str, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#classify-btn").wait_for(timeout=60_000)
    return page


@pytest.fixture(scope="module")
def page(browser, app_url):
    page = open_page(browser, app_url, 1440, 900)
    yield page
    page.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def no_error_pills(page) -> None:
    """No component anywhere shows Gradio's bare "Error" badge."""
    assert page.locator("[data-testid=status-tracker]", has_text="Error").count() == 0


def assert_titles_apart(page, selector: str) -> int:
    """No two titles of the plot overlap, nor its title and the label Gradio floats over the plot's corner."""
    plot = page.locator(f"{selector} .js-plotly-plot").first
    expect(plot).to_be_attached(timeout=60_000)
    result = plot.evaluate(OVERLAP_JS)
    assert result["hits"] == [], f"{selector}: overlapping titles {result['hits']}"
    label = page.locator(f"{selector} [data-testid=block-label]").first.bounding_box()
    title = plot.locator(".gtitle").first.bounding_box() if plot.locator(".gtitle").count() else None
    if label and title:
        apart = label["y"] + label["height"] <= title["y"] + 1 or label["x"] + label["width"] <= title["x"] + 1
        assert apart, f"{selector}: the block label {label} covers the plot's title {title}"
    return result["titles"]


def test_first_paint_every_tab_shows_a_result(page):
    """Nothing is pressed: each tab already shows what its models do, and says what they are."""
    bars = page.locator("#vision-plot .js-plotly-plot .bars path:visible")
    expect(bars.first).to_be_visible(timeout=30_000)
    expect(page.locator("#vision-table")).to_contain_text("correct?")
    assert page.locator("#vision-table [role=row]").count() >= 3  # the header and a row per model
    assert page.locator("#token-plot .js-plotly-plot .bars path:visible").count() > 0
    assert page.locator(".about", has_text="trained on").count() >= 2  # what the models are, from their cards
    tab(page, "Heads")
    expect(page.locator("#heads-deltas .js-plotly-plot .heatmaplayer").first).to_be_attached(timeout=30_000)
    expect(page.locator("#heads-ranks")).to_contain_text("r=")
    tab(page, "Fine-tune")
    expect(page.locator("#ft-status")).to_contain_text("press Start")
    expect(page.locator("#ft-stop")).to_be_disabled()  # nothing runs: nothing to stop
    tab(page, "Models")
    assert page.locator("#models-table [role=row]").count() >= 3
    tab(page, "Compare")


def test_examples_are_named_by_their_truth_and_answers_marked(page):
    """The default base's own examples (only its shelf shows), named by their truth; the first-paint example again."""
    shelf = page.locator(".examples-shelf:visible")
    if shelf.count() == 0:
        pytest.skip("no embedded example images in this checkout")
    truth = page.locator("#truth input, #truth textarea").first
    shown = truth.input_value()  # the first paint's example: the one that best shows what the adapters add
    example = shelf.get_by_role("button", name=re.compile(rf"^\S+ {re.escape(shown)}$")).first
    expect(example).to_be_visible()
    truth.fill("")
    example.click()
    expect(truth).to_have_value(shown)
    page.locator("#classify-btn").click()
    table = page.locator("#vision-table")
    expect(table).to_contain_text("✓ yes", timeout=30_000)
    expect(page.locator("#vision-note")).to_contain_text("means nothing")
    assert_titles_apart(page, "#vision-plot")
    no_error_pills(page)
    shot(page, "compare")


def test_heads_redraw_on_every_control_and_label_their_plots(page):
    tab(page, "Heads")
    similarity = page.locator("#heads-similarity .js-plotly-plot")
    expect(similarity.locator(".gtitle")).to_contain_text("subspace", timeout=30_000)  # of B_h, by default
    page.locator("#heads-metric").get_by_text("CKA").click()  # no button: the plot follows the control
    expect(similarity.locator(".gtitle")).to_contain_text("CKA", timeout=30_000)
    page.locator("#heads-projection input").click()
    options = [o.strip() for o in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    assert len(options) == len({o.split(" ")[0] for o in options}) >= 1, options  # q once, not q and q_proj
    for key in ("deltas", "factors", "similarity"):
        labelled = page.locator(f"#heads-{key} .js-plotly-plot").first.evaluate(AXES_JS)
        assert labelled["titles"] >= 1 and labelled["colorbars"] >= 1, (key, labelled)
    for key in ("deltas", "factors", "similarity", "summary", "pca"):
        assert_titles_apart(page, f"#heads-{key}")
    expect(page.locator("#heads-ranks")).to_contain_text("effective rank")
    no_error_pills(page)
    shot(page, "heads")
    tab(page, "Compare")


def test_stop_keeps_the_run(page):
    """Stop mid-run: the generator ends the run itself, so the table row, the zip and Use these adapters stay."""
    tab(page, "Fine-tune")
    page.locator("#ft-base input").click()
    page.get_by_role("option", name="lm-shakespeare").click()
    page.locator("#ft-sample input").click()
    page.get_by_role("option").first.click()
    page.locator("#ft-methods").get_by_text("HoRA").click()  # untick: LoRA alone
    page.locator("#ft-steps input[type=number]").fill("400")
    page.locator("#ft-start").click()
    status = page.locator("#ft-status")
    expect(status).to_contain_text("step", timeout=90_000)
    stop = page.locator("#ft-stop")
    expect(stop).to_be_enabled()
    stop.dispatch_event("click")  # the streaming layout keeps moving: no "stable" wait
    expect(page.locator("#ft-stop-note")).to_contain_text("Stop requested", timeout=30_000)
    expect(status).to_contain_text("Stopped", timeout=90_000)
    expect(status).to_contain_text("LoRA: stopped by you after")
    expect(page.locator("#ft-table")).to_contain_text("stopped by you")
    expect(page.locator("#ft-files")).to_contain_text(".zip")
    expect(stop).to_be_disabled()
    expect(page.locator("#ft-start")).to_be_enabled()
    no_error_pills(page)
    shot(page, "finetune")  # after the stop: a page that streams never settles for a full-page screenshot
    page.locator("#ft-use").click()
    expect(page.locator("#ft-use-message")).to_contain_text("Added", timeout=30_000)
    tab(page, "Compare")
    expect(page.locator("#lm-variants")).to_contain_text("LoRA (yours)")


def test_data_problems_show_on_their_control_before_training(page, tmp_path):
    from PIL import Image

    archive = tmp_path / "five-each.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, colour in (("circle", (200, 30, 30)), ("square", (30, 30, 200))):
            for i in range(5):
                file = tmp_path / f"{name}-{i}.png"
                Image.new("RGB", (32, 32), colour).save(file)
                zf.write(file, f"{name}/{i}.png")
    tab(page, "Fine-tune")
    page.locator("#ft-base input").click()
    page.get_by_role("option", name="lm-shakespeare").click()
    page.locator("#ft-sample input").click()
    page.get_by_role("option").first.click()  # the language base's sample: text, no shots
    expect(page.locator("#ft-shots")).to_be_hidden()
    page.locator("#ft-base input").click()
    page.get_by_role("option", name="vit-digits").click()
    page.locator("#ft-upload input[type=file]").set_input_files(str(archive))
    expect(page.locator("#ft-shots")).to_be_visible(timeout=30_000)
    page.locator("#ft-start").click()
    expect(page.locator("#ft-shots")).to_contain_text("Set Shots to 4 or lower", timeout=30_000)
    expect(page.locator("#ft-stop")).to_be_disabled()  # nothing started
    assert "failed" not in page.locator("#ft-status").inner_text()
    no_error_pills(page)
    tab(page, "Compare")


def test_a_failed_load_stays_on_the_models_tab(page):
    os.environ["HF_HUB_OFFLINE"] = "1"  # the server runs in this process and reads it at call time
    try:
        tab(page, "Models")
        page.locator("#base-name").get_by_role("textbox").fill("nobody/no-such-model")
        page.locator("#load-base-btn").click()
        expect(page.locator("#base-name")).to_contain_text("runs offline", timeout=30_000)
        assert "HF_HUB" not in page.locator("#base-name").inner_text()
        no_error_pills(page)  # Compare's and Heads' dropdowns keep working
        shot(page, "models")
        tab(page, "Heads")
        no_error_pills(page)
    finally:
        del os.environ["HF_HUB_OFFLINE"]
        tab(page, "Compare")


def test_contrast_and_names_of_every_tab(page):
    for name in TABS:
        tab(page, name)
        page.wait_for_timeout(500)
        contrast = page.evaluate(CONTRAST_JS)
        assert contrast["checked"] > 20 and contrast["bad"] == [], (name, contrast["bad"])
        names = page.evaluate(NAMES_JS)
        assert names == {"unnamed": [], "no_alt": []}, (name, names)
    tab(page, "Compare")


def test_phone_reaches_every_tab_and_keeps_labels_and_titles_legible(browser, app_url):
    phone = open_page(browser, app_url, 390, 844)
    try:
        assert phone.get_by_role("button", name="More tabs").is_hidden()
        for name in TABS:
            expect(phone.get_by_role("tab", name=name)).to_be_visible()
        expect(phone.locator("#vision-plot .js-plotly-plot .bars path:visible").first).to_be_visible(timeout=30_000)
        assert_titles_apart(phone, "#vision-plot")
        assert_titles_apart(phone, "#token-plot")
        heights = phone.evaluate(
            """() => [...document.querySelectorAll('[data-testid=block-info]')].filter(e => e.offsetParent)
                 .map(e => [e.textContent, e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)])"""
        )
        assert heights and [t for t, lines in heights if lines > 1.6] == []  # every label on one line
        phone.get_by_role("tab", name="Heads").click()
        for key in ("deltas", "factors", "similarity", "summary", "pca"):
            assert_titles_apart(phone, f"#heads-{key}")
        shot(phone, "phone-heads")
    finally:
        phone.close()


# ---------------------------------------------------------------------------------------------------------------
# What the explorer draws is what happened (issue #24)

TRACES_JS = """(root) => root.data.map(t => ({name: t.name, axis: t.xaxis || 'x', x: [...(t.x || [])], y: [...(t.y || [])]}))"""


def finetune_page(browser, app_url, base: str = "lm-shakespeare", sample: str | None = "folio-hamlet.txt"):
    """A fresh page on the Fine-tune tab with ``base`` and ``sample`` chosen."""
    page = open_page(browser, app_url, 1440, 900)
    tab(page, "Fine-tune")
    page.locator("#ft-base input").click()
    page.get_by_role("option", name=base).click()
    if sample:
        page.locator("#ft-sample input").click()
        page.get_by_role("option", name=sample).click()
        expect(page.locator("#ft-sample input")).to_have_value(sample)
    return page


def table_rows(page, selector: str) -> list[list[str]]:
    """The body rows of a Gradio dataframe, as the visitor reads them."""
    return page.locator(selector).evaluate(
        """(root) => [...root.querySelectorAll('[role=row]')].map(r => [...r.querySelectorAll('[role=gridcell]')]
             .map(c => c.innerText.trim())).filter(cells => cells.length)"""
    )


def test_language_model_curves_keep_training_and_held_out_losses_apart(browser, app_url):
    """An LM's held-out metric is a loss too: each curve has as many x as y, and the held-out one ends at the table."""
    page = finetune_page(browser, app_url)
    try:
        page.locator("#ft-steps input[type=number]").fill("12")
        page.locator("#ft-start").click()
        expect(page.locator("#ft-status")).to_contain_text("Done.", timeout=180_000)
        traces = page.locator("#ft-curves .js-plotly-plot").first.evaluate(TRACES_JS)
        curves = [t for t in traces if t["name"] in ("LoRA r=8", "HoRA r=8")]
        assert len(curves) == 4, traces
        assert all(len(t["x"]) == len(t["y"]) > 0 for t in curves), [
            (t["name"], len(t["x"]), len(t["y"])) for t in curves
        ]
        assert all(len(t["x"]) == 12 for t in curves if t["axis"] == "x")
        rows = {r[0]: float(r[4]) for r in table_rows(page, "#ft-table")}
        for t in curves:
            if t["axis"] == "x2":  # the held-out panel ends where the table says the run ended
                assert t["x"][-1] == 12 and round(t["y"][-1], 4) == rows[t["name"].split(" ")[0]], (t, rows)
        no_error_pills(page)
    finally:
        page.close()


def test_a_run_that_fails_leaves_start_usable(browser, app_url, monkeypatch):
    from hora import jobs

    def fails(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(jobs, "train", fails)  # the server runs in this process
    page = finetune_page(browser, app_url)
    try:
        page.locator("#ft-start").click()
        expect(page.locator("#ft-status")).to_contain_text("disk on fire", timeout=60_000)
        expect(page.locator("#ft-start")).to_be_enabled(timeout=15_000)
        expect(page.locator("#ft-stop")).to_be_disabled()
        assert page.locator("#ft-status").inner_text().count("disk on fire") == 1  # LoRA and HoRA: said once
    finally:
        page.close()


def test_data_no_method_can_use_is_refused_once_before_training(browser, app_url, tmp_path, monkeypatch):
    from hora import jobs

    started = []
    real_train = jobs.train
    monkeypatch.setattr(jobs, "train", lambda *a, **k: started.append(1) or real_train(*a, **k))
    one = tmp_path / "one-paragraph.txt"
    one.write_text("A single paragraph a visitor wrote, on one line, with nothing to hold out for testing.\n")
    page = finetune_page(browser, app_url, sample=None)
    try:
        page.locator("#ft-upload input[type=file]").set_input_files(str(one))
        expect(page.locator("#ft-upload")).to_contain_text("one-paragraph", timeout=30_000)
        page.locator("#ft-start").click()
        upload = page.locator("#ft-upload")
        expect(upload).to_contain_text("needs at least two documents", timeout=30_000)
        expect(upload).to_contain_text("one-paragraph.txt cannot be used")  # names the data, not the methods
        page.wait_for_timeout(3_000)  # what a run would have printed by now
        shown = page.evaluate(  # on screen (a screen reader's copy of a message, .sr-only, is no second message)
            """() => [...document.querySelectorAll('body *')].filter(e => !e.closest('.sr-only')
                 && [...e.childNodes].some(n => n.nodeType === 3
                 && n.textContent.includes('needs at least two documents'))).map(e => e.textContent.trim())"""
        )
        assert len(shown) == 1, shown
        assert "failed" not in page.locator("#ft-status").inner_text()
        assert started == []  # refused before any method started
        expect(page.locator("#ft-start")).to_be_enabled()
        expect(page.locator("#ft-stop")).to_be_disabled()
    finally:
        page.close()


def rows_of(page, selector: str) -> int:
    """How many body rows a Gradio dataframe shows."""
    return len(table_rows(page, selector))


def test_results_on_screen_belong_to_the_input_on_screen(browser, app_url):
    """Another example image, another base, another prompt: the answers of the one before are cleared, never left
    beside the new input; pressing the button brings them back."""
    page = open_page(browser, app_url, 1440, 900)
    try:
        shelf = page.locator(".examples-shelf:visible")
        expect(page.locator("#vision-plot .js-plotly-plot .bars path:visible").first).to_be_visible(timeout=30_000)
        assert rows_of(page, "#vision-table") >= 2
        shown = page.locator("#truth input, #truth textarea").first.input_value()
        shelf.get_by_role("button").filter(has_not_text=re.compile(rf" {re.escape(shown)}$")).first.click()
        expect(page.locator("#vision-plot")).to_contain_text("Press Classify", timeout=15_000)
        assert rows_of(page, "#vision-table") == 0
        page.locator("#classify-btn").click()
        expect(page.locator("#vision-plot .js-plotly-plot .bars path:visible").first).to_be_visible(timeout=60_000)
        assert rows_of(page, "#vision-table") >= 2
        page.locator("#vision-base input").click()
        page.get_by_role("option", name="vit-digits").click()
        expect(page.locator("#vision-plot")).to_contain_text("Press Classify", timeout=15_000)
        assert rows_of(page, "#vision-table") == 0

        answers = page.locator("#generations .gen-col")
        expect(answers.first).to_be_visible(timeout=30_000)  # the first paint's answers
        assert rows_of(page, "#ppl-table") >= 2  # and perplexities, no longer an empty table
        page.locator("#prompt textarea").fill("Tell me about the sea.")
        expect(answers).to_have_count(0, timeout=15_000)
        expect(page.locator("#token-plot")).to_contain_text("Press Generate")
        passage = page.locator("#passage textarea")
        before = passage.input_value()
        page.locator("#lm-base input").click()
        page.get_by_role("option", name="lm-shakespeare").click()
        expect(passage).not_to_have_value(before, timeout=15_000)  # the new base's own passage
        expect(page.locator("#ppl-notice")).to_contain_text("Press Score passage")
        assert rows_of(page, "#ppl-table") == 0
        page.locator("#ppl-btn").click()
        expect(page.locator("#ppl-table [role=gridcell]").first).to_be_visible(timeout=60_000)
        no_error_pills(page)
    finally:
        page.close()


# Top-k labels (y ticks) that run into one another or into another plot's area.
LABELS_JS = """(root) => {
  const hit = (a, b) => a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  const labels = [...root.querySelectorAll('.yaxislayer-above text')].map(t => [t.textContent, t.getBoundingClientRect()])
    .filter(([, r]) => r.width > 0);
  const areas = [...root.querySelectorAll('.draglayer .nsewdrag')].map(r => r.getBoundingClientRect());
  const clashes = [];
  labels.forEach(([a, ra], i) => {
    labels.forEach(([b, rb], j) => { if (i < j && hit(ra, rb)) clashes.push(`${a} / ${b}`); });
    areas.forEach((r) => { if (hit(ra, r)) clashes.push(`${a} / a plot`); });
    if (ra.left < 0 || ra.right > document.documentElement.clientWidth) clashes.push(`${a} / the screen's edge`);
  });
  return {labels: labels.length, areas: areas.length, clashes};
}"""


def test_top_k_labels_stay_apart_on_a_phone(browser, app_url):
    phone = open_page(browser, app_url, 390, 844)
    try:
        for selector in ("#vision-plot", "#token-plot"):
            plot = phone.locator(f"{selector} .js-plotly-plot").first
            expect(plot.locator(".bars path").first).to_be_attached(timeout=30_000)
            found = plot.evaluate(LABELS_JS)
            assert found["labels"] >= 5 and found["areas"] >= 1 and found["clashes"] == [], (selector, found)
    finally:
        phone.close()


def test_use_these_adapters_right_after_stop_waits_for_the_run(browser, app_url):
    """Stop, then at once Use these adapters: the run has not yielded its last step yet; the button waits for it
    (and says so) instead of answering that there is nothing to add."""
    page = finetune_page(browser, app_url)
    try:
        page.locator("#ft-methods").get_by_text("HoRA").click()  # untick: LoRA alone
        page.locator("#ft-steps input[type=number]").fill("400")
        page.locator("#ft-start").click()
        expect(page.locator("#ft-status")).to_contain_text("step", timeout=90_000)
        page.locator("#ft-stop").dispatch_event("click")
        page.locator("#ft-use").dispatch_event("click")
        message = page.locator("#ft-use-message")
        expect(message).to_contain_text("Added", timeout=90_000)
        assert "Nothing to add" not in message.inner_text()
        expect(page.locator("#ft-status")).to_contain_text("LoRA: stopped by you after")
    finally:
        page.close()


def test_a_blank_learning_rate_box_is_blank_and_says_what_blank_means(browser, app_url):
    page = finetune_page(browser, app_url, "smollm2-135m-instruct", sample=None)
    try:
        box = page.get_by_label("Learning rate (blank: the base's tuned rate)")
        expect(box).to_have_value("")  # not 0: blank takes each method's tuned rate
        placeholder = box.get_attribute("placeholder")  # this base's tuned rates, from its card
        rates = json.loads((ARTIFACTS.parents[1] / "assets" / "smollm2-135m-instruct" / "asset.json").read_text())
        rates = rates["finetune"]["lr"]
        common = max(set(rates.values()), key=list(rates.values()).count)
        assert placeholder.startswith(f"{common:g}"), placeholder
        assert all(f"{label(m)} {v:g}" in placeholder for m, v in rates.items() if v != common), placeholder
    finally:
        page.close()
