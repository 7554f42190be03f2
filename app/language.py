"""Compare tab, Language section: a prompt's continuations and next-token distribution under the base and each
adapter, and the perplexity of a passage.

What the page shows first is what Generate and Score passage give with the controls as they are: the base's
precomputed answers (``info["generations"]``: ``{"prompts", "outputs": {variant: [...]}, "max_new_tokens",
"decoding"}``) were written greedily, so Generate starts at temperature 0 with the same number of new tokens, and
the first-paint perplexity table scores the passage shown. That passage is one of the kind the adapters were trained
on: for a chat model, the bundled play excerpt's exchanges written in the model's chat template (the form a chat
model's adapters learn from); for any other, the first bundled passage. A result on screen always belongs to the
input on screen: a new prompt, passage or base clears it until its button is pressed.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from app import batch, figures, paint
from app.context import (
    Context,
    as_sentences,
    can_generate,
    choices,
    chosen_variants,
    describe,
    frame,
    in_lane,
    initial_variant_choices,
    rank_text,
    sentence,
    valid,
)
from app.settings import LIMITS, clamp
from app.store import Base, ModelStore, SessionModels, get_base


logger = logging.getLogger(__name__)
PPL_TABLE = ["model", "perplexity (lower is better)", "loss (nats/token, lower is better)", "tokens"]
FALLBACK_PROMPT = "Once upon a time"
DEFAULT_NEW_TOKENS = 80  # without precomputed answers to match
CHAT_EXCHANGES = 6  # of the bundled excerpt, for a chat model's passage
PRESS_GENERATE = "Press Generate to run the models on this prompt."
PRESS_SCORE = "Press Score passage to score this passage."
PPL_CAPTION = (
    "Perplexity is how surprised a model is by the passage: lower means it expected the text more. An adapter learns "
    "one kind of text, so it scores lower than its base on that kind and can score higher on another (the same play "
    "as plain text, or in another spelling): the default passage is of the kind the adapters were trained on, and "
    "none of them was trained on it."
)


def check_text_sizes(*inputs: Any) -> list:
    """Validator of the language events: no text input longer than the request-size limit (a prompt beyond its
    own limit is cut to its end, with a notice; a passage is scored on its first tokens)."""
    too_long = f"At most {LIMITS.max_text_chars:,} characters, please: this text is longer."
    return [valid(too_long if isinstance(x, str) and len(x) > LIMITS.max_text_chars else None) for x in inputs]


def columns(texts: dict[str, str], prompt: str) -> str:
    """The prompt once, set apart, then every model's answer side by side (escaped: generated text is untrusted)."""
    cells = "".join(
        f'<div class="gen-col"><div class="gen-name">{html.escape(n)}</div>'
        f'<pre class="gen-text">{html.escape(t)}</pre></div>'
        for n, t in texts.items()
    )
    shown = html.escape(prompt[-200:]) or "<em>(empty: from the start-of-text token)</em>"
    head = f'<div class="gen-prompt"><span class="gen-label">Prompt</span> {shown}</div>'
    return f'{head}<div class="gen-label gen-sep">Answers</div><div class="gen-row">{cells}</div>'


@as_sentences("generate text")
def generate(
    store: ModelStore,
    session: SessionModels | None,
    base_name: str,
    prompt: str,
    names: list[str],
    max_new_tokens: float,
    temperature: float,
    top_k: float,
    seed: float,
) -> Iterator[tuple[str, str]]:
    """Stream every chosen variant's continuation: the batch's (``app.batch``) a token of every variant per forward
    pass, any variant run on its own a token in turn. Yields (html, notice).

    A model that fails shows the reason in its own column (a batch's failure, in each of its columns); the others
    go on.
    """
    chosen = chosen_variants(store, session, base_name, names, generate=True)
    tokenizer = get_base(store, session, base_name).processor
    prompt = prompt or ""
    notices = []
    if len(prompt) > LIMITS.max_prompt_chars:
        prompt = prompt[-LIMITS.max_prompt_chars :]
        notices.append(f"The prompt was cut to its last {LIMITS.max_prompt_chars} characters.")
    if not prompt.strip():
        notices.append("Empty prompt: generating from the start-of-text token.")
    max_new = int(clamp(max_new_tokens, 1, LIMITS.max_new_tokens))
    settings = dict(max_new_tokens=max_new, temperature=clamp(temperature, 0.0, 2.0), top_k=int(clamp(top_k, 0, 1000)))
    notices.append(_decoding(settings["temperature"], max_new))
    plan = batch.plan(store, session, base_name, chosen)
    if len(plan.routed) > 1:
        notices.append(f"{len(plan.routed)} models answer together: one forward pass per token, a row each.")
    streams = batch.generate_streams(plan, tokenizer, prompt, int(seed or 0), **settings)
    texts = dict.fromkeys(chosen, "")
    notice = " ".join(notices)
    yield columns(texts, prompt), notice
    while streams:
        for stream in list(streams):
            written, iterator = stream
            try:
                texts.update(next(iterator))
            except StopIteration:
                streams.remove(stream)
            except Exception as error:  # one model's (or one batch's) failure is shown in its columns; others go on
                for name in written:
                    texts[name] += f"\n[{sentence(f'generate with {name}', error)}]"
                streams.remove(stream)
        yield columns(texts, prompt), notice


