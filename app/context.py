"""What every tab of the explorer is built from: the shared models, the session's state and the bundled files, and
what every tab says about them.

What a model is comes from its ``info`` (the builder's ``asset.json``: ``description``, ``kind``, ``data.source``,
``metrics``, ``config``, ``method_info``, ``trainable_parameters``) or, where that is silent, from the model itself;
a missing fact is left out and a base with none gets a fallback sentence. No model name is written here.

Example images carry their true label by one naming rule, ``<kind>-<label>-<anything>.<ext>``
(``digit-7-heldout-0017.png`` is a "digit" whose label is "7"), or by an ``examples.json`` beside them that maps a
file name to its label; a label that neither the base nor any of its adapters knows is no label.

Also here: ``as_sentences``, which turns any exception reaching the UI into one readable sentence. The checks of a
visitor's data before a fine-tune are ``app.finetune_data``'s.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from app.guard import FairShare, FairShareError, TrainingBudget, pending_jobs, visitor_id
from app.settings import LIMITS
from app.store import Base, ModelStore, SessionModels, Variant, get_base, summary_of, variants_of
from hora.methods import label as method_label


EXAMPLES_MANIFEST = "examples.json"


@dataclass
class Context:
    """``session`` is the per-visitor ``gr.State`` (a ``SessionModels``); ``samples`` maps a bundled dataset's
    name to its path and ``sample_tasks`` to its task; ``examples`` are image paths offered in Compare; ``passage``
    is the default text to score and ``passages`` every bundled one (``app.language`` picks one per base)."""

    store: ModelStore
    session: gr.State
    samples: dict[str, str] = field(default_factory=dict)
    sample_tasks: dict[str, str] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    passage: str = ""
    demo: Any = None  # the Blocks: its queue tells who waits in which lane
    share: FairShare = field(default_factory=lambda: fair_share_limits())
    budget: TrainingBudget = field(
        default_factory=lambda: TrainingBudget(LIMITS.max_visitor_train_seconds, LIMITS.train_budget_window)
    )
    passages: dict[str, str] = field(default_factory=dict)  # every bundled passage, file name -> text


# Fair sharing (app.guard): every run-starting event joins one lane (its concurrency_id); a visitor may hold a few
# places in each, and each lane a bounded number of waiting runs, so that one visitor can never starve the others.
LANES = {"inference": "inference", "training": "training", "loading": "loading"}  # concurrency_id -> lane


def fair_share_limits() -> FairShare:
    """The lanes' limits from ``app.settings`` (their environment variables are in the README)."""
    return FairShare(
        per_visitor={
            "inference": LIMITS.visitor_inference_jobs,
            "training": LIMITS.visitor_training_jobs,
            "loading": LIMITS.visitor_loading_jobs,
        },
        lane_size={
            "inference": LIMITS.queue_size,
            "training": LIMITS.training_queue_size,
            "loading": LIMITS.loading_queue_size,
        },
    )


def visitor(request: Any) -> str:
    """Who is asking: the Space's OAuth user, else a salted hash of the client's address (never the session)."""
    return visitor_id(request, proxy_hops=LIMITS.proxy_hops)


