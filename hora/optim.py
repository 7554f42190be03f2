"""Optimisation pieces of the training engine, shared with the asset builder's pretraining: the warm-up + cosine
schedule, gradient clipping, the accelerator, a snapshot of the last finite weights, seeded batches, and what a
step measures (tokens, peak memory)."""

from __future__ import annotations

import math
import os
import random
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


def cosine_schedule(step: int, total: int, peak: float, warmup: int, floor: float = 0.0) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up over ``warmup`` steps, then cosine from ``peak`` down to
    ``floor · peak`` at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def clip_gradients(accelerator: Any, params: list[nn.Parameter], max_norm: float | None) -> float:
    """Clip the gradients to ``max_norm`` (if given); returns their total norm before clipping.

    ``accelerator`` may be None outside the engine (plain torch clipping).
    """
    if max_norm is not None:
        if accelerator is None:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        return float(accelerator.clip_grad_norm_(params, max_norm))
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def make_accelerator(device: str = "auto", bf16: bool | None = None):
    """An Accelerator: CUDA, then Apple MPS, then CPU (``device="cpu"``: the CPU); bf16 autocast on CUDA unless
    ``bf16`` is False."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # by accelerate launch or torchrun
    # Accelerate goes data-parallel on CPUs (gloo) only when told to use the CPU.
    cpu = device == "cpu" or (launched and not torch.cuda.is_available())
    cuda = torch.cuda.is_available() and not cpu
    bf16 = bf16 if bf16 is not None else cuda and torch.cuda.is_bf16_supported()
    kwargs = {
        "cpu": cpu,
        "mixed_precision": "bf16" if bf16 else "no",
        # some parameters get no gradient under some methods (ViT's pooler under `full`); DDP must know
        "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True)],
    }
    try:
        return Accelerator(**kwargs)
    except ValueError:
        # Accelerate's state is a per-process singleton. A process that trains several times (the app, the
        # benchmarks) may ask for other settings than its first run; outside a distributed launch, start over.
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


COMPILE_BACKEND = "inductor"  # torch.compile's backend for `compile_model`; tests use "aot_eager" (no C++ compiler)


def compile_model(model: nn.Module) -> nn.Module:
    """``model`` with its forward (and, through AOTAutograd, its backward) compiled by ``torch.compile``.

    The result shares the parameters: the optimiser, saving and evaluation keep using ``model`` itself, and only the
    training step calls the compiled one. HoRA's and DoRAN's training forward compiles whole, with no graph break
    (their factors come from one batched generation pass, ``hora.tuners.hora.factor_pass``).
    """
    return torch.compile(model, backend=COMPILE_BACKEND)


class Snapshot:
    """A copy of the trainable weights, to go back to the last weights whose loss was finite."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.copies = [p.detach().clone() for p in params]

    @torch.no_grad()
    def save(self) -> None:
        for copy, p in zip(self.copies, self.params):
            copy.copy_(p)

    @torch.no_grad()
    def restore(self) -> None:
        for copy, p in zip(self.copies, self.params):
            p.copy_(copy)


def seeded_batches(n: int, size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of ``size`` indices into 0..n-1: epochs reshuffled by a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    pending: list[int] = []
    while True:
        while len(pending) < size:
            pending.extend(torch.randperm(n, generator=generator).tolist())
        yield pending[:size]
        pending = pending[size:]


def is_cancelled(cancel: threading.Event | Callable[[], bool] | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if hasattr(cancel, "is_set") else bool(cancel())


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens in a batch: unpadded ones for text, all of them for LM chunks, none for images."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel() if "input_ids" in batch else 0


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory: CUDA's allocator peak, else the process's peak resident set (CPU, MPS)."""
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_allocated"}
    try:
        import resource
    except ImportError:  # Windows
        return {"peak_memory_bytes": None, "peak_memory_kind": "unavailable"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return {"peak_memory_bytes": rss * scale, "peak_memory_kind": "process_rss_peak"}


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all devices


__all__ = [
    "Snapshot",
    "clip_gradients",
    "cosine_schedule",
    "count_tokens",
    "is_cancelled",
    "make_accelerator",
    "peak_memory",
    "seed_everything",
    "seeded_batches",
]