def _decoding(temperature: float, max_new: int) -> str:
    """How the answers on screen were decoded, in words."""
    if temperature <= 0:
        return f"Greedy answers (temperature 0: always the likeliest token), at most {max_new} new tokens."
    return f"Sampled answers (temperature {temperature:g}), at most {max_new} new tokens: another seed, other answers."


@as_sentences("compute the next-token distribution")
def next_tokens(
    store: ModelStore, session: SessionModels | None, base_name: str, prompt: str, names: list[str]
) -> go.Figure:
    """Each variant's 10 most likely next tokens after the prompt."""
    chosen = chosen_variants(store, session, base_name, names, generate=True)
    tokenizer = get_base(store, session, base_name).processor
    prompt = (prompt or "")[-LIMITS.max_prompt_chars :]
    dists = batch.next_tokens(batch.plan(store, session, base_name, chosen), tokenizer, prompt, k=10)
    methods = {n: v.method for n, v in chosen.items()}
    subtitles = {n: rank_text(v).rstrip(" ·") for n, v in chosen.items()}
    return figures.topk_bars(dists, "Next-token distribution (top 10)", methods, subtitles)


@as_sentences("score the passage")
def passage_perplexity(
    store: ModelStore, session: SessionModels | None, base_name: str, passage: str, names: list[str]
) -> tuple[object, str]:
    """Perplexity of a pasted passage under each variant (lower: the passage looks more like its training)."""
    chosen = chosen_variants(store, session, base_name, names, generate=True)
    if not passage or len(passage.strip()) < 2:
        raise gr.Error("Paste a passage of at least a few characters.")
    tokenizer = get_base(store, session, base_name).processor
    plan = batch.plan(store, session, base_name, chosen)
    results = batch.perplexity(plan, tokenizer, passage, max_tokens=LIMITS.max_perplexity_tokens)
    rows = [[n, round(r.perplexity, 3), round(r.loss, 4), r.tokens] for n, r in results.items()]
    truncated = any(r.truncated for r in results.values())
    notice = f"Scored the first {LIMITS.max_perplexity_tokens} tokens only." if truncated else ""
    return frame(rows, PPL_TABLE), notice


# ---------------------------------------------------------------------------------------------------------------
# The passage of each base, and the first paint


