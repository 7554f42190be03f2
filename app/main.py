"""The hora explorer: Compare, Heads, Fine-tune and Models tabs over one shared ModelStore."""

from __future__ import annotations

from functools import partial

import gradio as gr

from app import compare, heads, models_tab
from app.settings import LIMITS
from app.store import ModelStore, SessionModels, base_names, variants_of


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


def _variant_choices(store: ModelStore, session: SessionModels | None, base_name: str) -> dict:
    names = list(variants_of(store, session, base_name)) if base_name else []
    return gr.update(choices=names, value=names)


def _initial(store: ModelStore, bases: list[str]) -> dict:
    """Choices known at build time, so API clients (which never run demo.load) can pick them too."""
    names = list(variants_of(store, None, bases[0])) if bases else []
    return {"choices": names, "value": names}


def _kw(update: dict) -> dict:
    return {k: v for k, v in update.items() if k in ("choices", "value")}


def build_app(store: ModelStore, examples: list[str] | None = None, sample_passage: str = "") -> gr.Blocks:
    """The Blocks app over ``store``. ``examples``: image paths offered in Compare (never run at start-up)."""
    image_bases, lm_bases = store.names("image"), store.names("lm")
    with gr.Blocks(title="hora explorer", delete_cache=(3600, 3600)) as demo:
        session = gr.State(SessionModels(), time_to_live=6 * 3600)  # deep-copied per session
        gr.Markdown(
            "# hora explorer\nHoRA generates every attention head's low-rank update from one shared hypernetwork; "
            "LoRA adapts each head on its own. Compare them on the same inputs, look inside them head by head, "
            "or fine-tune your own."
        )
        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                with gr.Column(scale=1):
                    gr.Markdown("### Vision")
                    vision_base = gr.Dropdown(
                        image_bases, value=image_bases[0] if image_bases else None, label="Base model"
                    )
                    image = gr.Image(type="pil", label="Image", height=220, elem_id="compare-image")
                    if examples:
                        gr.Examples(examples, inputs=image, cache_examples=False, label="Held-out examples")
                    vision_variants = gr.CheckboxGroup(
                        label="Models", elem_id="vision-variants", **_initial(store, image_bases)
                    )
                    classify_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
                with gr.Column(scale=2):
                    vision_plot = gr.Plot(label="Top-5 classes", elem_id="vision-plot")
                    vision_table = gr.Dataframe(
                        headers=["model", "top class", "probability", "latency (ms)"], label="Summary"
                    )
            gr.Markdown("### Language")
            with gr.Row():
                with gr.Column(scale=1):
                    lm_base = gr.Dropdown(lm_bases, value=lm_bases[0] if lm_bases else None, label="Base model")
                    prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO.\n")
                    lm_variants = gr.CheckboxGroup(label="Models", **_initial(store, lm_bases))
                    with gr.Row():
                        max_new = gr.Slider(1, LIMITS.max_new_tokens, value=80, step=1, label="Max new tokens")
                        temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature (0 = greedy)")
                    with gr.Row():
                        top_k = gr.Slider(0, 200, value=40, step=1, label="Top-k (0 = all)")
                        seed = gr.Number(value=0, precision=0, label="Seed")
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                with gr.Column(scale=2):
                    generations = gr.HTML(elem_id="generations")
                    notice = gr.Markdown()
                    token_plot = gr.Plot(label="Next-token distribution")
            with gr.Row():
                passage = gr.Textbox(label="Passage to score", lines=4, value=sample_passage)
                ppl_table = gr.Dataframe(
                    headers=["model", "perplexity", "loss (nats/token)", "tokens"], label="Perplexity"
                )
            ppl_notice = gr.Markdown()
            ppl_btn = gr.Button("Score passage", elem_id="ppl-btn")

        with gr.Tab("Heads", id="heads"):
            bases = store.names()
            adapters0, layer0, projection0 = heads.options(store, None, bases[0] if bases else None)
            with gr.Row():
                heads_base = gr.Dropdown(bases, value=bases[0] if bases else None, label="Base model")
                heads_adapters = gr.CheckboxGroup(label="Adapters", **_kw(adapters0))
                layer = gr.Dropdown(label="Layer", **_kw(layer0))
                projection = gr.Dropdown(label="Projection", **_kw(projection0))
                metric = gr.Radio(["cosine", "subspace", "cka"], value="cosine", label="Similarity")
            heads_btn = gr.Button("Show heads", variant="primary", elem_id="heads-btn")
            plots = []
            for key, label in [
                ("deltas", "Per-head ΔW"),
                ("factors", "Factors"),
                ("similarity", "Similarity"),
                ("summary", "Per-layer summary"),
                ("pca", "Generator view"),
            ]:
                plots.append(gr.Plot(label=label, elem_id=f"heads-{key}"))
                gr.Markdown(heads.CAPTIONS[key], elem_classes="caption")

        with gr.Tab("Models", id="models"):
            gr.Markdown(
                "Load another base model or adapter by Hugging Face Hub repo id (`org/name`), local folder, or embedded "
                "asset name. Only safetensors weights are read and no remote code runs. What you load here is visible "
                "in your session only."
            )
            with gr.Row():
                with gr.Column():
                    base_name_box = gr.Textbox(label="Base model", placeholder="org/name or /path/to/model")
                    load_base_btn = gr.Button("Load base", elem_id="load-base-btn")
                with gr.Column():
                    adapter_base = gr.Dropdown(store.names(), value=(store.names() or [None])[0], label="Onto base")
                    adapter_name_box = gr.Textbox(label="Adapter", placeholder="org/name or /path/to/adapter")
                    load_adapter_btn = gr.Button("Load adapter", elem_id="load-adapter-btn")
            models_message = gr.Markdown()
            report = gr.Dataframe(headers=["component", "trainable", "total"], label="Parameter report")

        # --- events (every one has an api_name, so gradio_client can drive all of it) ---
        vision_base.change(
            partial(_variant_choices, store), [session, vision_base], vision_variants, api_name="vision_models"
        )
        lm_base.change(partial(_variant_choices, store), [session, lm_base], lm_variants, api_name="lm_models")
        demo.load(partial(_variant_choices, store), [session, vision_base], vision_variants, api_name="init_vision")
        demo.load(partial(_variant_choices, store), [session, lm_base], lm_variants, api_name="init_lm")
        classify_btn.click(
            partial(compare.classify, store),
            [session, vision_base, image, vision_variants],
            [vision_plot, vision_table],
            api_name="classify",
            concurrency_limit=LIMITS.inference_concurrency,
        )
        generate_btn.click(
            partial(compare.generate, store),
            [session, lm_base, prompt, lm_variants, max_new, temperature, top_k, seed],
            [generations, notice],
            api_name="generate",
            concurrency_limit=LIMITS.inference_concurrency,
        ).then(
            partial(compare.next_tokens, store),
            [session, lm_base, prompt, lm_variants],
            token_plot,
            api_name="next_tokens",
            concurrency_limit=LIMITS.inference_concurrency,
        )
        ppl_btn.click(
            partial(compare.passage_perplexity, store),
            [session, lm_base, passage, lm_variants],
            [ppl_table, ppl_notice],
            api_name="perplexity",
            concurrency_limit=LIMITS.inference_concurrency,
        )
        heads_base.change(
            partial(heads.options, store),
            [session, heads_base],
            [heads_adapters, layer, projection],
            api_name="heads_options",
        )
        demo.load(
            partial(heads.options, store),
            [session, heads_base],
            [heads_adapters, layer, projection],
            api_name="init_heads",
        )
        heads_btn.click(
            partial(heads.view, store),
            [session, heads_base, heads_adapters, layer, projection, metric],
            plots,
            api_name="heads",
            concurrency_limit=LIMITS.inference_concurrency,
        )
        load_base_btn.click(
            partial(models_tab.load_base, store),
            [session, base_name_box],
            [report, models_message, session, vision_base, lm_base, heads_base],
            api_name="load_base",
        ).then(lambda s: gr.update(choices=base_names(store, s)), session, adapter_base, api_name="adapter_bases")
        load_adapter_btn.click(
            partial(models_tab.load_adapter, store),
            [session, adapter_base, adapter_name_box],
            [report, models_message, session],
            api_name="load_adapter",
        )
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
    return build_app(store, examples=examples, sample_passage=passage)
