"""Fine-tune tab: short few-shot runs of several methods on uploaded data, streamed live.

Training is ``hora.jobs.train_in_turn`` (``hora.train.train`` in a worker thread, one method after the other), so
this handler is a generator that streams curves. Stop only sets the session's cancel flag: the worker stops between
two steps and keeps what it trained, and the generator yields the final table, the zips and how every method ended
(never a Gradio ``cancels=``, which would kill the generator before its last yield).

Data problems (no data, the wrong kind for the base, more shots than the smallest class allows) are found by the
event's validator before anything trains, and shown on the control at fault.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr

from app import figures
from app import finetune_view as view
from app.compare import CompareTab
from app.context import (
    Context,
    as_sentences,
    choices,
    describe,
    device_description,
    in_lane,
    valid,
    variant_choices,
    visitor,
)
from app.finetune_data import (
    DEFAULT_LR,
    base_controls,
    data_controls,
    load_data_cached,
    problems,
    recipe_of,
    sample_choices,
)
from app.guard import FairShareError, TrainingBudget, check_memory
from app.heads import HeadsTab, options
from app.settings import LIMITS, clamp, max_server_memory
from app.store import ModelStore, SessionModels, Variant, base_names, get_base
from hora.config import TrainConfig, compile_pays_off
from hora.jobs import train_in_turn
from hora.methods import METHODS, label
from hora.models import memory_bytes
from hora.task import data_kind


METHOD_CHOICES = [name for name in METHODS if name != "full"]  # full fine-tuning is no few-shot demo

try:  # on a ZeroGPU Space, training runs under spaces.GPU; elsewhere this decorator is not installed
    import spaces

    gpu = spaces.GPU(duration=LIMITS.max_train_seconds + 60)
except ImportError:  # plain local / Docker runs
    gpu = lambda fn: fn  # noqa: E731


# ---------------------------------------------------------------------------------------------------------------
# Checks before anything trains


def memory_problem() -> str | None:
    """Why no fine-tune may start now: the server's memory is above its ceiling (``HORA_MAX_SERVER_MEMORY``)."""
    try:
        check_memory(max_server_memory(memory_bytes()))
    except FairShareError as refusal:
        return str(refusal)
    return None


def check_run(store, samples, session, base_name, upload, sample, methods, rank, steps, lr, shots, seed) -> list:
    """Validator of Start: each problem on the control at fault (the data's on the upload, or the sample); a server
    short of memory, on the base (the first control), before anything else is checked."""
    memory = memory_problem()
    if memory is not None:
        return [None, valid(memory)] + [valid()] * 8
    methods = [m for m in (methods or []) if m in METHOD_CHOICES]
    found = problems(store, samples, session, base_name, upload, sample, methods, shots)
    data = found.get("data")
    problem = [found.get("base"), data if upload else None, None if upload else data, found.get("methods")]
    try:
        rate = learning_rate(lr)
        rate_problem = "A learning rate is above 0 (or blank)." if rate is not None and rate <= 0 else None
    except ValueError:
        rate_problem = "Type a number such as 0.003, or leave it blank for the base's tuned rate."
    controls = [valid(p) for p in problem] + [valid(), valid(), valid(rate_problem), valid(found.get("shots"))]
    return [None, *controls, valid()]


def learning_rate(typed: object) -> float | None:
    """The learning rate typed in the box (a text box: a number box cannot stay blank), None when it is blank;
    a ValueError when it is no number."""
    if typed is None or (isinstance(typed, str) and not typed.strip()):
        return None
    return float(typed)


def learning_rates(store: ModelStore, session: SessionModels | None, base_name: str | None) -> dict:
    """The learning-rate box's placeholder: the rate a blank box means on this base, the most common first and any
    method's own after it ("0.003 (DoRAN 0.001)")."""
    tuned = recipe_of(get_base(store, session, base_name) if base_name else None).get("lr")
    tuned = tuned if isinstance(tuned, dict) else {}
    rates = {m: float(tuned.get(m, DEFAULT_LR)) for m in METHOD_CHOICES}
    common = max(set(rates.values()), key=list(rates.values()).count)
    others = ", ".join(f"{label(m)} {r:g}" for m, r in rates.items() if r != common)
    return gr.update(placeholder=f"{common:g}" + (f" ({others})" if others else ""))


def _idle() -> tuple[dict, dict]:  # Start on, Stop off
    return gr.update(interactive=True), gr.update(interactive=False)


