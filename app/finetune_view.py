"""What one Start of the Fine-tune tab accumulates while it streams, and how it is shown: the curves, the results
table and the status lines.

The curves keep the training loss and the held-out metric apart (for a language model both are losses), and once a
run has ended they are its own record (``TrainResult.history``): the held-out curve then ends at the value in the
table, and where the run kept the weights of an earlier evaluation (``keep_best``), that point is marked.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from app import figures
from app.store import SessionModels
from hora.data import DataError
from hora.methods import label


COLUMNS = ["method", "rank r", "trainable params", "steps", "held-out score", "seconds", "how it ended"]
ENDINGS = {
    "completed": "finished",
    "cancelled": "stopped by you",
    "early_stopping": "stopped early (no better held-out score)",
    "non_finite": "stopped: the loss became NaN or infinite",
}


@dataclass
class Job:
    """What one Start accumulates while it streams."""

    methods: list[str]
    steps: int
    kind: str  # of the data: "image", "text" or "lm"
    chance: float | None  # accuracy of a guess, for classification
    folder: Path
    budget: float
    started: float = field(default_factory=time.monotonic)
    names: dict = field(default_factory=dict)  # method -> what the curves' legend calls it ("LoRA r=8")
    histories: dict = field(default_factory=dict)  # name -> {"step", "loss", "eval_step", "held_out", "kept"}
    files: list = field(default_factory=list)
    failures: dict = field(default_factory=dict)  # method -> why it failed (one sentence)
    held_out_size: str = ""  # "16 × 128 tokens" or "8 items", from the first run's split

    @property
    def metric(self) -> str:
        return "loss" if self.kind == "lm" else "accuracy"


def metric_header(job: Job) -> str:
    """The held-out column's header: the metric, its unit and what it was measured on."""
    size = f", {job.held_out_size}" if job.held_out_size else ""
    if job.kind == "lm":
        return f"held-out loss (nats/token{size}, lower is better)"
    chance = f"chance {job.chance:.2f}" if job.chance else ""
    inside = ", ".join(p for p in (chance, job.held_out_size) if p)
    return f"held-out accuracy ({inside})" if inside else "held-out accuracy"


def _held_out_count(result) -> int | None:
    """How many held-out examples a classification run was scored on (its split's record)."""
    held_out = (result.metrics.get("split") or {}).get("eval")
    return len(held_out) if isinstance(held_out, list) else None


def _held_out_size(result, kind: str) -> str:
    split = result.metrics.get("split") or {}
    if kind == "lm":
        chunks, context = split.get("eval_chunks"), split.get("context")
        return f"{chunks} × {context} tokens" if chunks and context else ""
    n = _held_out_count(result)
    return f"{n} items" if n else ""


def score(result, metric: str) -> object:
    """The table's held-out score: an accuracy as right/total with its fraction ("7/8 (0.88)"), a loss as it is."""
    value = result.final.get(metric)
    if value is None:
        return None
    n = _held_out_count(result) if metric == "accuracy" else None
    if n:
        return f"{round(value * n)}/{n} ({value:.2f})"
    return round(value, 4)


def table(session: SessionModels, job: Job):
    """The results table: one row per run that ended, in the order they ended."""
    import pandas as pd

    columns = [metric_header(job) if c == "held-out score" else c for c in COLUMNS]
    rows = []
    for method, result in session.runs.items():
        info = result.metrics["method_info"]
        rank = (info.get("peft_config") or {}).get("r")
        ending = ENDINGS.get(result.stopped, result.stopped)
        if result.stopped == "cancelled" and time.monotonic() - job.started >= job.budget:
            ending = "stopped at the time limit"
        done, kept = result.metrics["steps_done"], result.metrics.get("kept_step")
        steps = f"{done} (kept step {kept}: best held-out)" if kept is not None and kept != done else done
        seconds = round(result.metrics["timing"]["total_seconds"], 1)
        rows.append([label(method), rank or "—", info["trainable_params"], steps, score(result, job.metric), seconds])
        rows[-1].append(ending)
    return pd.DataFrame(rows, columns=columns)


