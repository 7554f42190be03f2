"""The training loop: few-shot fine-tuning with any method of ``hora.methods``.

    >>> from hora.train import TrainConfig, train
    >>> result = train("vit-digits", "digits.zip", TrainConfig(method="hora", shots=8, steps=200), out_dir="runs/hora")
    >>> result.final
    {'accuracy': 0.91, 'loss': 0.31}

One loop serves every method and task (image classification, text classification, language modelling), cut in
three: ``_setup`` (base, task, split, method, optimiser), ``_step`` (one optimisation step with its guards) and
``_finish`` (final evaluation, the record, the run folder). It runs through ``accelerate.Accelerator``, so
``accelerate launch --num_processes N -m hora train ...`` is data-parallel with no code change; only the main
process writes. What the data becomes is ``hora.task``; the run folder is ``hora.runs``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import hora
from hora.config import TrainConfig
from hora.loaders import LoadedBase, load_base
from hora.methods import MethodInfo, apply_method
from hora.optim import (
    Snapshot,
    clip_gradients,
    compile_model,
    cosine_schedule,
    count_tokens,
    is_cancelled,
    make_accelerator,
    peak_memory,
    seed_everything,
    seeded_batches,
)
from hora.runs import load_run, save_run
from hora.task import (
    Split,
    Task,
    build_task,
    compute_loss,
    data_kind,
    evaluate,
    evaluate_examples,
    load_data_for,
    make_split,
)


logger = logging.getLogger(__name__)

StopReason = Literal["completed", "cancelled", "early_stopping", "non_finite"]


@dataclass
class StepEvent:
    """What one training step did, for progress bars and UIs; ``metrics`` is set on evaluation steps."""

    method: str
    step: int
    total_steps: int
    loss: float
    lr: float
    grad_norm: float
    step_time: float  # seconds
    elapsed: float  # seconds since training started
    device: str
    examples_per_s: float
    tokens_per_s: float | None
    metrics: dict[str, float] | None = None


@dataclass
class TrainResult:
    """A finished (or stopped) run: the trained model (eval mode), ``metrics.json``'s content, why it stopped."""

    model: nn.Module
    task: Task
    metrics: dict[str, Any]
    out_dir: Path | None
    stopped: StopReason
    message: str

    @property
    def final(self) -> dict[str, float]:
        return self.metrics["final"]

    @property
    def best(self) -> dict[str, Any]:
        return self.metrics["best"]

    @property
    def history(self) -> dict[str, list]:
        """``step``, ``loss``, ``lr``, ``grad_norm``, ``step_time`` per step; ``eval_step`` and ``eval_<metric>``."""
        return self.metrics["history"]


# ---------------------------------------------------------------------------------------------------------------
# The loop: setup, step, finish


@dataclass
class _Run:
    """Everything the steps of one run share."""

    config: TrainConfig
    accelerator: Any
    base: LoadedBase
    base_name: str  # as the caller named it: what the run's record and card say
    data_path: str | None  # the data's file or folder, when it was given as a path
    dataset: Any
    source: str
    task: Task
    split: Split
    model: nn.Module
    info: MethodInfo
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    batches: Iterator[list[int]]
    per_process: int
    snapshot: Snapshot
    step_model: nn.Module  # what the training step calls: ``model``, or ``model`` compiled (``config.compile``)
    history: dict[str, list] = field(
        default_factory=lambda: {k: [] for k in ("step", "loss", "lr", "grad_norm", "step_time", "eval_step")}
    )
    best: dict[str, Any] = field(default_factory=dict)
    best_weights: Snapshot | None = None  # with ``keep_best``: the trainable weights of the best evaluation
    evals_since_best: int = 0
    validate: Callable[[nn.Module], dict[str, float]] | None = None  # the caller's validation, instead of the split's
    examples: int = 0
    tokens: int = 0
    train_time: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def evaluate(self, step: int) -> dict[str, float]:
        """Evaluate on the held-out examples (or with the caller's ``validate``), record it and track the best."""
        if self.validate is not None:
            metrics = self._caller_validation()
        else:
            metrics = evaluate_examples(
                self.model,
                self.task,
                self.split.eval_source,
                self.split.eval,
                self.config.eval_batch_size,
                self.accelerator.autocast,
            )
        self.history["eval_step"].append(step)
        for key, value in metrics.items():
            self.history.setdefault(f"eval_{key}", []).append(value)
        value, previous = metrics[self.task.metric], self.best.get(self.task.metric)
        if previous is None or (value > previous if self.task.higher_is_better else value < previous):
            self.best.clear()
            self.best.update({"step": step, **metrics})
            self.evals_since_best = 0
            if self.config.keep_best:
                self.best_weights = self.best_weights or Snapshot(self.params)
                self.best_weights.save()
        else:
            self.evals_since_best += 1
        return metrics

    def _caller_validation(self) -> dict[str, float]:
        """The caller's validation of the model as it is now, in eval mode and without gradients."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self.accelerator.autocast():
                metrics = self.validate(model)
        finally:
            model.train(was_training)
        missing = [name for name in self.task.metric_names if name not in metrics]
        if missing:
            raise ValueError(f"`validate` must return the task's metrics {self.task.metric_names}; {missing} missing.")
        return {name: float(metrics[name]) for name in self.task.metric_names}


def lr_at(step: int, config: TrainConfig) -> float:
    """The engine's schedule: warm-up over ``warmup_ratio`` of the steps, then cosine to 0."""
    return cosine_schedule(step, config.steps, config.lr, int(config.warmup_ratio * config.steps))