def chat_passage(tokenizer: Any, passages: dict[str, str]) -> tuple[str, str] | None:
    """(text, where it is from) of the first bundled play excerpt that cuts into exchanges, written in the
    tokenizer's chat template as the chat adapters' training data is (``hora.assets.dialogue``); None without a
    chat template or such an excerpt."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    from hora.assets.dialogue import chat_documents, exchanges

    for name, text in passages.items():
        # an excerpt is one scene: its header (what the play's full text has) makes dialogue.scenes see it whole
        items = exchanges(Path(name).stem, "SCENE\n\n" + text)
        if len(items) >= 2:
            chat = "".join(chat_documents(tokenizer, items[:CHAT_EXCHANGES]))
            return chat, f"{Path(name).stem}, its exchanges as chat turns"
    return None


def passage_for(ctx: Context, base: Base) -> dict[str, str]:
    """The passage a base's section starts with (see the module docstring), and where it is from; remembered for an
    embedded base, so that a warm start needs no tokenizer."""
    plain = {"passage": ctx.passage, "source": Path(next(iter(ctx.passages), "")).stem}

    def choose() -> dict[str, str]:
        chat = chat_passage(base.processor, ctx.passages)
        return {"passage": chat[0], "source": chat[1]} if chat else plain

    digest = hashlib.sha256(json.dumps([ctx.passage, ctx.passages], sort_keys=True).encode()).hexdigest()
    try:
        return paint.remembered(base, "passage", {"passages": digest}, choose)
    except Exception:  # a passage that cannot be made must not stop the app
        logger.exception("choosing the passage of %s failed", base.name)
        return plain


def first_language(ctx: Context, base_name: str | None) -> dict:
    """The language section's first paint: the default prompt, precomputed answers if the base has them (and the
    settings that reproduce them), the next-token distribution of every model that can generate, and the base's
    passage scored by each."""
    passage_line = next((line.strip() for line in ctx.passage.splitlines() if line.strip()), "")
    first = {"prompt": passage_line or FALLBACK_PROMPT, "prompts": [], "html": "", "notice": PRESS_GENERATE}
    first.update(plot=figures.placeholder("Press Generate."), max_new=DEFAULT_NEW_TOKENS, passage=ctx.passage)
    first.update(table=frame([], PPL_TABLE), ppl_notice=PRESS_SCORE)
    if not base_name:
        return first
    base = ctx.store.bases[base_name]
    generations = base.info.get("generations") or {}
    prompts = [p for p in generations.get("prompts") or [] if isinstance(p, str)]
    if prompts:
        first["prompt"], first["prompts"] = prompts[0], prompts
        outputs = {n: o[0] for n, o in (generations.get("outputs") or {}).items() if n in base.variants and o}
        greedy = generations.get("decoding") == "greedy" and isinstance(generations.get("max_new_tokens"), int)
        if outputs:
            first["html"] = columns(outputs, prompts[0])
            first["notice"] = "Written when the models were built; press Generate to run them live."
        if outputs and greedy:  # the controls start where Generate gives the same answers
            first["max_new"] = generations["max_new_tokens"]
            first["notice"] = _decoding(0, first["max_new"]) + " Written when the models were built: Generate gives "
            first["notice"] += "the same with these settings; raise the temperature to sample."
    names = [n for n, v in base.variants.items() if can_generate(v)]

    def draw() -> str:
        return next_tokens(ctx.store, None, base_name, first["prompt"], names).to_json()

    try:
        first["plot"] = paint.as_plot(paint.remembered(base, "next-tokens", {"prompt": first["prompt"]}, draw))
        chosen = passage_for(ctx, base)
        first["passage"] = chosen["passage"]

        def score() -> list:
            return passage_perplexity(ctx.store, None, base_name, chosen["passage"], names)[0].values.tolist()

        rows = paint.remembered(base, "perplexity", {"passage": chosen["passage"], "models": names}, score)
        first["table"], first["ppl_notice"] = frame(rows, PPL_TABLE), f"Scored: {chosen['source']}."
    except Exception:
        logger.exception("first paint of the language section failed")
    return first


# ---------------------------------------------------------------------------------------------------------------
# The section


def base_changed(
    ctx: Context, session: SessionModels | None, base_name: str | None
) -> tuple[str, str, str, go.Figure, object, str]:
    """What a new base clears or resets: its passage, the answers, the next-token plot and the perplexity table
    (they belonged to the base before)."""
    passage = ctx.passage
    if base_name:
        passage = passage_for(ctx, get_base(ctx.store, session, base_name))["passage"]
    cleared = figures.placeholder(PRESS_GENERATE)
    return passage, "", PRESS_GENERATE, cleared, frame([], PPL_TABLE), PRESS_SCORE


def prompt_changed() -> tuple[str, str, go.Figure]:
    """A new prompt: the answers and the next-token plot belonged to the one before."""
    return "", PRESS_GENERATE, figures.placeholder(PRESS_GENERATE)


def passage_changed() -> tuple[object, str]:
    """A new passage: the perplexities belonged to the one before."""
    return frame([], PPL_TABLE), PRESS_SCORE


def _controls(ctx: Context, base0: str | None, first: dict) -> dict:
    controls = {"base": gr.Dropdown(ctx.store.names("lm"), value=base0, label="Base model", elem_id="lm-base")}
    controls["prompt"] = gr.Textbox(label="Prompt", lines=3, value=first["prompt"], elem_id="prompt")
    if first["prompts"]:
        gr.Examples(
            [[p] for p in first["prompts"]], inputs=controls["prompt"], label="Prompts the models were built with"
        )
    initial = initial_variant_choices(ctx.store, "lm", base0, generators_only=True)
    controls["variants"] = gr.CheckboxGroup(label="Models", elem_id="lm-variants", **choices(initial))
    # One slider per line: side by side, their labels wrap on a phone.
    new = gr.Slider(
        1, LIMITS.max_new_tokens, value=first["max_new"], step=1, label="Max new tokens", elem_id="max-new"
    )
    controls["max_new"] = new
    controls["temperature"] = gr.Slider(  # 0: what the answers shown first were written with
        0.0, 2.0, value=0.0, step=0.05, label="Temperature", info="0: always the likeliest", elem_id="temperature"
    )
    controls["top_k"] = gr.Slider(0, 200, value=40, step=1, label="Top-k", info="sample among the k likeliest; 0: all")
    controls["seed"] = gr.Number(value=0, precision=0, label="Seed")
    return controls


def section(ctx: Context) -> tuple[gr.Dropdown, gr.CheckboxGroup, gr.Markdown]:
    """The Language section's components and events; returns its base picker, model checkboxes and about text."""
    base0 = next(iter(ctx.store.names("lm")), None)
    first = first_language(ctx, base0)
    gr.Markdown("### Language")
    about = gr.Markdown(describe(ctx.store, None, base0), label="About these models", elem_classes="about")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            c = _controls(ctx, base0, first)
            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        with gr.Column(scale=2, min_width=300):
            generations = gr.HTML(first["html"], label="Generations", elem_id="generations")
            notice = gr.Markdown(first["notice"], label="Generation notice", elem_id="generation-notice")
            token_plot = gr.Plot(first["plot"], label="Next-token distribution", elem_id="token-plot")
    passage = gr.Textbox(label="Passage to score", lines=4, value=first["passage"], elem_id="passage")
    ppl_btn = gr.Button("Score passage", elem_id="ppl-btn")
    ppl_table = gr.Dataframe(  # a row of its own: beside the passage its columns were clipped
        first["table"],
        headers=PPL_TABLE,
        label="Perplexity: how surprised each model is by the passage",
        elem_id="ppl-table",
    )
    ppl_notice = gr.Markdown(first["ppl_notice"], label="Scoring notice", elem_id="ppl-notice")
    gr.Markdown(PPL_CAPTION, elem_classes="caption")
    _wire(
        ctx,
        c,
        generate_btn,
        ppl_btn,
        {
            "generations": generations,
            "notice": notice,
            "tokens": token_plot,
            "passage": passage,
            "table": ppl_table,
            "ppl_notice": ppl_notice,
        },
    )
    return c["base"], c["variants"], about