@gpu
@as_sentences("fine-tune")
def run(
    store: ModelStore,
    samples: dict[str, str],
    session: SessionModels,
    base_name: str,
    upload: str | None = None,
    sample: str | None = None,
    methods: list[str] | None = None,
    rank: float = 8,
    steps: float = 60,
    lr: str | float | None = None,
    shots: float = 8,
    seed: float = 0,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio injects the progress tracker
    request: gr.Request = None,
    *,
    budget: TrainingBudget | None = None,
) -> Iterator[tuple]:
    """Train each chosen method in turn; yields (status, curves, table, files, session, Start, Stop, stop note).

    ``upload`` (a file) or ``sample`` (a bundled sample's name) is the data; one of them is needed. ``budget`` holds
    every visitor's fine-tuning seconds (by visitor, not by session: a new session does not reset it).
    """
    methods = [m for m in (methods or []) if m in METHOD_CHOICES]
    found = problems(store, samples, session, base_name, upload, sample, methods, shots)
    memory = memory_problem()  # again: memory may have grown while the run waited in the queue
    if found or memory:
        raise gr.Error(memory or " ".join(found.values()))
    try:
        rate = learning_rate(lr)
    except ValueError as err:
        raise gr.Error("The learning rate must be a number such as 0.003, or blank.") from err
    dataset = load_data_cached(upload or samples[sample])
    kind = data_kind(dataset)
    steps = int(clamp(steps, 1, LIMITS.max_train_steps))
    classes = getattr(dataset, "classes", None)
    who = visitor(request) if request is not None else "local"
    try:
        left = budget.check(who) if budget is not None else float(LIMITS.max_train_seconds)
    except FairShareError as spent:
        raise gr.Error(str(spent)) from spent
    seconds = min(LIMITS.max_train_seconds, left)
    job = view.Job(methods, steps, kind, 1 / len(classes) if classes else None, session.folder(), seconds)
    r = int(clamp(rank, 1, 64))
    job.names = {m: label(m) + (f" r={r}" if METHODS[m].low_rank else "") for m in methods}
    session.runs, session.run_base = {}, base_name
    cancel = session.cancel = threading.Event()
    finished = session.finished = threading.Event()  # what Use these adapters waits for after a Stop
    busy = (gr.update(interactive=False), gr.update(interactive=True))  # once: redrawn every step, Stop is unclickable
    note = " (labelled text: the language model gets a classification head)" if kind == "text" else ""
    yield f"Starting{note}…", view.curves(job), view.table(session, job), [], session, *busy, ""
    base = get_base(store, session, base_name)
    updates = train_in_turn(
        base.location,
        dataset,
        _configs(methods, kind, rank, steps, rate, shots, seed, recipe_of(base)),
        out_root=job.folder,
        cancel=cancel,
        budget_seconds=seconds,
        data_source=Path(upload).name if upload else sample,
        serve_on=base.model,  # each finished run keeps its adapter on the served base; its training copy is freed
    )
    try:
        for update in updates:
            status = view.apply(update, session, job, cancel, progress)
            yield status, view.curves(job), view.table(session, job), job.files, session, *(gr.skip(),) * 3
    finally:
        updates.close()  # also reached if the generator is closed early: the worker stops between steps
        session.train_seconds += time.monotonic() - job.started
        if budget is not None:
            budget.charge(who, time.monotonic() - job.started)  # finished, failed or stopped: the time was used
        finished.set()
    final = view.summary(session, job), view.curves(job), view.table(session, job), job.files, session, *_idle()
    yield *final, gr.skip()
    if job.failures and not session.runs:
        # after the idle yield: Gradio's frontend runs no .then() after an error, so Start is re-enabled here
        raise gr.Error(view.failures(job))


