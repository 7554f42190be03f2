"""Fine-tune tab: short few-shot runs of several methods on uploaded data, streamed live.

Training is ``hora.jobs.train_in_turn`` (``hora.train.train`` in a worker thread, one method after the other),
so this handler can be a generator (Gradio can only cancel generators) that streams curves. The Stop button
cancels the generator and sets the job's cancel flag, so the run ends between two steps and keeps what it trained.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr

from app import figures
from app.compare import CompareTab
from app.context import Context, choices
from app.heads import HeadsTab, options
from app.settings import LIMITS, clamp
from app.store import ModelStore, SessionModels, Variant, base_names, get_base, variants_of
from hora.config import TrainConfig
from hora.data import DataError, detect_task, load_data
from hora.jobs import train_in_turn
from hora.methods import METHODS, label
from hora.task import data_kind


METHOD_CHOICES = [name for name in METHODS if name != "full"]  # full fine-tuning is no few-shot demo

try:  # on a ZeroGPU Space, training runs under spaces.GPU; elsewhere this decorator is not installed
    import spaces

    gpu = spaces.GPU(duration=LIMITS.max_train_seconds + 60)
except ImportError:  # noqa: SIM105 - plain local / Docker runs

    def gpu(fn):
        return fn


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "Apple GPU (MPS)"
    return f"CPU ({os.cpu_count()} cores)"


def sample_tasks(samples: dict[str, str]) -> dict[str, str]:
    """The task of each bundled sample (``image``, ``text`` or ``lm``), read once when the app is built."""
    return {name: detect_task(path) for name, path in samples.items()}


def sample_choices(
    store: ModelStore, tasks: dict[str, str], session: SessionModels | None, base_name: str | None
) -> dict:
    """The bundled samples a base can train on: image data for an image model, text for a language model."""
    kind = get_base(store, session, base_name).kind if base_name else None
    names = [n for n, task in tasks.items() if kind is None or (task == "image") == (kind == "image")]
    return gr.update(choices=names, value=None)


def _data_path(upload: str | None, sample: str | None, samples: dict[str, str]) -> str:
    if upload:
        return upload
    if sample:
        if sample not in samples:
            raise gr.Error(f"No bundled sample {sample!r}; the samples are: {', '.join(samples) or 'none'}.")
        return samples[sample]
    raise gr.Error("Upload a dataset (image zip, CSV, JSONL or TXT) or pick a bundled sample.")


def _rows(session: SessionModels) -> list[list]:
    rows = []
    for method, result in session.runs.items():
        metric = result.metrics["metric"]
        final = result.final.get(metric)
        rows.append(
            [
                label(method),
                result.metrics["method_info"]["trainable_params"],
                result.metrics["steps_done"],
                None if final is None else round(final, 4),
                round(result.metrics["timing"]["total_seconds"], 1),
                result.stopped,
            ]
        )
    return rows


def _zip(out_dir: Path, where: Path) -> str:
    return shutil.make_archive(str(where / out_dir.name), "zip", root_dir=out_dir)


def _configs(methods: list[str], kind: str, rank: float, steps: int, lr: float, shots: float, seed: float) -> list:
    """One engine config per method, from the tab's controls (clamped to the app's limits)."""
    return [
        TrainConfig(
            method=method,
            r=int(clamp(rank, 1, 64)),
            steps=steps,
            lr=clamp(lr, 1e-6, 1.0),
            shots=int(clamp(shots, 1, 1000)) if kind != "lm" else None,
            seed=int(seed or 0),
            eval_every=max(1, steps // 10),
            batch_size=16,
        )
        for method in methods
    ]


def _checked_data(base_name: str, base_kind: str, path: str):
    try:
        dataset = load_data(path)
    except DataError as err:  # the engine's refusals, shown as they are
        raise gr.Error(str(err)) from err
    kind = data_kind(dataset)
    if (kind == "image") != (base_kind == "image"):
        what = "n image" if base_kind == "image" else " language"
        raise gr.Error(f"This is {kind} data but {base_name} is a{what} model.")
    return dataset, kind


def _apply(
    update, session: SessionModels, histories: dict, metric: str, files: list, folder: Path, total: int, progress
):
    """Record one update of the job (a step, a finished run, or a failure); returns (status, files)."""
    name = label(update.method)
    if update.error is not None:
        raise gr.Error(f"{name} failed: {update.error}")
    history = histories.setdefault(name, {"step": [], "loss": [], "eval_step": [], metric: []})
    if update.result is not None:
        session.runs[update.method] = update.result
        return update.result.message, files + [_zip(update.result.out_dir, folder)]
    event = update.event
    history["step"].append(event.step)
    history["loss"].append(event.loss)
    if event.metrics is not None:
        history["eval_step"].append(event.step)
        history[metric].append(event.metrics[metric])
    done = (update.index + update.progress) / total
    progress(done, desc=f"{name} step {event.step}/{event.total_steps}")
    status = (
        f"**{name}** step {event.step}/{event.total_steps} · loss {event.loss:.4f} · "
        f"{event.step_time * 1000:.0f} ms/step on {event.device} · overall {100 * done:.0f}%"
    )
    return status, files


@gpu
def run(
    store: ModelStore,
    samples: dict[str, str],
    session: SessionModels,
    base_name: str,
    upload: str | None,
    sample: str | None,
    methods: list[str],
    rank: float,
    steps: float,
    lr: float,
    shots: float,
    seed: float,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio injects the progress tracker
) -> Iterator[tuple]:
    """Train each chosen method in turn; yields (status, curves, table, files, session) as it goes."""
    if not base_name:
        raise gr.Error("Pick a base model.")
    methods = [m for m in (methods or []) if m in METHOD_CHOICES]
    if not methods:
        raise gr.Error("Tick at least one method.")
    base = get_base(store, session, base_name)
    if base.location is None:
        raise gr.Error(f"{base_name} was not loaded from a folder, so it cannot be fine-tuned here.")
    left = LIMITS.max_session_train_seconds - session.train_seconds
    if left <= 0:
        raise gr.Error("This session has used its fine-tuning time. Reload the page for a new session.")
    steps = int(clamp(steps, 1, LIMITS.max_train_steps))
    dataset, kind = _checked_data(base_name, base.kind, _data_path(upload, sample, samples))

    session.runs, session.run_base = {}, base_name
    histories: dict[str, dict[str, list]] = {}
    metric = "loss" if kind == "lm" else "accuracy"
    cancel = session.cancel = threading.Event()
    folder = session.folder()
    files: list[str] = []
    started = time.monotonic()
    job = train_in_turn(
        base.location,
        dataset,
        _configs(methods, kind, rank, steps, lr, shots, seed),
        out_root=folder,
        cancel=cancel,
        budget_seconds=min(LIMITS.max_train_seconds, left),
        data_source=Path(upload).name if upload else sample,
    )
    try:
        for update in job:
            status, files = _apply(update, session, histories, metric, files, folder, len(methods), progress)
            yield status, figures.training_curves(histories, metric), _rows(session), files, session
    finally:
        job.close()  # also reached when Gradio cancels this generator (Stop): the worker stops between steps
        session.train_seconds += time.monotonic() - started
    complete = len(session.runs) == len(methods) and all(r.stopped != "cancelled" for r in session.runs.values())
    summary = "Done." if complete else "Stopped: the table shows what was trained."
    yield (
        f"{summary} Use the adapters in Compare and Heads with the button below, or download them.",
        figures.training_curves(histories, metric),
        _rows(session),
        files,
        session,
    )


def stop(session: SessionModels) -> str:
    """Stop the running fine-tune of this session (the run keeps what it trained)."""
    if session.cancel is not None:
        session.cancel.set()
    return "Stopping after the current step…"


def use_adapters(store: ModelStore, session: SessionModels):
    """Make this session's trained models selectable in Compare and Heads (for this session only)."""
    if not session.runs:
        raise gr.Error("Fine-tune something first.")
    base_name = session.run_base
    for method, result in session.runs.items():
        name = f"{label(method)} (yours)"
        session.add(base_name, Variant(name, method, result.model.eval(), "fine-tuned in this session"))
    names = list(variants_of(store, session, base_name))
    kind = get_base(store, session, base_name).kind
    vision = gr.update(choices=names, value=names) if kind == "image" else gr.update()
    lm = gr.update(choices=names, value=names) if kind == "lm" else gr.update()
    adapters, _, _ = options(store, session, base_name)
    message = f"Added {', '.join(session.runs)} to {base_name}: pick them in Compare and Heads."
    return message, session, vision, lm, gr.update(choices=base_names(store, session), value=base_name), adapters


