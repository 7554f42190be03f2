"""The hora explorer: Compare, Heads, Fine-tune and Models tabs over one shared ModelStore."""

from __future__ import annotations

from functools import partial

import gradio as gr

from app import compare, finetune, heads, models_tab
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


def build_app(
    store: ModelStore,
    examples: list[str] | None = None,
    sample_passage: str = "",
    samples: dict[str, str] | None = None,
) -> gr.Blocks:
    """The Blocks app over ``store``.

    ``examples``: image paths offered in Compare (never run at start-up); ``samples``: bundled datasets for
    Fine-tune, name -> path.
    """
    samples = samples or {}
    tasks = finetune.sample_tasks(samples)
    image_bases, lm_bases = store.names("image"), store.names("lm")
    with gr.Blocks(title="hora explorer", delete_cache=(3600, 3600)) as demo:
        # deep-copied per session; closing a session stops its run and deletes its temporary folder
        session = gr.State(SessionModels(), time_to_live=6 * 3600, delete_callback=SessionModels.close)
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

        with gr.Tab("Fine-tune", id="finetune"):
            gr.Markdown(
                f"Few-shot fine-tuning on your data or a bundled sample. Runs are limited to {LIMITS.max_train_steps} "
                f"steps and {LIMITS.max_train_seconds} s; what you train stays in your session. Device: "
                f"**{finetune.device_description()}**."
            )
            with gr.Row():
                with gr.Column(scale=1):
                    ft_base = gr.Dropdown(bases, value=bases[0] if bases else None, label="Base model")
                    upload = gr.File(
                        label="Data: image zip (class folders), CSV / JSONL (text,label) or TXT",
                        file_types=[".zip", ".csv", ".jsonl", ".txt"],
                        type="filepath",
                    )
                    sample = gr.Dropdown(  # choices follow the base; the handler checks the name, so the API
                        label="…or a bundled sample",  # may name any bundled sample whatever the base shown
                        allow_custom_value=True,
                        **_kw(finetune.sample_choices(store, tasks, None, bases[0] if bases else None)),
                    )
                    methods = gr.CheckboxGroup(
                        [(finetune.METHOD_LABELS[m], m) for m in finetune.METHOD_CHOICES],
                        value=["lora", "hora"],
                        label="Methods",
                        elem_id="ft-methods",
                    )
                    with gr.Row():
                        rank = gr.Slider(1, 32, value=8, step=1, label="Rank r")
                        steps = gr.Slider(1, LIMITS.max_train_steps, value=60, step=1, label="Steps")
                    with gr.Row():
                        lr = gr.Number(value=3e-3, label="Learning rate")
                        shots = gr.Slider(1, 64, value=8, step=1, label="Shots per class")
                        ft_seed = gr.Number(value=0, precision=0, label="Seed")
                    with gr.Row():
                        start_btn = gr.Button("Start", variant="primary", elem_id="ft-start")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop")
                with gr.Column(scale=2):
                    ft_status = gr.Markdown(elem_id="ft-status")
                    curves = gr.Plot(label="Curves", elem_id="ft-curves")
                    ft_table = gr.Dataframe(
                        headers=["method", "trainable params", "steps", "held-out metric", "seconds", "stopped"],
                        label="Results",
                    )
                    downloads = gr.File(label="Trained adapters (PEFT format, zip)", file_count="multiple")
                    use_btn = gr.Button("Use these adapters in Compare and Heads", elem_id="ft-use")
                    use_message = gr.Markdown()
                    with gr.Accordion("Push to the Hugging Face Hub", open=False):
                        with gr.Row():
                            repo_box = gr.Textbox(label="Repo id", placeholder="your-name/my-hora-adapter")
                            token_box = gr.Textbox(label="Token (or set HF_TOKEN)", type="password")
                        push_btn = gr.Button("Push", elem_id="ft-push")
                        push_message = gr.Markdown()

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
        train_event = start_btn.click(
            partial(finetune.run, store, samples),
            [session, ft_base, upload, sample, methods, rank, steps, lr, shots, ft_seed],
            [ft_status, curves, ft_table, downloads, session],
            api_name="finetune",
            concurrency_limit=LIMITS.training_concurrency,
            concurrency_id="training",
        )
        ft_base.change(
            partial(finetune.sample_choices, store, tasks), [session, ft_base], sample, api_name="finetune_samples"
        )
        stop_btn.click(finetune.stop, session, ft_status, cancels=[train_event], api_name="stop", queue=False)
        use_btn.click(
            partial(finetune.use_adapters, store),
            session,
            [use_message, session, vision_variants, lm_variants, heads_base, heads_adapters],
            api_name="use_adapters",
        )
        push_btn.click(finetune.push_adapters, [session, repo_box, token_box], push_message, api_name="push")
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
    samples_dir = hub.assets_dir() / "samples"
    samples = {p.name: str(p) for p in sorted(samples_dir.iterdir())} if samples_dir.is_dir() else {}
    return build_app(store, examples=examples, sample_passage=passage, samples=samples)
