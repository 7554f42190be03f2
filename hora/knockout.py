"""Per-head importance by knock-out: for one input, remove one head's update ΔW_h at a time and measure how far the
model's output moves.

Removing head h's update means its output rows of the adapted projection are computed with the base weight alone,
W0·x + b, instead of the adapted W'·x + b: the same for LoRA and HoRA (the rows lose s·B_h·A·x) and for DoRA and DoRAN
(the rows also lose their magnitude rescaling). Every knock-out of one adapter runs in ONE batched forward pass: row 0
is the whole adapter, row 1 + h has head h removed, the last row has every head of the projection removed (the
layer's whole update, for scale). The output measure is the change of the probability of the class the whole adapter
predicts (a classifier), or the total variation distance between next-token distributions (a language model).

The hooks that do this act only for the thread that asked (a ``ContextVar``), so a model that serves other requests
at the same time is not disturbed. ``image_inputs`` and ``prompt_inputs`` make the inputs of one example as
``hora.infer`` feeds the model (a chat model's prompt in its chat template, its last ``MAX_PROMPT_TOKENS`` kept);
``reference_name`` says what the reference is (a class's label, a token's text).
"""

from __future__ import annotations

import threading
import weakref
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from hora.analysis import adapted_layers
from hora.infer import _encode, as_chat, last_logits_only
from hora.inspect import AdaptedModule, find_projection


MAX_ROWS = 64  # heads + 2 rows per adapter and request: bounded whatever a model's head count
MAX_PROMPT_TOKENS = 64  # of a prompt (its chat template included): the work of one knock-out is rows × tokens
_PLAN: ContextVar[dict[int, torch.Tensor] | None] = ContextVar("hora_knockout_plan", default=None)
_HOOKED: weakref.WeakSet = weakref.WeakSet()  # modules that carry the (idle unless asked) knock-out hook
_HOOK_LOCK = threading.Lock()


@dataclass
class Knockout:
    """How far one adapter's output moves when each head's update of one projection is removed."""

    heads: list[int]
    effects: list[float]  # one per head
    whole: float  # every head of the projection removed at once
    measure: str  # what an effect is
    reference: int  # what the whole adapter outputs: its top class's index, or its most likely next token's id
    layers: list[int]  # the blocks whose projection was knocked out
    next_token: bool = False  # the reference is a token (a causal LM's next one), not a class
    probability: float = 1.0  # of the reference under the whole adapter


def _hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """Replace the knocked-out rows of ``output`` by the base layer's; only within a knock-out call (``_PLAN``)."""
    plan = _PLAN.get()
    if plan is None or id(module) not in plan:
        return None
    mask = plan[id(module)]  # (batch, out): True where a row of the output keeps the base weight's value
    base = module.get_base_layer()(args[0])  # W0·x + b for every row, (batch, ..., out)
    shape = (mask.shape[0],) + (1,) * (output.dim() - 2) + (mask.shape[1],)
    return torch.where(mask.view(shape), base.to(output.dtype), output)


def _ensure_hooked(module: nn.Module) -> None:
    with _HOOK_LOCK:
        if module not in _HOOKED:
            module.register_forward_hook(_hook)
            _HOOKED.add(module)


def _masks(found: list[tuple[AdaptedModule, slice]], heads: int) -> dict[int, torch.Tensor]:
    """Module id -> (heads + 2, out) mask: row 0 nothing removed, row 1 + h head h, the last row every head."""
    plan = {}
    for module, rows in found:
        out = module.layout.out_features
        hd = module.layout.head_dim
        mask = torch.zeros(heads + 2, out, dtype=torch.bool)
        for h in range(heads):
            mask[1 + h, rows.start + h * hd : rows.start + (h + 1) * hd] = True
        mask[-1, rows] = True
        plan[id(module.module)] = mask
    return plan