def push_adapters(session: SessionModels, repo_id: str, token: str | None) -> str:
    """Push this session's trained adapters to ``repo_id`` (one repo per method: ``repo_id-<method>``).

    The token comes from the password box or ``HF_TOKEN``; it is used for this call only, never stored.
    """
    from hora.push import PushError, push

    if not session.runs:
        raise gr.Error("Fine-tune something first.")
    repo_id = (repo_id or "").strip()
    pushed = []
    for method, result in session.runs.items():
        target = repo_id if len(session.runs) == 1 else f"{repo_id}-{method}"
        try:
            pushed.append(push(result.out_dir, target, token=token or None))
        except PushError as err:
            raise gr.Error(str(err)) from err
    return "Pushed: " + ", ".join(pushed)


# ---------------------------------------------------------------------------------------------------------------
# The tab


@dataclass
class _Controls:
    base: gr.Dropdown
    upload: gr.File
    sample: gr.Dropdown
    methods: gr.CheckboxGroup
    rank: gr.Slider
    steps: gr.Slider
    lr: gr.Number
    shots: gr.Slider
    seed: gr.Number
    start: gr.Button
    stop: gr.Button


def _controls(ctx: Context) -> _Controls:
    bases = ctx.store.names()
    first = bases[0] if bases else None
    with gr.Column(scale=1):
        base = gr.Dropdown(bases, value=first, label="Base model")
        upload = gr.File(
            label="Data: image zip (class folders), CSV / JSONL (text,label) or TXT",
            file_types=[".zip", ".csv", ".jsonl", ".txt"],
            type="filepath",
        )
        sample = gr.Dropdown(  # choices follow the base; the handler checks the name, so the API
            label="…or a bundled sample",  # may name any bundled sample whatever the base shown
            allow_custom_value=True,
            **choices(sample_choices(ctx.store, ctx.sample_tasks, None, first)),
        )
        methods = gr.CheckboxGroup(
            [(label(m), m) for m in METHOD_CHOICES], value=["lora", "hora"], label="Methods", elem_id="ft-methods"
        )
        with gr.Row():
            rank = gr.Slider(1, 32, value=8, step=1, label="Rank r")
            steps = gr.Slider(1, LIMITS.max_train_steps, value=60, step=1, label="Steps")
        with gr.Row():
            lr = gr.Number(value=3e-3, label="Learning rate")
            shots = gr.Slider(1, 64, value=8, step=1, label="Shots per class")
            seed = gr.Number(value=0, precision=0, label="Seed")
        with gr.Row():
            start = gr.Button("Start", variant="primary", elem_id="ft-start")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop")
    return _Controls(base, upload, sample, methods, rank, steps, lr, shots, seed, start, stop_btn)


