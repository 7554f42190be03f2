"""Fine-tune tab: short few-shot runs of several methods on uploaded data, streamed live.

Training itself is ``hora.train.train``; it runs in a worker thread and reports every step through a
queue, so this handler can be a generator (Gradio can only cancel generators) that streams curves. The
Stop button cancels the generator and sets the engine's cancel flag, so the run ends between two steps
and keeps what it trained.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from app import figures
from app.settings import LIMITS, clamp
from app.store import METHOD_LABELS, ModelStore, SessionModels, Variant, base_names, get_base, variants_of
from hora.data import DataError, detect_task, load_data
from hora.train import TrainConfig, data_kind, train


METHOD_CHOICES = ["head", "lora", "hora", "dora", "doran"]

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
                METHOD_LABELS.get(method, method),
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
    try:
        dataset = load_data(_data_path(upload, sample, samples))
    except DataError as err:  # the engine's refusals, shown as they are
        raise gr.Error(str(err)) from err
    kind = data_kind(dataset)
    if (kind == "image") != (base.kind == "image"):
        raise gr.Error(
            f"This is {kind} data but {base_name} is a{'n image' if base.kind == 'image' else ' language'} model."
        )

    session.runs, session.run_base = {}, base_name
    histories: dict[str, dict[str, list]] = {}
    metric = "loss" if kind == "lm" else "accuracy"
    cancel = session.cancel = threading.Event()
    folder = session.folder()
    files: list[str] = []
    budget = min(LIMITS.max_train_seconds, left)
    started = time.monotonic()
    try:
        for index, method in enumerate(methods):
            if cancel.is_set():
                break
            events: queue.Queue = queue.Queue()
            outcome: dict = {}
            config = TrainConfig(
                method=method,
                r=int(clamp(rank, 1, 64)),
                steps=steps,
                lr=clamp(lr, 1e-6, 1.0),
                shots=int(clamp(shots, 1, 1000)) if kind != "lm" else None,
                seed=int(seed or 0),
                eval_every=max(1, steps // 10),
                batch_size=16,
            )

            def work(config=config, method=method, outcome=outcome, events=events) -> None:
                try:
                    outcome["result"] = train(
                        base.location,
                        dataset,
                        config,
                        out_dir=folder / f"adapter-{method}",
                        callback=events.put,
                        cancel=cancel,
                        data_source=Path(upload).name if upload else sample,
                    )
                except Exception as err:  # reported in this user's UI; other sessions are unaffected
                    outcome["error"] = err

            worker = threading.Thread(target=work, daemon=True)
            worker.start()
            history = histories.setdefault(
                METHOD_LABELS[method], {"step": [], "loss": [], "eval_step": [], metric: []}
            )
            while worker.is_alive() or not events.empty():
                if time.monotonic() - started > budget:
                    cancel.set()  # the wall-time limit: stop cleanly, keep what was trained
                try:
                    event = events.get(timeout=0.25)
                except queue.Empty:
                    continue
                history["step"].append(event.step)
                history["loss"].append(event.loss)
                if event.metrics is not None:
                    history["eval_step"].append(event.step)
                    history[metric].append(event.metrics[metric])
                done = (index + event.step / event.total_steps) / len(methods)
                progress(done, desc=f"{METHOD_LABELS[method]} step {event.step}/{event.total_steps}")
                status = (
                    f"**{METHOD_LABELS[method]}** step {event.step}/{event.total_steps} · loss {event.loss:.4f} · "
                    f"{event.step_time * 1000:.0f} ms/step on {event.device} · overall {100 * done:.0f}%"
                )
                yield status, figures.training_curves(histories, metric), _rows(session), files, session
            worker.join()
            if "error" in outcome:
                raise gr.Error(f"{METHOD_LABELS[method]} failed: {outcome['error']}")
            result = outcome["result"]
            session.runs[method] = result
            files = files + [_zip(result.out_dir, folder)]
            yield result.message, figures.training_curves(histories, metric), _rows(session), files, session
    finally:
        cancel.set()  # also reached when Gradio cancels this generator (Stop): the worker stops between steps
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
        name = f"{METHOD_LABELS.get(method, method)} (yours)"
        session.add(base_name, Variant(name, method, result.model.eval(), "fine-tuned in this session"))
    names = list(variants_of(store, session, base_name))
    kind = get_base(store, session, base_name).kind
    from app.heads import options

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
