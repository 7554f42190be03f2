"""The hora explorer: Compare, Heads, Fine-tune and Models tabs over one shared ModelStore.

Each tab is a module that builds its components and wires its own events (``app.compare``, ``app.heads``,
``app.finetune``, ``app.models_tab``); this module only assembles them, queues and launches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import gradio as gr

from app import compare, finetune, heads, models_tab
from app.context import Context
from app.finetune_data import sample_tasks
from app.settings import LIMITS
from app.store import ModelStore, SessionModels


CSS = """
.gen-row {display: flex; gap: 12px; flex-wrap: wrap}
.gen-col {flex: 1 1 220px; min-width: 220px}
.gen-name {font-weight: 600; margin-bottom: 4px}
.gen-text {white-space: pre-wrap; font-size: 0.9em; background: var(--block-background-fill); padding: 8px; border-radius: 6px}
.gen-prompt {white-space: pre-wrap; font-size: 0.9em; color: var(--body-text-color-subdued); margin-bottom: 4px}
.gen-label {font-weight: 600; font-size: 0.85em; text-transform: uppercase; letter-spacing: 0.04em}
.gen-sep {border-top: 1px solid var(--border-color-primary); padding-top: 4px; margin: 6px 0 4px}
.caption {font-size: 0.9em}
.about {font-size: 0.95em}
/* Four short tabs fit a 390 px phone without Gradio's overflow menu when their padding is modest. */
.tab-container button {padding: 0 var(--size-2)}
"""

# System fonts: the theme's default Google Fonts cannot load on an offline machine (and would stall the page).
# Colours one shade darker than Soft's defaults, so that every text reaches WCAG AA contrast (4.5:1): block labels,
# selected checkboxes, primary buttons, the selected tab, slider ends and the footer (tests/test_browser.py measures).
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
).set(
    block_label_text_color="*primary_700",
    block_title_text_color="*primary_700",
    checkbox_label_background_fill_selected="*primary_600",
    button_primary_background_fill="*primary_600",
    button_primary_background_fill_hover="*primary_700",
    button_primary_border_color="*primary_600",
    color_accent="*primary_600",
    body_text_color_subdued="*neutral_600",
    body_text_color_subdued_dark="*neutral_300",
)


def build_app(
    store: ModelStore,
    examples: list[str] | None = None,
    sample_passage: str = "",
    samples: dict[str, str] | None = None,
    passages: dict[str, str] | None = None,
) -> gr.Blocks:
    """The Blocks app over ``store``.

    ``examples``: image paths offered in Compare (one is classified once at start-up, the first paint); ``samples``:
    bundled datasets for Fine-tune, name -> path; ``sample_passage`` the text to score and ``passages`` every bundled
    one, file name -> text (a chat model's section starts with one written as chat turns). Every event has an ``api_name``, so ``gradio_client`` can drive all
    of it.
    """
    samples = samples or {}
    with gr.Blocks(title="hora explorer", delete_cache=(3600, 3600)) as demo:
        # deep-copied per session; closing a session stops its run and deletes its temporary folder
        session = gr.State(SessionModels(), time_to_live=6 * 3600, delete_callback=SessionModels.close)
        ctx = Context(store, session, samples, sample_tasks(samples), examples or [], sample_passage, demo)
        ctx.passages = passages or ({"passage.txt": sample_passage} if sample_passage else {})
        gr.Markdown(
            "# hora explorer\nHoRA generates every attention head's low-rank update from one shared hypernetwork; "
            "LoRA adapts each head on its own. **Compare** runs the same input through a base model and its "
            "adapters, **Heads** looks inside the adapters head by head, **Fine-tune** trains your own, and "
            "**Models** lists every model here and loads more."
        )
        with gr.Tab("Compare", id="compare"):
            compare_tab = compare.build(ctx, demo)
        with gr.Tab("Heads", id="heads"):
            heads_tab = heads.build(ctx, demo)
        with gr.Tab("Fine-tune", id="finetune"):
            finetune.build(ctx, compare_tab, heads_tab)
        with gr.Tab("Models", id="models"):
            models_tab.build(ctx, compare_tab, heads_tab)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Queue with limits, then launch with the theme and CSS (Gradio 6 takes them at launch)."""
    # Gradio's max_size is one queue for every event; the lanes' own bounds are app.context.in_lane's validators
    demo.queue(max_size=LIMITS.global_queue_size, default_concurrency_limit=LIMITS.inference_concurrency)
    return demo.launch(theme=THEME, css=CSS, max_file_size=LIMITS.max_file_size, **kwargs)


def create_app(timings: dict[str, float] | None = None, on_loaded: Callable[[], None] | None = None) -> gr.Blocks:
    """The explorer on the embedded assets, every embedded base and adapter loaded once.

    A warm start (an earlier one remembered what its page needs) builds the page first and loads the models in a
    thread, each on first use if a visitor is quicker; ``on_loaded`` is called when they all are. ``timings`` (if
    given) receives the seconds spent loading or registering the models (``models_s``) and building the page
    (``page_s``).
    """
    from app.store import embedded_store
    from hora import hub

    started = time.perf_counter()
    store = embedded_store(lazy=True)
    loaded = time.perf_counter()
    if not store.bases:
        raise SystemExit(
            f"No embedded assets under {hub.assets_dir()}: build them with `python -m hora.assets build`."
        )
    root = hub.assets_dir()
    folders = [root, *(root / name for name in store.bases)]  # shared examples, then each base's own
    examples = [str(p) for f in folders for p in sorted((f / "examples").glob("*.png"))]
    passages = {p.name: p.read_text(encoding="utf-8")[:1500] for p in sorted((root / "examples").glob("*.txt"))}
    passage = next(iter(passages.values()), "")
    samples = {p.name: str(p) for f in folders for p in sorted((f / "samples").glob("*")) if p.is_file()}
    demo = build_app(store, examples=examples, sample_passage=passage, samples=samples, passages=passages)
    if timings is not None:
        timings.update(models_s=loaded - started, page_s=time.perf_counter() - loaded)

    def load_all() -> None:
        store.load_all()
        if on_loaded is not None:
            on_loaded()

    threading.Thread(target=load_all, name="load-models", daemon=True).start()
    return demo