def build(ctx: Context, compare: CompareTab, heads: HeadsTab) -> None:
    """The Fine-tune tab's components and events (call inside ``gr.Tab``); its adapters join ``compare`` and
    ``heads``."""
    gr.Markdown(
        f"Few-shot fine-tuning on your data or a bundled sample. Runs are limited to {LIMITS.max_train_steps} "
        f"steps and {LIMITS.max_train_seconds} s; what you train stays in your session. Device: "
        f"**{device_description()}**."
    )
    with gr.Row():
        c = _controls(ctx)
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="ft-status")
            curves = gr.Plot(label="Curves", elem_id="ft-curves")
            table = gr.Dataframe(
                headers=["method", "trainable params", "steps", "held-out metric", "seconds", "stopped"],
                label="Results",
            )
            downloads = gr.File(label="Trained adapters (PEFT format, zip)", file_count="multiple")
            use_btn = gr.Button("Use these adapters in Compare and Heads", elem_id="ft-use")
            use_message = gr.Markdown()
            with gr.Accordion("Push to the Hugging Face Hub", open=False):
                with gr.Row():
                    repo_box = gr.Textbox(label="Repo id", placeholder="your-name/my-hora-adapter")
                    token_box = gr.Textbox(label="Token (or set HF_TOKEN)", type="password")
                push_btn = gr.Button("Push", elem_id="ft-push")
                push_message = gr.Markdown()

    session = ctx.session
    train_event = c.start.click(
        partial(run, ctx.store, ctx.samples),
        [session, c.base, c.upload, c.sample, c.methods, c.rank, c.steps, c.lr, c.shots, c.seed],
        [status, curves, table, downloads, session],
        api_name="finetune",
        concurrency_limit=LIMITS.training_concurrency,
        concurrency_id="training",
    )
    refresh_samples = partial(sample_choices, ctx.store, ctx.sample_tasks)
    c.base.change(refresh_samples, [session, c.base], c.sample, api_name="finetune_samples")
    c.stop.click(stop, session, status, cancels=[train_event], api_name="stop", queue=False)
    use_btn.click(
        partial(use_adapters, ctx.store),
        session,
        [use_message, session, compare.vision_variants, compare.lm_variants, heads.base, heads.adapters],
        api_name="use_adapters",
    )
    push_btn.click(push_adapters, [session, repo_box, token_box], push_message, api_name="push")
