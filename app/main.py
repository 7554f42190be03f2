"""The hora explorer: Compare, Heads, Fine-tune and Models tabs over one shared ModelStore.

Each tab is a module that builds its components and wires its own events (``app.compare``, ``app.heads``,
``app.finetune``, ``app.models_tab``); this module only assembles them, queues and launches.
"""

from __future__ import annotations

import gradio as gr

from app import compare, finetune, heads, models_tab
from app.context import Context
from app.settings import LIMITS
from app.store import ModelStore, SessionModels


CSS = """
.gen-row {display: flex; gap: 12px; flex-wrap: wrap}
.gen-col {flex: 1 1 220px; min-width: 220px}
.gen-name {font-weight: 600; margin-bottom: 4px}
.gen-text {white-space: pre-wrap; font-size: 0.9em; background: var(--block-background-fill); padding: 8px; border-radius: 6px}
.gen-prompt {opacity: 0.55}
.caption {font-size: 0.9em; opacity: 0.85}
"""

# System fonts: the theme's default Google Fonts cannot load on an offline machine (and would stall the page).
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
)


def build_app(
    store: ModelStore,
    examples: list[str] | None = None,
    sample_passage: str = "",
    samples: dict[str, str] | None = None,
) -> gr.Blocks:
    """The Blocks app over ``store``.

    ``examples``: image paths offered in Compare (never run at start-up); ``samples``: bundled datasets for
    Fine-tune, name -> path. Every event has an ``api_name``, so ``gradio_client`` can drive all of it.
    """
    samples = samples or {}
    with gr.Blocks(title="hora explorer", delete_cache=(3600, 3600)) as demo:
        # deep-copied per session; closing a session stops its run and deletes its temporary folder
        session = gr.State(SessionModels(), time_to_live=6 * 3600, delete_callback=SessionModels.close)
        ctx = Context(store, session, samples, finetune.sample_tasks(samples), examples or [], sample_passage)
        gr.Markdown(
            "# hora explorer\nHoRA generates every attention head's low-rank update from one shared hypernetwork; "
            "LoRA adapts each head on its own. Compare them on the same inputs, look inside them head by head, "
            "or fine-tune your own."
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
    demo.queue(max_size=LIMITS.queue_size, default_concurrency_limit=LIMITS.inference_concurrency)
    return demo.launch(theme=THEME, css=CSS, max_file_size=LIMITS.max_file_size, **kwargs)


def create_app() -> gr.Blocks:
    """The explorer on the embedded assets: loads every embedded base and adapter once."""
    from app.store import embedded_store
    from hora import hub

    store = embedded_store()
    if not store.bases:
        raise SystemExit(
            f"No embedded assets under {hub.assets_dir()}: build them with `python -m hora.assets build`."
        )
    examples_dir = hub.assets_dir() / "examples"
    examples = sorted(str(p) for p in examples_dir.glob("*.png")) if examples_dir.is_dir() else []
    passages = sorted(examples_dir.glob("*.txt")) if examples_dir.is_dir() else []
    passage = passages[0].read_text(encoding="utf-8")[:1500] if passages else ""
    samples_dir = hub.assets_dir() / "samples"
    samples = {p.name: str(p) for p in sorted(samples_dir.iterdir())} if samples_dir.is_dir() else {}
    return build_app(store, examples=examples, sample_passage=passage, samples=samples)