def _setup(base: str | os.PathLike, data: Any, config: TrainConfig, data_source: str | None) -> _Run:
    """Load the data and the base, build the task and split, apply the method, make the optimiser."""
    source = data_source or (os.fspath(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__)
    dataset = load_data_for(data, config.task)
    kind = data_kind(dataset)
    if config.task not in ("auto", kind):
        raise ValueError(f"The data is a {kind!r} dataset but task={config.task!r} was asked for.")
    accelerator = make_accelerator(config.device, config.bf16)
    seed_everything(config.seed)  # before the model: the new classifier and the adapters draw from it
    classes = getattr(dataset, "classes", None)
    id2label = dict(enumerate(classes)) if classes else None
    loaded = load_base(base, task=kind, id2label=id2label, dtype=torch.float32)  # float32: AdamW on bf16 loses steps
    task = build_task(
        loaded,
        classes,
        max_length=config.max_length,
        context=config.context,
        eval_fraction=config.eval_fraction,
        image_size=config.image_size,
    )
    split = make_split(
        dataset,
        task,
        shots=config.shots,
        seed=config.seed,
        eval_per_class=config.eval_per_class,
        max_eval=config.max_eval,
    )
    model, info = apply_method(
        loaded.model,
        config.method,
        r=config.r,
        lora_alpha=config.lora_alpha,
        hyper_hidden=config.hyper_hidden,
        target_modules=config.target_modules,
        train_head=loaded.head_replaced,  # a new classifier trains, and is saved, with every method
        dropout=config.dropout,
        match_params=config.match_params,
        **config.method_args,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)  # the schedule is set by hand: not prepared
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    world = accelerator.num_processes
    per_process = max(1, min(config.batch_size, len(split.train) // world))
    batches = seeded_batches(len(split.train), per_process * world, config.seed)  # the same stream on every process
    return _Run(
        config=config,
        accelerator=accelerator,
        base=loaded,
        base_name=os.fspath(base),
        # the data's path lets `python -m hora eval` recognise the training data; a caller that names the data
        # itself (the app: an upload in a session folder) gets no path of this machine in the record
        data_path=os.fspath(Path(data).resolve())
        if isinstance(data, (str, os.PathLike)) and not data_source
        else None,
        dataset=dataset,
        source=source,
        task=task,
        split=split,
        model=model,
        info=info,
        params=params,
        optimizer=optimizer,
        batches=batches,
        per_process=per_process,
        snapshot=Snapshot(params),
        step_model=compile_model(model) if config.compile else model,
    )


def _step(run: _Run, step: int) -> tuple[StepEvent | None, str | None]:
    """One optimisation step; returns its event, or (None, why) when a non-finite loss or gradient stopped it.

    A non-finite loss goes back to the weights this step's predecessor started from (the last whose loss was
    finite); a non-finite gradient applies nothing. Either way the kept weights are finite.
    """
    config, accelerator, history = run.config, run.accelerator, run.history
    t0 = time.perf_counter()
    rank = accelerator.process_index
    chosen = next(run.batches)[rank * run.per_process : (rank + 1) * run.per_process]  # this process's share
    batch = run.task.encode(run.split.train_source, [run.split.train[i] for i in chosen])
    batch = {k: v.to(run.device) for k, v in batch.items()}
    loss, _ = compute_loss(run.task, run.step_model, batch)
    loss_value = float(accelerator.reduce(loss.detach(), "mean") if run.world > 1 else loss.detach())
    if not math.isfinite(loss_value):
        run.snapshot.restore()
        kept = "the initial weights" if step <= 2 else f"the weights after step {step - 2}"
        return None, (
            f"Stopped at step {step}: the training loss is {loss_value}. Kept the last weights whose loss was "
            f"finite ({kept}). Lower the learning rate (now {config.lr:g})."
        )
    run.snapshot.save()  # these weights gave a finite loss
    accelerator.backward(loss)
    grad_norm = clip_gradients(accelerator, run.params, config.grad_clip)
    if not math.isfinite(grad_norm):
        run.optimizer.zero_grad(set_to_none=True)  # nothing applied: the weights are still those of a finite loss
        return None, (
            f"Stopped at step {step}: the gradient norm is {grad_norm}. Kept the weights this step started "
            f"from. Lower the learning rate (now {config.lr:g})."
        )
    lr = lr_at(step - 1, config)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)  # so that step_time covers the GPU's work
    step_time = time.perf_counter() - t0
    step_examples, step_tokens = len(chosen) * run.world, count_tokens(batch) * run.world
    run.train_time += step_time
    run.examples += step_examples
    run.tokens += step_tokens
    for key, value in (("step", step), ("loss", loss_value), ("lr", lr), ("grad_norm", grad_norm)):
        history[key].append(value)
    history["step_time"].append(step_time)
    metrics = None
    if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
        metrics = run.evaluate(step)
    event = StepEvent(
        method=config.method,
        step=step,
        total_steps=config.steps,
        loss=loss_value,
        lr=lr,
        grad_norm=grad_norm,
        step_time=step_time,
        elapsed=time.perf_counter() - run.started,
        device=str(run.device),
        examples_per_s=step_examples / step_time,
        tokens_per_s=step_tokens / step_time if step_tokens else None,
        metrics=metrics,
    )
    return event, None


def _finish(run: _Run, stopped: StopReason, message: str, out_dir: str | os.PathLike | None) -> TrainResult:
    """Measure what is returned, write the record and (main process) the run folder."""
    history, accelerator = run.history, run.accelerator
    steps_done = len(history["step"])
    if history["eval_step"] and history["eval_step"][-1] == steps_done and stopped != "non_finite":
        final = {k: history[f"eval_{k}"][-1] for k in run.task.metric_names}
    else:  # stopped between evaluations, or went back to earlier weights: measure what is returned and saved
        final = run.evaluate(steps_done)
    kept_step = steps_done
    if run.best_weights is not None and run.best["step"] != steps_done:
        run.best_weights.restore()  # keep_best: end with the weights of the best held-out evaluation
        kept_step = run.best["step"]
        final = {k: run.best[k] for k in run.task.metric_names}
    model = accelerator.unwrap_model(run.model, keep_fp32_wrapper=False).eval()
    record = {
        **_describe(run, model),
        "final": final,
        "best": run.best,
        "history": history,
        "steps_done": steps_done,
        "kept_step": kept_step,  # the step whose weights are returned and saved (keep_best: the best one)
        "stopped": stopped,
        "message": message,
        "timing": {
            "train_seconds": run.train_time,
            "total_seconds": time.perf_counter() - run.started,
            "mean_step_seconds": run.train_time / steps_done if steps_done else None,
            "examples_per_s": run.examples / run.train_time if run.train_time else None,
            "tokens_per_s": run.tokens / run.train_time if run.train_time and run.tokens else None,
        },
        "device": {
            "type": run.device.type,
            "name": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else run.device.type,
            "num_processes": run.world,
            "mixed_precision": accelerator.mixed_precision,
            **peak_memory(run.device),
        },
    }
    saved = None
    if out_dir is not None:
        if accelerator.is_main_process:
            save_run(out_dir, model, run.info, run.task, record, run.base.path)
        accelerator.wait_for_everyone()
        saved = Path(out_dir).resolve()
    return TrainResult(model, run.task, record, saved, stopped, message)


def _describe(run: _Run, model: nn.Module) -> dict[str, Any]:
    """What ``metrics.json`` says about what was trained, on what, and how (the results come after)."""
    config, task, data = run.config, run.task, run.dataset
    return {
        "method": config.method,
        "task": task.kind,
        "base_model": run.base_name,
        "data": {
            "source": run.source,
            "path": run.data_path,
            "task": task.kind,
            "num_examples": len(data.texts if task.kind == "lm" else data.labels),
            "classes": getattr(data, "classes", None),
        },
        "seed": config.seed,
        "shots": config.shots,
        "split": run.split.record,
        "validation": "the caller's validation set" if run.validate else "the split's held-out examples",
        "id2label": task.to_dict()["id2label"],
        "preprocessing": task.to_dict(),
        "config": asdict(config),
        "method_info": run.info.to_dict(),
        "param_report": {k: list(v) for k, v in hora.param_report(model).rows.items()},
        "metric": task.metric,
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import peft
    import transformers

    versions = {"hora": hora.__version__, "torch": torch.__version__}
    return versions | {"transformers": transformers.__version__, "peft": peft.__version__}


def train(
    base: str | os.PathLike,
    data: Any,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    data_source: str | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Fine-tune the base model in ``base`` on ``data`` with ``config.method``.

    Args:
        base: a base model folder, an embedded asset name or a Hub repo id (``hora.load_base``).
        data: a path for ``hora.data.load_data``, or an already loaded dataset.
        config: the run's settings; keyword ``overrides`` replace single fields (``steps=50``).
        out_dir: where to write the adapter, ``metrics.json`` and ``README.md``, atomically (main process only).
        callback: called after every step with a ``StepEvent`` (main process only).
        cancel: a ``threading.Event`` or a callable; once set, training stops before the next step and
            returns (and saves) what was trained so far.
        data_source: how to name ``data`` in the outputs when it is not a path.
        validate: the caller's own validation, ``model -> {metric: value}`` with the task's metrics (``loss`` and
            ``perplexity`` for language modelling), used for every evaluation (``eval_every``, ``keep_best``,
            ``patience``) instead of the split's held-out examples; called in eval mode without gradients. For a
            validation set that must be chosen with care (whole unseen scenes, replies only), not carved at random.

    For image and text classification the classifier is built for the data's classes and trained with
    every method. A non-finite loss or gradient stops training with a message and keeps the last weights
    whose loss was finite. With the same seed, runs on the CPU are bit-for-bit identical.
    """
    config = replace(config or TrainConfig(), **overrides)
    run = _setup(base, data, config, data_source)
    run.validate = validate
    stopped: StopReason = "completed"
    message = f"Trained {config.steps} steps."
    run.model.train()
    for step in range(1, config.steps + 1):
        stop = is_cancelled(cancel)
        if run.world > 1:  # every process must stop at the same step
            stop = bool(run.accelerator.reduce(torch.tensor(float(stop), device=run.device), "max"))
        if stop:
            stopped, message = "cancelled", f"Cancelled after {step - 1} of {config.steps} steps."
            break
        event, failure = _step(run, step)
        if event is None:
            stopped, message = "non_finite", failure
            break
        if callback is not None and run.accelerator.is_main_process:
            callback(event)
        patience = config.patience
        if patience and event.metrics is not None and run.evals_since_best >= patience and step < config.steps:
            stopped = "early_stopping"
            message = f"Stopped early at step {step}: no better held-out {run.task.metric} in {patience} evaluations."
            break
    if stopped != "completed":
        logger.warning(message)
    return _finish(run, stopped, message, out_dir)


# Compatible aliases: the loader of a run folder and evaluation moved to hora.runs and hora.task.
load_trained = load_run

__all__ = ["StepEvent", "TrainConfig", "TrainResult", "evaluate", "load_trained", "lr_at", "train"]