def in_lane(ctx: Context, lane: str, check: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """An event's validator: its own checks first (each shown on the control at fault), then the visitor's fair
    share of ``lane``, both before the run joins Gradio's queue (a refused run never takes a place in it)."""

    def validator(request: gr.Request, *inputs: Any) -> Any:
        results = check(*inputs) if check is not None else [valid() for _ in inputs]
        if any(isinstance(r, dict) and r.get("is_valid") is False for r in results):
            return results
        try:
            ctx.share.admit_settled(visitor(request), lane, lambda: pending_jobs(ctx.demo._queue, LANES))
        except FairShareError as refusal:  # shown on the first control that takes a check (Gradio needs one per input)
            first = next((i for i, r in enumerate(results) if isinstance(r, dict)), 0)
            return [gr.validate(False, str(refusal)) if i == first else r for i, r in enumerate(results)]
        return results

    return validator


def choices(update: dict) -> dict[str, Any]:
    """The ``choices`` and ``value`` of a ``gr.update``, as keyword arguments for building a component."""
    return {k: v for k, v in update.items() if k in ("choices", "value")}


def can_generate(variant: Variant) -> bool:
    """Whether a variant can write text: a causal LM can, a text classifier built on one cannot."""
    return summary_of(variant)["can_generate"]


def variant_choices(
    store: ModelStore, session: SessionModels | None, base_name: str | None, generators_only: bool = False
) -> dict:
    """Every variant of a base, all ticked, each labelled with its method, rank and size (the value stays its
    name). ``generators_only`` leaves out what cannot generate text (text classifiers trained on a language model)."""
    variants = variants_of(store, session, base_name) if base_name else {}
    names = [n for n, v in variants.items() if not generators_only or can_generate(v)]
    return gr.update(choices=[(short_label(n, variants[n]), n) for n in names], value=names)


def initial_variant_choices(
    store: ModelStore, kind: str, base_name: str | None, generators_only: bool = False
) -> dict:
    """A section's model checkboxes as built: ``base_name``'s variants ticked, and every other ``kind`` base's
    variants offered too, since Gradio checks an API call's values against the choices the page was built with
    (a browser's page load narrows them to the base shown)."""
    update = variant_choices(store, None, base_name, generators_only)
    listed = {value for _, value in update["choices"]}
    for other in store.names(kind):
        extra = variant_choices(store, None, other, generators_only)["choices"]
        update["choices"] += [(label, value) for label, value in extra if value not in listed]
        listed |= {value for _, value in extra}
    return update


def models_problem(
    store: ModelStore, session: SessionModels | None, base_name: str, names: list[str] | None, generate: bool
) -> tuple[str | None, str | None]:
    """(problem with the base, problem with the ticked models) of a Compare section, each a sentence or None."""
    if not base_name:
        return "Pick a base model first.", None
    try:
        variants = variants_of(store, session, base_name)
    except KeyError as error:
        return str(error.args[0]), None
    chosen = [n for n in (names or []) if n in variants]
    if not chosen:
        return None, "Tick at least one model to compare."
    mute = [n for n in chosen if generate and not can_generate(variants[n])]
    if mute:
        return None, f"{', '.join(mute)} classifies text and cannot generate it: untick it."
    return None, None


def chosen_variants(
    store: ModelStore, session: SessionModels | None, base_name: str, names: list[str] | None, generate: bool = False
) -> dict[str, Variant]:
    """The ticked variants of a base, in order; a ``gr.Error`` saying what to fix when there are none to run."""
    base_problem, names_problem = models_problem(store, session, base_name, names, generate)
    if base_problem or names_problem:
        raise gr.Error(base_problem or names_problem)
    variants = variants_of(store, session, base_name)
    return {n: variants[n] for n in names if n in variants}


def frame(rows: list[list], columns: list[str]):
    """A table with its headers (a bare list of rows would lose them)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def rank_text(variant: Variant) -> str:
    """``"r=8 · "`` for a low-rank adapter, else nothing: the start of a plot's subtitle."""
    rank = facts(variant).rank if variant.method != "base" else None
    return f"r={rank} · " if rank is not None else ""


# ---------------------------------------------------------------------------------------------------------------
# What a model is


def count(n: float) -> str:
    """A parameter count people read at a glance: 970, 37.8k, 1.12M."""
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    return f"{n / 1e3:.3g}k" if n >= 1e4 else f"{int(n):,}"


@dataclass
class Facts:
    """What the UI says about one variant: its method, rank r and trained parameters, and how it scored."""

    method: str  # as people read it ("LoRA")
    rank: int | None
    params: int | None
    score: str = ""  # "accuracy 0.78", "loss folio 4.47, modern 4.51" (empty when the card has none)
    unit: str = ""  # what a loss is measured in
    training: str = ""  # "150 steps, 10 examples per class"

    @property
    def metric(self) -> str:
        """The score for a sentence: "held-out accuracy 0.78", with its unit."""
        return f"held-out {self.score}" + (f" ({self.unit})" if self.unit else "") if self.score else ""


LOSS_UNIT = "nats/token, lower is better"


def _score(metrics: dict) -> tuple[str, str]:
    """(score, unit) of a card's held-out metrics: accuracy, or the loss on each held-out set."""
    if "accuracy" in metrics:
        n = metrics.get("n")  # how many held-out items: "356/500" says what "0.71" is of
        right = f" ({round(metrics['accuracy'] * n)}/{n})" if isinstance(n, int) and n > 0 else ""
        return f"accuracy {metrics['accuracy']:.2f}{right}", ""
    losses = {k: v["loss"] for k, v in metrics.items() if isinstance(v, dict) and "loss" in v}
    if losses:
        return "loss " + ", ".join(f"{k} {v:.2f}" for k, v in losses.items()), LOSS_UNIT
    return (f"loss {metrics['loss']:.2f}", LOSS_UNIT) if "loss" in metrics else ("", "")


def facts(variant: Variant, info: dict | None = None) -> Facts:
    """Facts of a variant from its ``info`` (or ``info`` given: a base's own card), else from the model."""
    info = info if info is not None else (variant.info or {})
    config = info.get("config") or {}
    rank = summary_of(variant)["rank"]
    params = info.get("trainable_parameters") or (info.get("method_info") or {}).get("trainable_params")
    if params is None and rank is not None:
        params = summary_of(variant)["trainable"]
    steps, shots = (info.get("training") or {}).get("steps") or config.get("steps"), config.get("shots")
    training = ", ".join(
        t for t in (f"{steps} steps" if steps else "", f"{shots} examples per class" if shots else "") if t
    )
    score, unit = _score(info.get("metrics") or {})
    return Facts(method_label(variant.method), rank, params, score, unit, training)


def short_label(name: str, variant: Variant) -> str:
    """``"LoRA · r=24 · 37.8k"``: a variant's name with its rank and trained parameters, where it has them."""
    if variant.method == "base":
        return name
    f = facts(variant)
    parts = [name] + ([f"r={f.rank}"] if f.rank is not None else []) + ([count(f.params)] if f.params else [])
    return " · ".join(parts)


def labels_known(base: Base) -> list[str]:
    """Every class a base or any of its variants answers with, in order (adapters may know more than their base)."""
    seen: dict[str, None] = dict.fromkeys(summary_of(base)["labels"])
    for variant in base.variants.values():
        seen.update(dict.fromkeys(summary_of(variant)["labels"]))
    return list(seen)


def _class_sentence(base: Base, metrics: dict) -> str:
    labels = summary_of(base)["labels"]
    if not labels:
        return ""
    shown = ", ".join(labels[:12]) + (", …" if len(labels) > 12 else "")
    text = f"It answers with one of {len(labels)} classes ({shown})."
    per_class = metrics.get("per_class") or {}
    weak = [c for c, v in per_class.items() if v < 0.5]
    if weak and not set(weak) & set(labels) and set(weak) <= set(labels_known(base)):
        text += f" It was never trained on {', '.join(weak)}: the adapters below were trained to recognise them too."
    elif weak:
        text += f" Its held-out accuracy is below 50% on {', '.join(weak)}."
    return text


def describe_base(base: Base) -> str:
    """One or two sentences on what a base model is and what it was trained on, from its ``info``."""
    info = base.info or {}
    if info.get("description"):
        return f"**{base.name}**: {info['description']}"
    kind = "an image classifier" if base.kind == "image" else "a language model"
    size = f" with {count(info['parameters'])} parameters" if info.get("parameters") else ""
    source = (info.get("data") or {}).get("source")
    text = f"**{base.name}** is {kind}{size}" + (f", trained on {source}." if source else ".")
    metrics = info.get("metrics") or {}
    extra = _class_sentence(base, metrics) if base.kind == "image" else ""
    score, unit = _score(metrics)
    if not extra and score:
        extra = f"Its held-out {score}" + (f" ({unit})." if unit else ".")
    if not source:
        extra += " It came without a card, so the explorer cannot say what it was trained on."
    return f"{text} {extra}".strip()


def describe_variants(variants: Iterable[tuple[str, Variant]]) -> str:
    """One line on the adapters: how they were trained, then each one's rank, trained parameters and score."""
    items = [(name, facts(variant)) for name, variant in variants if variant.method != "base"]
    if not items:
        return ""
    trainings, units = {f.training for _, f in items}, {f.unit for _, f in items if f.unit}
    head = "Adapters" + (
        f", each trained {next(iter(trainings))}" if len(trainings) == 1 and "" not in trainings else ""
    )
    head += " — rank, trained parameters, held-out score" + (f" ({units.pop()})" if len(units) == 1 else "")
    parts = []
    for name, f in items:
        bits = [f"r={f.rank}" if f.rank is not None else "", f"{count(f.params)}" if f.params else "", f.score]
        bits += [f.training] if len(trainings) > 1 else []
        parts.append(f"**{name}** " + ", ".join(b for b in bits if b))
    return f"{head}: " + "; ".join(parts) + "."


def describe(store: ModelStore, session: SessionModels | None, base_name: str | None) -> str:
    """Markdown: what the base is, then its adapters (for the orientation line of a tab)."""
    if not base_name:
        return "No model is loaded."
    base = get_base(store, session, base_name)
    return describe_base(base) + "\n\n" + describe_variants(variants_of(store, session, base_name).items())


# ---------------------------------------------------------------------------------------------------------------
# Example images and their true labels


def example_truths(paths: list[str], labels: Iterable[str]) -> dict[str, str | None]:
    """The true label of each example image (None where neither the manifest nor the naming rule gives a label
    the model knows); see the module docstring for the rule."""
    known = set(labels)
    manifests: dict[Path, dict] = {}
    truths = {}
    for path in paths:
        folder = Path(path).parent
        if folder not in manifests:
            file = folder / EXAMPLES_MANIFEST
            manifests[folder] = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        fields = Path(path).stem.split("-")
        named = manifests[folder].get(Path(path).name, fields[1] if len(fields) > 1 else None)
        truths[path] = str(named) if named is not None and str(named) in known else None
    return truths


def example_label(path: str, truth: str | None) -> str:
    """What an example's button says: its kind and true label (``"digit 7"``), else its file name."""
    stem = Path(path).stem
    return f"{stem.split('-')[0]} {truth}" if truth is not None else stem


# ---------------------------------------------------------------------------------------------------------------
# Errors as sentences


def sentence(action: str, error: BaseException) -> str:
    """``error`` as one sentence a visitor can read: what failed, and the first line of why."""
    why = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return f"Could not {action}: {why.rstrip('.')}."


def as_sentences(action: str) -> Callable[[Callable], Callable]:
    """Decorate an event handler so that any exception reaching the UI becomes a ``gr.Error`` sentence.

    ``gr.Error`` (already a sentence) passes through. Generators stay generators, since Gradio streams those.
    """

    def wrap(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def streaming(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except gr.Error:
                    raise
                except Exception as error:
                    raise gr.Error(sentence(action, error)) from error

            return streaming

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:
                raise gr.Error(sentence(action, error)) from error

        return plain

    return wrap


def valid(message: str | None = None) -> dict:
    """A ``gr.validate`` result: valid when ``message`` is None, else that sentence shown on the component."""
    return gr.validate(message is None, message or "")


def device_description() -> str:
    """Where fine-tuning runs: the GPU's name, Apple MPS, or the CPU and its cores."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    mps = getattr(torch.backends, "mps", None)
    return "Apple GPU (MPS)" if mps and mps.is_available() else f"CPU ({os.cpu_count()} cores)"
