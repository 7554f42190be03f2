"""Many adapters over one base, side by side, without a copy of the base's weights for each.

``shared_copy(model)`` is a new module tree whose parameters and buffers are the very tensors of ``model``: loading
an adapter onto it (``hora.load_adapter``) wraps the copy's layers, never the original's, so every variant runs on
its own (concurrently, each with its own adapter) while the frozen base weights are held once. Nothing may write
into a shared weight: no ``merge_adapter`` on such a variant (merging would change every variant at once), and no
training of the base (adapters train their own tensors only).

    >>> base = hora.load_base("smollm2-135m-instruct")
    >>> lora = hora.load_adapter(shared_copy(base.model), "smollm2-135m-instruct/lora")
    >>> hora_ = hora.load_adapter(shared_copy(base.model), "smollm2-135m-instruct/hora")   # no second 135 M
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree that shares every parameter and buffer with it (no new weight memory)."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def shared_for_task(model: nn.Module, task_class: type, config: Any) -> nn.Module:
    """A ``task_class`` model for ``config`` (a sequence classifier, say, of the same architecture as ``model``, a
    causal LM) whose backbone (``base_model_prefix``: ``model`` for a Llama, ``transformer`` for GPT-2) is a
    ``shared_copy`` of ``model``'s; its own modules (the task's head) are new and uninitialised, for an adapter or a
    trained head to fill. ``ValueError`` when the two classes do not share such a backbone."""
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if prefix else None
    if not isinstance(backbone, nn.Module) or getattr(task_class, "base_model_prefix", None) != prefix:
        raise ValueError(f"A {task_class.__name__} cannot share the backbone of a {type(model).__name__}.")
    with torch.device("meta"):  # nothing allocated: the backbone is replaced, the head made below
        shaped = task_class(config)
    setattr(shaped, prefix, shared_copy(backbone))
    for name, module in shaped.named_children():
        if name != prefix:
            head = module.to_empty(device=next(backbone.parameters()).device)
            with torch.no_grad():
                for tensor in itertools.chain(head.parameters(), head.buffers()):
                    tensor.zero_()  # defined values until the adapter's (or the run's) own head is loaded
            setattr(shaped, name, head)
    return shaped.to(next(backbone.parameters()).dtype).eval()


def shared_bytes(models: list[nn.Module]) -> tuple[int, int]:
    """(bytes of the distinct tensors of ``models``, bytes if each held its own): what sharing saves."""
    seen: dict[int, int] = {}
    total = 0
    for model in models:
        for t in itertools.chain(model.parameters(), model.buffers()):
            size = t.numel() * t.element_size()
            seen[t.untyped_storage().data_ptr()] = size
            total += size
    return sum(seen.values()), total


__all__ = ["shared_bytes", "shared_copy", "shared_for_task"]