def _configs(
    methods: list[str], kind: str, rank: float, steps: int, lr: float | None, shots: float, seed: float, recipe: dict
) -> list:
    """One engine config per method, from the tab's controls (clamped to the app's limits) and the base's recipe.

    ``recipe`` is the base's ``info["finetune"]`` (what its shipped adapters were trained with): its batch size,
    context, image size and held-out cap keep a real model's step within seconds on a CPU, and ``keep_best`` keeps
    the weights of the best held-out evaluation; a blank learning rate takes each
    method's tuned rate from it (3e-3 where the base has none).
    """
    tuned = recipe.get("lr") if isinstance(recipe.get("lr"), dict) else {}
    return [
        TrainConfig(
            method=method,
            r=int(clamp(rank, 1, 64)),
            steps=steps,
            lr=clamp(lr if lr else float(tuned.get(method, DEFAULT_LR)), 1e-6, 1.0),
            shots=int(clamp(shots, 1, 1000)) if kind != "lm" else None,
            seed=int(seed or 0),
            # six held-out evaluations: on a real LM on a CPU each costs about two steps, so ten made a 30-step run
            # a third longer (3 min 1 s on SmolLM2 on 2 cores) for a curve that says no more
            eval_every=max(1, steps // 6),
            batch_size=int(clamp(recipe.get("batch_size", 16), 1, 64)),
            context=int(clamp(recipe.get("context", 128), 16, 512)),
            max_eval=int(clamp(recipe["max_eval"], 8, 2048)) if recipe.get("max_eval") else None,
            image_size=int(clamp(recipe["image_size"], 28, 518)) if recipe.get("image_size") else None,
            keep_best=bool(recipe.get("keep_best", False)),  # a real base overfits a few-shot sample within 30 steps
            compile=compile_pays_off(),
        )
        for method in methods
    ]


STOP_REQUESTED = "Stop requested: the run ends after the current step and keeps what it trained."


def stop(session: SessionModels) -> tuple[dict, str]:
    """Stop this session's run between two steps (it keeps what it trained); says so only if one is running.

    Its note is true whenever it arrives: Stop never writes the run's status, since a late answer to Stop (it does
    not wait in the queue, but may in a busy server) could land after the run's final status and hide it.
    """
    if session.cancel is not None and not session.cancel.is_set():
        session.cancel.set()
        return gr.update(interactive=False), STOP_REQUESTED
    return gr.update(interactive=False), "Nothing is running: press Start to fine-tune."


def use_adapters(store: ModelStore, session: SessionModels) -> Iterator[tuple]:
    """Make this session's trained models selectable in Compare and Heads (for this session only).

    While a run is still going (or stopping: it ends after its current step, then evaluates and saves), it says so
    and waits for it, so that a press right after Stop adds what the run kept. Text classifiers (labelled text on a
    language model) go to Heads only: they cannot generate text, so the Language section of Compare leaves them
    out. With nothing trained, it says so and changes nothing.
    """
    if session.finished is not None and not session.finished.is_set():
        stopping = session.cancel is not None and session.cancel.is_set()
        wait = "it stops after its current step" if stopping else "press Stop to end it sooner"
        yield (f"Waiting for the run to end ({wait}); its adapters are added then…", session) + (gr.update(),) * 4
        session.finished.wait(timeout=LIMITS.max_train_seconds + 120)
    yield _add_runs(store, session)


def _add_runs(store: ModelStore, session: SessionModels) -> tuple:
    """``use_adapters``' work once no run is going."""
    if not session.runs:
        return ("Nothing to add yet: fine-tune something first (a stopped run counts).", session) + (gr.update(),) * 4
    base_name = session.run_base
    classifiers = []
    for method, result in session.runs.items():
        name = f"{label(method)} (yours)"
        info = {
            "method": method,
            "task": result.task.kind,
            "trainable_parameters": result.metrics["method_info"]["trainable_params"],
            "metrics": dict(result.final),
        }
        session.add(base_name, Variant(name, method, result.model.eval(), "fine-tuned in this session", info))
        if result.task.kind == "text":
            classifiers.append(name)
    kind = get_base(store, session, base_name).kind
    vision = variant_choices(store, session, base_name) if kind == "image" else gr.update()
    lm = variant_choices(store, session, base_name, generators_only=True) if kind == "lm" else gr.update()
    adapters, _, _ = options(store, session, base_name)
    message = f"Added {', '.join(label(m) for m in session.runs)} to {base_name}: pick them in Compare and Heads."
    if classifiers:
        message = (
            f"Added {', '.join(classifiers)} to Heads. They were trained to classify text, so they cannot generate: "
            "the Language section of Compare leaves them out."
        )
    return message, session, vision, lm, gr.update(choices=base_names(store, session), value=base_name), adapters


@as_sentences("push the adapters")
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
    lr: gr.Textbox
    shots: gr.Slider
    seed: gr.Number
    start: gr.Button
    stop: gr.Button
    stop_note: gr.Markdown


def _controls(ctx: Context) -> _Controls:
    bases = ctx.store.names()
    first = bases[0] if bases else None
    with gr.Column(scale=1, min_width=300):
        base = gr.Dropdown(bases, value=first, label="Base model", elem_id="ft-base")
        upload = gr.File(
            label="Data: image zip (class folders), CSV / JSONL (text,label) or TXT",
            file_types=[".zip", ".csv", ".jsonl", ".txt"],
            type="filepath",
            elem_id="ft-upload",
        )
        sample = gr.Dropdown(  # choices follow the base; the handler checks the name, so the API
            label="…or a bundled sample",  # may name any bundled sample whatever the base shown
            allow_custom_value=True,
            elem_id="ft-sample",
            **choices(sample_choices(ctx.store, ctx.sample_tasks, None, first)),
        )
        steps_value = base_controls(ctx.store, ctx.sample_tasks, None, first)[1]["value"]
        methods = gr.CheckboxGroup(
            [(label(m), m) for m in METHOD_CHOICES], value=["lora", "hora"], label="Methods", elem_id="ft-methods"
        )
        rank = gr.Slider(1, 32, value=8, step=1, label="Rank r")
        steps = gr.Slider(1, LIMITS.max_train_steps, value=steps_value, step=1, label="Steps", elem_id="ft-steps")
        shots = gr.Slider(1, 64, value=8, step=1, label="Shots per class", elem_id="ft-shots")
        with gr.Row():
            lr = gr.Textbox(  # not a number box: Gradio's shows 0 when blank; blank means the tuned rate
                value="",
                label="Learning rate (blank: the base's tuned rate)",
                min_width=120,
                max_lines=1,
                elem_id="ft-lr",
                placeholder=learning_rates(ctx.store, None, first)["placeholder"],
            )
            seed = gr.Number(value=0, precision=0, label="Seed", min_width=100)
        with gr.Row():
            start = gr.Button("Start", variant="primary", elem_id="ft-start")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop", interactive=False)
        stop_note = gr.Markdown(label="Stop", elem_id="ft-stop-note")
    return _Controls(base, upload, sample, methods, rank, steps, lr, shots, seed, start, stop_btn, stop_note)


def build(ctx: Context, compare: CompareTab, heads: HeadsTab) -> None:
    """The Fine-tune tab's components and events (call inside ``gr.Tab``); its adapters join ``compare`` and
    ``heads``."""
    gr.Markdown(
        f"Few-shot fine-tuning on your data or a bundled sample. Runs are limited to {LIMITS.max_train_steps} "
        f"steps and {LIMITS.max_train_seconds} s; what you train stays in your session. Device: "
        f"**{device_description()}**.",
        elem_classes="about",
    )
    first = (ctx.store.names() or [None])[0]
    about = gr.Markdown(
        describe(ctx.store, None, first), label="The base and its shipped adapters", elem_classes="about"
    )
    with gr.Row():
        c = _controls(ctx)
        with gr.Column(scale=2, min_width=300):
            status = gr.Markdown("Pick data and methods, then press Start.", label="Status", elem_id="ft-status")
            curves = gr.Plot(
                figures.placeholder("Curves appear here while training."), label="Curves", elem_id="ft-curves"
            )
            table = gr.Dataframe(headers=view.COLUMNS, label="Results", elem_id="ft-table")
            downloads = gr.File(label="Trained adapters (PEFT format, zip)", file_count="multiple", elem_id="ft-files")
            use_btn = gr.Button("Use these adapters in Compare and Heads", elem_id="ft-use")
            use_message = gr.Markdown(label="Use message", elem_id="ft-use-message")
            with gr.Accordion("Push to the Hugging Face Hub", open=False):
                with gr.Row():
                    repo_box = gr.Textbox(label="Repo id", placeholder="your-name/my-hora-adapter")
                    token_box = gr.Textbox(label="Token (or set HF_TOKEN)", type="password")
                push_btn = gr.Button("Push", elem_id="ft-push")
                push_message = gr.Markdown(label="Push message")

    session = ctx.session
    inputs = [session, c.base, c.upload, c.sample, c.methods, c.rank, c.steps, c.lr, c.shots, c.seed]
    started = c.start.click(
        partial(run, ctx.store, ctx.samples, budget=ctx.budget),
        inputs,
        [status, curves, table, downloads, session, c.start, c.stop, c.stop_note],
        api_name="finetune",
        validator=in_lane(ctx, "training", partial(check_run, ctx.store, ctx.samples)),
        show_progress_on=[curves],
        concurrency_limit=LIMITS.training_concurrency,
        concurrency_id="training",
    )
    # Gradio's frontend runs .then() only after a success: a run that fails must free Start too
    started.then(_idle, None, [c.start, c.stop], api_name="finetune_idle", queue=False)
    started.failure(_idle, None, [c.start, c.stop], api_name="finetune_failed", queue=False)
    refresh = partial(base_controls, ctx.store, ctx.sample_tasks)
    c.base.change(refresh, [session, c.base], [c.sample, c.steps], api_name="finetune_samples").then(
        partial(describe, ctx.store), [session, c.base], about, api_name="finetune_about"
    ).then(partial(learning_rates, ctx.store), [session, c.base], c.lr, api_name="finetune_lr", queue=False)
    gr.on(
        [c.upload.change, c.sample.change],
        partial(data_controls, ctx.samples),
        [c.upload, c.sample],
        c.shots,
        api_name="finetune_data",
        queue=False,
    )
    # Not `cancels=`: the generator must live to yield what was trained. queue=False: never waits behind training.
    c.stop.click(stop, session, [c.stop, c.stop_note], api_name="stop", queue=False)
    use_btn.click(
        partial(use_adapters, ctx.store),
        session,
        [use_message, session, compare.vision_variants, compare.lm_variants, heads.base, heads.adapters],
        api_name="use_adapters",
    )
    push_btn.click(push_adapters, [session, repo_box, token_box], push_message, api_name="push")