def _wire(ctx: Context, c: dict, generate_btn: gr.Button, ppl_btn: gr.Button, out: dict) -> None:
    models = [ctx.session, c["base"], c["prompt"], c["variants"]]
    generate_btn.click(
        partial(generate, ctx.store),
        models + [c["max_new"], c["temperature"], c["top_k"], c["seed"]],
        [out["generations"], out["notice"]],
        api_name="generate",
        validator=in_lane(ctx, "inference", check_text_sizes),
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
    ).then(
        partial(next_tokens, ctx.store),
        models,
        out["tokens"],
        api_name="next_tokens",
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
    )
    ppl_btn.click(
        partial(passage_perplexity, ctx.store),
        [ctx.session, c["base"], out["passage"], c["variants"]],
        [out["table"], out["ppl_notice"]],
        api_name="perplexity",
        validator=in_lane(ctx, "inference", check_text_sizes),
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
    )
    answers = [out["generations"], out["notice"], out["tokens"]]
    scores = [out["table"], out["ppl_notice"]]
    c["base"].change(
        partial(base_changed, ctx),
        [ctx.session, c["base"]],
        [out["passage"], *answers, *scores],
        api_name="lm_clear",
        queue=False,
    )
    c["prompt"].change(prompt_changed, None, answers, api_name="prompt_clear", queue=False, trigger_mode="always_last")
    out["passage"].change(
        passage_changed, None, scores, api_name="passage_clear", queue=False, trigger_mode="always_last"
    )
