"""Several adapters of one base served side by side, two ways, measured in one run (``python -m hora bench variants``):

- **shared**: one module tree per adapter over the base's shared weights (``hora.variants.shared_copy``); the
  variants are independent models, so requests for different adapters may run at the same time;
- **swapped**: one ``PeftModel`` holding every adapter, ``set_adapter`` before each request, under a lock (two
  requests for different adapters cannot run at once on one model).

Both hold the base's weights once. Reported: the resident memory each way adds, and the median latency of a round
(every adapter answers the same input, in turn, warm-up discarded), with its ratio.
"""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch


def _rss() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def _inputs(loaded: Any, tokens: int) -> dict[str, torch.Tensor]:
    if loaded.kind == "image":
        size = getattr(loaded.processor, "size", {}) or {}
        side = int(size.get("height") or size.get("shortest_edge") or 224) if isinstance(size, dict) else 224
        return {"pixel_values": torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))}
    return {
        "input_ids": torch.randint(
            0, loaded.model.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0)
        )
    }


@torch.no_grad()
def compare_sharing(
    base: str, adapters: Sequence[str], *, rounds: int = 10, warmup: int = 2, tokens: int = 64
) -> dict:
    """Memory and latency of serving ``adapters`` (names loadable by ``hora.load_adapter``) shared or swapped."""
    import hora
    from hora.variants import shared_copy

    gc.collect()
    before = _rss()
    loaded = hora.load_base(base, dtype=torch.float32)
    after_base = _rss()
    shared = [hora.load_adapter(shared_copy(loaded.model), a).eval() for a in adapters]
    after_shared = _rss()
    swapped = hora.load_adapter(shared_copy(loaded.model), adapters[0], adapter_name="a0").eval()
    for i, adapter in enumerate(adapters[1:], start=1):
        hora.load_adapter(swapped, adapter, adapter_name=f"a{i}")
    after_swapped = _rss()
    lock = threading.Lock()
    x = _inputs(loaded, tokens)

    def shared_round() -> None:
        for model in shared:
            model(**x)

    def swapped_round() -> None:
        for i in range(len(adapters)):
            with lock:
                swapped.set_adapter(f"a{i}")
                swapped(**x)

    times: dict[str, list[float]] = {"shared": [], "swapped": []}
    for round_ in range(warmup + rounds):
        for name, fn in (("shared", shared_round), ("swapped", swapped_round)):  # alternate: drifts hit both
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "base": base,
        "adapters": list(adapters),
        "input": {k: list(v.shape) for k, v in x.items()},
        "rss_mib": {
            "base": round((after_base - before) / 2**20, 1),
            "shared_variants": round((after_shared - after_base) / 2**20, 1),
            "swapped_model": round((after_swapped - after_shared) / 2**20, 1),
        },
        "round_seconds": medians,
        "swapped_over_shared": medians["swapped"] / medians["shared"],
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
    }


__all__ = ["compare_sharing"]
