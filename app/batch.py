"""The chosen variants of a base, run side by side in one batch: Compare's Classify, Generate, Next-token and
Perplexity each make one forward pass (per token, for Generate) through the base's ``hora.mixed.MixedModel`` with
a row per variant (``hora.infer.*_many``), instead of one model after the other.

``plan`` says which name each chosen variant has in that MixedModel: a shared variant its own, the bare base
``"base"``, a visitor's own (fine-tuned or loaded in its session) its name under the session's prefix, which only that
session knows, so no request can reach another visitor's variants (the MixedModel refuses a name it does not hold).
A variant that a mixed batch cannot serve (``app.store.serve``) runs on its own, as before. Every result comes back
in the order the visitor chose, and says whether it came from the batch: its latency is then the batch's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from app.store import ModelStore, SessionModels, Variant, get_base, mixed_of, serve
from hora import infer
from hora.mixed import MixedModel


@dataclass
class Batch:
    """The chosen variants of one base: those one MixedModel call serves (``routed``: shown name -> its name
    there), and the rest (``alone``), each run on its own; ``order`` is the visitor's."""

    mixed: MixedModel
    order: list[str]
    routed: dict[str, str] = field(default_factory=dict)
    alone: dict[str, Variant] = field(default_factory=dict)

    def ordered(self, results: dict[str, Any]) -> dict[str, Any]:
        """``results`` in the visitor's order."""
        return {n: results[n] for n in self.order if n in results}


def plan(store: ModelStore, session: SessionModels | None, base_name: str, chosen: dict[str, Variant]) -> Batch:
    """How the ``chosen`` variants of ``base_name`` run: each registered in the base's MixedModel when it can be
    (the first time it is asked for), else alone."""
    base = get_base(store, session, base_name)
    mixed = mixed_of(base)
    shared = base.variants if store.bases.get(base_name) is base else {}
    batch = Batch(mixed, list(chosen))
    for shown, variant in chosen.items():
        if variant is base.variants.get("base") and mixed.base_name is not None:
            name = mixed.base_name
        elif shared.get(shown) is variant:
            name = shown
        elif session is not None:
            name = session.prefix + shown
        else:  # a session's variant without its session: never registered under a shared name
            batch.alone[shown] = variant
            continue
        routed = serve(mixed, variant, name)
        if routed is None:
            batch.alone[shown] = variant
        else:
            batch.routed[shown] = routed
    return batch


def classify(batch: Batch, processor: Any, image: Image.Image, top_k: int = 5) -> dict[str, infer.Prediction]:
    """Top-k classes under every chosen variant: one forward pass for the batch (one per label-set size: classifiers
    of different sizes cannot share one), one per variant left alone."""
    groups: dict[int, list[str]] = {}
    for shown, name in batch.routed.items():
        groups.setdefault(len(batch.mixed.labels(name)), []).append(shown)
    results = {}
    for shown_names in groups.values():
        names = [batch.routed[n] for n in shown_names]
        found = infer.classify_many(batch.mixed, processor, image, names, top_k=top_k)
        results.update({shown: found[batch.routed[shown]] for shown in shown_names})
    results.update({n: infer.classify(v.model, processor, image, top_k=top_k) for n, v in batch.alone.items()})
    return batch.ordered(results)


def batch_sizes(batch: Batch) -> dict[str, int]:
    """How many variants shared each chosen variant's forward pass (1: it ran alone), as ``classify`` groups them."""
    sizes = {n: len(batch.mixed.labels(name)) for n, name in batch.routed.items()}
    counts = {size: list(sizes.values()).count(size) for size in sizes.values()}
    return {n: counts[sizes[n]] if n in sizes else 1 for n in batch.order}


def generate_streams(
    batch: Batch, tokenizer: Any, prompt: str, seed: int, **settings: Any
) -> list[tuple[list[str], Iterator[dict[str, str]]]]:
    """Streams of ``{shown name: text so far}``, each with the names it writes: one for the batch (a token of
    every variant per forward pass), one per variant left alone. Each variant samples with ``seed`` as it would
    alone, so its text is the one it writes alone."""
    streams = []
    if batch.routed:
        shown = {name: n for n, name in batch.routed.items()}
        many = infer.generate_stream_many(batch.mixed, tokenizer, prompt, list(shown), seed=seed, **settings)
        streams.append((list(batch.routed), ({shown[k]: t for k, t in texts.items()} for texts in many)))
    for n, variant in batch.alone.items():
        single = infer.generate_stream(variant.model, tokenizer, prompt, seed=seed, **settings)
        streams.append(([n], ({n: text} for text in single)))
    return streams


def next_tokens(batch: Batch, tokenizer: Any, prompt: str, k: int = 10) -> dict[str, infer.TokenDistribution]:
    """The k likeliest next tokens under every chosen variant."""
    results = {}
    if batch.routed:
        found = infer.next_token_topk_many(batch.mixed, tokenizer, prompt, list(batch.routed.values()), k=k)
        results.update({shown: found[name] for shown, name in batch.routed.items()})
    results.update({n: infer.next_token_topk(v.model, tokenizer, prompt, k=k) for n, v in batch.alone.items()})
    return batch.ordered(results)


def perplexity(batch: Batch, tokenizer: Any, text: str, max_tokens: int | None) -> dict[str, infer.Perplexity]:
    """The perplexity of ``text`` under every chosen variant."""
    results = {}
    if batch.routed:
        names = list(batch.routed.values())
        found = infer.perplexity_many(batch.mixed, tokenizer, text, names, max_tokens=max_tokens)
        results.update({shown: found[name] for shown, name in batch.routed.items()})
    for n, variant in batch.alone.items():
        results[n] = infer.perplexity(variant.model, tokenizer, text, max_tokens=max_tokens)
    return batch.ordered(results)


__all__ = ["Batch", "batch_sizes", "classify", "generate_streams", "next_tokens", "perplexity", "plan"]
