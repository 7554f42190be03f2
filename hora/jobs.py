"""Several training runs in a row, streamed step by step: what an interactive front end (the explorer's Fine-tune
tab, a notebook) needs around ``hora.train.train``.

    >>> for update in train_in_turn("vit-digits", data, [TrainConfig(method="lora"), TrainConfig(method="hora")],
    ...                             out_root="runs", cancel=stop_event, budget_seconds=300):
    ...     print(update.method, update.event.step if update.event else update.result.final)

Each run trains in a worker thread and reports every step through a queue, so the caller's loop stays free to
draw, and to stop: setting ``cancel`` (or running out of ``budget_seconds``) ends the current run between two
steps, keeps what it trained, and starts no further run. Every update says which run it belongs to.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hora.config import TrainConfig
from hora.train import StepEvent, TrainResult, train


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
) -> Iterator[JobUpdate]:
    """Train ``configs`` one after the other on ``data``; yield every step, then each run's result or error.

    Run ``i`` writes to ``out_root/adapter-<method>``. A failing run yields its error and the job goes on with
    the next one (its exception is the caller's to report). ``cancel`` is set when the budget runs out and when
    the job ends, so that no worker outlives it.
    """
    started = time.monotonic()
    try:
        for index, config in enumerate(configs):
            if cancel.is_set():
                return
            yield from _one_run(
                index, base, data, config, Path(out_root), cancel, started, budget_seconds, data_source, poll_seconds
            )
    finally:
        cancel.set()  # also reached when the caller stops iterating: the worker stops between two steps


def _one_run(
    index: int,
    base: str | os.PathLike,
    data: Any,
    config: TrainConfig,
    out_root: Path,
    cancel: threading.Event,
    started: float,
    budget_seconds: float | None,
    data_source: str | None,
    poll_seconds: float,
) -> Iterator[JobUpdate]:
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
        yield JobUpdate(index, config.method, error=outcome["error"])
    else:
        yield JobUpdate(index, config.method, result=outcome["result"])


__all__ = ["JobUpdate", "train_in_turn"]
