"""Several training runs in a row, streamed step by step: what an interactive front end (the explorer's Fine-tune
tab, a notebook) needs around ``hora.train.train``.

    >>> for update in train_in_turn("vit-digits", data, [TrainConfig(method="lora"), TrainConfig(method="hora")],
    ...                             out_root="runs", cancel=stop_event, budget_seconds=300):
    ...     print(update.method, update.event.step if update.event else update.result.final)

Each run trains in a worker thread and reports every step through a queue, so the caller's loop stays free to
draw, and to stop: setting ``cancel`` (or running out of ``budget_seconds``) ends the current run between two
steps, keeps what it trained, and starts no further run. Every update says which run it belongs to.

A server that keeps what its visitors trained passes ``serve_on``, the base model it already serves: each run's
result then holds its adapter on a ``hora.variants.shared_copy`` of that model (adapter-sized memory) instead of the
training copy of the base, which is freed before the result is yielded (``adapter_only``).
"""

from __future__ import annotations

import copy
import ctypes
import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hora.config import TrainConfig
from hora.train import StepEvent, TrainResult, train


logger = logging.getLogger(__name__)


@dataclass
class JobUpdate:
    """One thing that happened: a step of run ``index`` (``event``), its end (``result``) or its failure (``error``)."""

    index: int
    method: str
    event: StepEvent | None = None
    result: TrainResult | None = None
    error: Exception | None = None

    @property
    def progress(self) -> float:
        """Share of the whole job done, 0 to 1, assuming every run takes as long."""
        return 0.0 if self.event is None else self.event.step / self.event.total_steps


def train_in_turn(
    base: str | os.PathLike,
    data: Any,
    configs: Sequence[TrainConfig],
    *,
    out_root: str | os.PathLike,
    cancel: threading.Event,
    budget_seconds: float | None = None,
    data_source: str | None = None,
    poll_seconds: float = 0.25,
    serve_on: nn.Module | None = None,
) -> Iterator[JobUpdate]:
    """Train ``configs`` one after the other on ``data``; yield every step, then each run's result or error.

    Run ``i`` writes to ``out_root/adapter-<method>``. A failing run yields its error and the job goes on with
    the next one (its exception is the caller's to report). ``cancel`` is set when the budget runs out and when
    the job ends, so that no worker outlives it. ``serve_on``: the base model the caller serves, which each
    result's model is moved onto (``adapter_only``) before it is yielded.
    """
    started = time.monotonic()
    timing = (started, budget_seconds, poll_seconds)
    try:
        for index, config in enumerate(configs):
            if cancel.is_set():
                return
            yield from _one_run(index, base, data, config, Path(out_root), cancel, timing, data_source, serve_on)
    finally:
        cancel.set()  # also reached when the caller stops iterating: the worker stops between two steps


def _one_run(
    index: int,
    base: str | os.PathLike,
    data: Any,
    config: TrainConfig,
    out_root: Path,
    cancel: threading.Event,
    timing: tuple[float, float | None, float],
    data_source: str | None,
    serve_on: nn.Module | None,
) -> Iterator[JobUpdate]:
    started, budget_seconds, poll_seconds = timing
    events: queue.Queue[StepEvent] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = train(
                base,
                data,
                config,
                out_dir=out_root / f"adapter-{config.method}",
                callback=events.put,
                cancel=cancel,
                data_source=data_source,
            )
        except Exception as error:  # reported to this job's caller; nothing else is affected
            outcome["error"] = error

    worker = threading.Thread(target=work, daemon=True, name=f"train-{config.method}")
    worker.start()
    while worker.is_alive() or not events.empty():
        if budget_seconds is not None and time.monotonic() - started > budget_seconds:
            cancel.set()  # the time limit: stop cleanly, keep what was trained
        try:
            event = events.get(timeout=poll_seconds)
        except queue.Empty:
            continue
        yield JobUpdate(index, config.method, event=event)
    worker.join()
    if "error" in outcome:
        yield JobUpdate(index, config.method, error=outcome.pop("error"))
        return
    result = outcome.pop("result")
    if serve_on is not None:
        adapter_only(result, serve_on)
    yield JobUpdate(index, config.method, result=result)


def adapter_only(result: TrainResult, served: nn.Module) -> bool:
    """Replace ``result.model`` (the training copy: a whole float32 base with its adapter) by the saved adapter
    loaded onto a ``shared_copy`` of ``served``, the same base as the caller already holds it, and free the
    training copy (``release_memory``). A text classifier trained on a language model gets the served model's
    backbone (``shared_for_task``) under a head of its own. Returns whether it did: a run that saved nothing, a
    ``full`` fine-tune (its weights are its own) or a model that cannot share ``served``'s keep their own model.
    """
    from hora.loaders import load_adapter
    from hora.variants import shared_copy, shared_for_task

    if result.out_dir is None or result.metrics.get("method") == "full":
        return False
    try:
        base = shared_copy(served)
        if result.task.kind == "text":  # another model class than the served causal LM, over the same backbone
            trained = result.model.get_base_model() if hasattr(result.model, "get_base_model") else result.model
            base = shared_for_task(served, type(trained), copy.deepcopy(trained.config))
        light = load_adapter(base, result.out_dir, trusted=True).eval()
    except (ValueError, OSError) as error:  # the served model is not the base this run trained (a caller's mistake)
        logger.warning("kept the training copy of %s: %s", result.out_dir, error)
        return False
    result.model = light
    release_memory()
    return True


def release_memory() -> None:
    """Collect garbage now and give freed heap memory back to the system (glibc's ``malloc_trim``), so that the
    process's resident memory falls when a large model is dropped instead of staying at its peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps its own counsel
        pass


__all__ = ["JobUpdate", "adapter_only", "release_memory", "train_in_turn"]