def curves(job: Job):
    """Training loss and held-out metric of every method so far."""
    methods = {job.names.get(m, label(m)): m for m in job.methods}
    return figures.training_curves(job.histories, job.metric, methods, metric_header(job), job.chance)


def _record_result(job: Job, name: str, result) -> None:
    """A run's curves from its own record: the held-out curve then ends at the table's value (the kept step's)."""
    history = result.metrics["history"]
    shown = job.histories.setdefault(name, {})
    shown.update(
        step=list(history["step"]),
        loss=list(history["loss"]),
        eval_step=list(history["eval_step"]),
        held_out=list(history.get(f"eval_{job.metric}", [])),
    )
    kept, final = result.metrics.get("kept_step"), result.final.get(job.metric)
    if kept is not None and final is not None and shown["eval_step"][-1:] != [kept]:
        shown["kept"] = (kept, final)  # keep_best went back to an earlier evaluation's weights
    job.held_out_size = job.held_out_size or _held_out_size(result, job.kind)


def apply(update, session: SessionModels, job: Job, cancel, progress) -> str:
    """Record one update of the job (a step, a finished run, or a failure); returns the status line."""
    name = job.names.get(update.method, label(update.method))
    if update.error is not None:
        if isinstance(update.error, DataError):  # the data, not the method: no other method can use it either
            cancel.set()
            job.failures[update.method] = f"the data cannot be used: {update.error}"
        else:
            job.failures[update.method] = str(update.error)
        return failures(job)
    if update.result is not None:
        session.runs[update.method] = update.result
        _record_result(job, name, update.result)
        archive = shutil.make_archive(str(job.folder / update.result.out_dir.name), "zip", update.result.out_dir)
        job.files.append(archive)
        return update.result.message
    event = update.event
    history = job.histories.setdefault(name, {"step": [], "loss": [], "eval_step": [], "held_out": []})
    history["step"].append(event.step)
    history["loss"].append(event.loss)
    if event.metrics is not None:  # kept apart from the training loss: for a language model both are "loss"
        history["eval_step"].append(event.step)
        history["held_out"].append(event.metrics[job.metric])
    done = (update.index + update.progress) / len(job.methods)
    progress(done, desc=f"{name} step {event.step}/{event.total_steps}")
    stopping = "Stopping after the current step… " if cancel.is_set() else ""
    return (
        f"{stopping}**{name}** step {event.step}/{event.total_steps} · loss {event.loss:.4f} nats · "
        f"{event.step_time * 1000:.0f} ms/step on {event.device} · overall {100 * done:.0f}%"
    )


def failures(job: Job) -> str:
    """Every failure once: methods that failed for the same reason share one sentence ("LoRA and HoRA failed: …")."""
    reasons: dict[str, list[str]] = {}
    for method, reason in job.failures.items():
        reasons.setdefault(reason, []).append(label(method))
    sentences = []
    for reason, names in reasons.items():
        who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        sentences.append(f"{who} failed: {reason.rstrip('.')}.")
    return " ".join(sentences)


def summary(session: SessionModels, job: Job) -> str:
    """The last status: how each method's run ended, in order, and every failure once."""
    lines, stopped = [], False
    for method in job.methods:
        result, name = session.runs.get(method), label(method)
        if method in job.failures:
            continue
        if result is None:
            lines.append(f"{name}: not started.")
            stopped = True
        elif result.stopped == "completed":
            lines.append(f"{name}: all {job.steps} steps.")
        else:
            stopped |= result.stopped == "cancelled"
            ending = ENDINGS.get(result.stopped, result.stopped)
            lines.append(f"{name}: {ending} after {result.metrics['steps_done']} of {job.steps} steps.")
    if job.failures:
        lines.append(failures(job))
    head = "Stopped: the table and the downloads keep what was trained." if stopped else "Done."
    if not session.runs and job.failures:
        head = "Nothing was trained."
    if session.runs:
        head += " Use the adapters in Compare and Heads with the button below, or download them."
    return head + "\n\n" + " ".join(lines)