@torch.no_grad()
def head_knockout(
    model: nn.Module, inputs: dict[str, torch.Tensor], projection: str, layer: int | None = None
) -> Knockout:
    """Knock out each head of ``projection`` (a module name or head group: ``"q"``, ``"v"``, ``"q_proj"``) in block
    ``layer`` (None: in every adapted block at once) of ``model``'s active adapter, for one input.

    ``inputs`` are the model's keyword inputs for a batch of one (``pixel_values`` of an image classifier, or
    ``input_ids`` of a causal language model). Raises ``ValueError`` when the projection is not adapted there, or
    when heads + 2 exceeds ``MAX_ROWS``.
    """
    layers = adapted_layers(model, projection) if layer is None else [layer]
    if not layers:
        raise ValueError(f"No adapted projection {projection!r} in this model.")
    found = [find_projection(model, n, projection) for n in layers]
    if any(module.module.merged for module, _ in found):
        raise ValueError("The adapter is merged into the base weights; unmerge it before a knock-out.")
    first, rows = found[0]
    heads = (rows.stop - rows.start) // first.layout.head_dim
    if heads + 2 > MAX_ROWS:
        raise ValueError(f"{heads} heads: a knock-out runs heads + 2 <= {MAX_ROWS} rows in one batch.")
    if any(v.shape[0] != 1 for v in inputs.values() if isinstance(v, torch.Tensor)):
        raise ValueError("head_knockout takes the inputs of one example (a batch of one).")
    batch = {k: v.expand(heads + 2, *v.shape[1:]) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    last_only = last_logits_only(model) if "input_ids" in batch else {}  # a causal LM: the last position's logits
    for module, _ in found:
        _ensure_hooked(module.module)
    token = _PLAN.set(_masks(found, heads))
    try:
        logits = model(**batch, **last_only).logits
    finally:
        _PLAN.reset(token)
    return _measure(model, logits, heads, layers)


def _measure(model: nn.Module, logits: torch.Tensor, heads: int, layers: list[int]) -> Knockout:
    """Effects of the knock-outs from the batch's logits (row 0: the whole adapter)."""
    if logits.dim() == 3:  # a causal LM: the next-token distribution after the input
        p = logits[:, -1].float().softmax(-1)
        effects = 0.5 * (p - p[:1]).abs().sum(-1)  # total variation distance from the whole adapter's
        measure = "total variation distance of the next-token distribution"
        reference = int(p[0].argmax())
    else:
        p = logits.float().softmax(-1)
        top = int(p[0].argmax())
        effects = p[0, top] - p[:, top]  # how much the predicted class loses (negative: it gains)
        measure = "drop in the probability of the predicted class"
        reference = top
    return Knockout(
        heads=list(range(heads)),
        effects=[float(e) for e in effects[1:-1]],
        whole=float(effects[-1]),
        measure=measure,
        reference=reference,
        layers=layers,
        next_token=logits.dim() == 3,
        probability=float(p[0, reference]),
    )


def image_inputs(processor, image: Image.Image) -> dict[str, torch.Tensor]:
    """``head_knockout``'s inputs for one image: its pixels as the base's image processor prepares them."""
    return {"pixel_values": processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]}


def prompt_inputs(
    tokenizer, prompt: str, chat: bool = True, max_tokens: int = MAX_PROMPT_TOKENS
) -> tuple[dict[str, torch.Tensor], bool]:
    """``head_knockout``'s inputs for one prompt, and whether it was cut: its token ids, in the tokenizer's chat
    template when ``chat`` and the tokenizer has one (``hora.infer.as_chat``: the reference is then the first token
    of the answer), the last ``max_tokens`` kept. An empty prompt starts from the start-of-text token."""
    ids, cut = _encode(tokenizer, as_chat(tokenizer, prompt) if chat else prompt, max_tokens=max_tokens)
    return {"input_ids": ids}, cut


def reference_name(model: nn.Module, result: Knockout, tokenizer=None) -> str:
    """What ``result.reference`` is, for a reader: the class's label (a classifier), else the token's text quoted
    (``'The'``, decoded by ``tokenizer``), else its index."""
    if result.next_token:
        return repr(tokenizer.decode([result.reference])) if tokenizer is not None else str(result.reference)
    labels = getattr(getattr(model, "config", None), "id2label", None) or {}
    return str(labels.get(result.reference, result.reference))


__all__ = [
    "MAX_PROMPT_TOKENS",
    "MAX_ROWS",
    "Knockout",
    "head_knockout",
    "image_inputs",
    "prompt_inputs",
    "reference_name",
]
