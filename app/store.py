"""The models the explorer can run: bases loaded once and shared, each with its adapters.

Every adapter gets its own module tree over its base (LoRA, HoRA, DoRA and DoRAN cannot share one PeftModel), for
the Heads tab and anything else that needs a real ``PeftModel``; the trees share the base's frozen weights
(``hora.variants.shared_copy``), so a 135 M-parameter base is held once whatever the number of adapters. To run side
by side, each base also has one ``hora.mixed.MixedModel`` (``mixed_of``) into which its variants are registered once
loaded (``serve``): one forward pass then serves every chosen variant, a row each. Adapters a user trains live in
that user's session (``SessionModels``), never in the shared store; in a base's MixedModel they are registered under
the session's own prefix (``SessionModels.prefix``), which only that session names, and removed when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

from torch import nn

from hora.mixed import MixedModel
from hora.variants import shared_copy


Kind = Literal["image", "lm"]


class Lazy:
    """A value made on first use, once, by whichever thread asks first (the others wait for it)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make, self._value, self._lock = make, _UNSET, threading.Lock()

    @property
    def ready(self) -> bool:
        return self._value is not _UNSET

    def get(self) -> Any:
        if self._value is _UNSET:
            with self._lock:
                if self._value is _UNSET:
                    self._value = self._make()
                    self._make = None
        return self._value


_UNSET = object()


def _deferrable(name: str) -> property:
    """An attribute that may be given as a ``Lazy``: reading it makes the value (a model loads on first use)."""
    private = f"_{name}"

    def get(self: Any) -> Any:
        value = getattr(self, private)
        return value.get() if isinstance(value, Lazy) else value

    def put(self: Any, value: Any) -> None:
        setattr(self, private, value)

    return property(get, put)


def is_loaded(owner: Variant | Base) -> bool:
    """Whether a variant's or base's model is in memory (reading ``.model`` otherwise loads it)."""
    value = owner._model
    return not isinstance(value, Lazy) or value.ready


@dataclass
class Variant:
    """One runnable model: the base itself or the base with one adapter.

    ``model`` may be given as a ``Lazy`` (a warm start serves the page before its models load); ``summary`` then
    says what the page needs to know of the model without loading it (``summarise``)."""

    name: str
    method: str  # "base", "head", "lora", "dora", "hora", "doran"
    model: nn.Module = field(repr=False)
    source: str
    info: dict[str, Any] = field(default_factory=dict)  # what its card says: rank, trainable params, metrics
    summary: dict[str, Any] | None = field(default=None, repr=False)
    served: tuple[MixedModel, str] | None = field(default=None, repr=False, compare=False)  # where it is registered
    batchable: bool = field(default=True, repr=False, compare=False)  # False: a mixed batch cannot serve it


@dataclass
class Base:
    name: str
    kind: Kind
    model: nn.Module = field(repr=False)  # or a Lazy, as for a Variant
    processor: Any = field(repr=False)  # image processor or tokenizer (or a Lazy)
    source: str
    location: str | None = None  # what hora.train can load it from: a folder, asset name or repo id
    variants: dict[str, Variant] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # what its card says: what it is, what it was trained on
    fingerprint: str | None = None  # an embedded base's files (hora.hub.embedded_fingerprint): first paints' key
    summary: dict[str, Any] | None = field(default=None, repr=False)  # of the bare model, as for a Variant
    mixed: MixedModel | None = field(default=None, repr=False, compare=False)  # see mixed_of
    lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    def fresh_copy(self) -> nn.Module:
        """A new module tree over the base's (shared, frozen) weights, for a new adapter."""
        return shared_copy(self.model)


Variant.model = _deferrable("model")
Base.model, Base.processor = _deferrable("model"), _deferrable("processor")


def mixed_of(base: Base) -> MixedModel:
    """The base's ``MixedModel``, made from its (loaded) model on first use; the bare base is served in it as
    ``"base"`` when it is a variant of its own (a backbone whose reference is a probe is not)."""
    if base.mixed is None:
        with base.lock:
            if base.mixed is None:
                base.mixed = MixedModel(base.model, base_name="base" if "base" in base.variants else None)
    return base.mixed


def serve(mixed: MixedModel, variant: Variant, name: str) -> str | None:
    """``variant``'s name in ``mixed``, registered under ``name`` the first time (its terms only: no copy of the
    base); None when a mixed batch cannot serve it (it then runs on its own, and is not tried again)."""
    if variant.served is not None and variant.served[0] is mixed:
        return variant.served[1]
    if not variant.batchable:
        return None
    try:
        if name != mixed.base_name:
            mixed.register(name, variant.model, replace=True)
    except ValueError as error:  # e.g. an adapter type mixed batches do not know: it runs on its own
        logger.info("%s runs on its own, not in mixed batches: %s", name, error)
        variant.batchable = False
        return None
    variant.served = (mixed, name)
    return name


def summarise(model: nn.Module) -> dict[str, Any]:
    """What the page shows of a model before anyone runs it (JSON): its adapter's rank and trained parameters,
    whether it writes text, its class labels and, for a low-rank adapter, the projections and layers it adapts."""
    from hora import analysis
    from hora.models import labels_of

    rank = analysis.adapter_rank(model)
    check = getattr(model, "can_generate", None)
    summary = {
        "rank": rank,
        "trainable": analysis.adapter_report(model).trainable if rank is not None else None,
        "can_generate": bool(check()) if callable(check) else False,
        "labels": [str(label) for label in labels_of(model).values()],
        "projections": [],
        "layers": {},
    }
    if rank is not None:
        summary["projections"] = [list(choice) for choice in analysis.projection_choices(model)]
        summary["layers"] = {p: analysis.adapted_layers(model, p) for _, p in summary["projections"]}
    return summary


def summary_of(owner: Variant | Base) -> dict[str, Any]:
    """``owner.summary``, made from its model the first time it is asked for when it was not given."""
    if owner.summary is None:
        owner.summary = summarise(owner.model)
    return owner.summary


class ModelStore:
    """Bases and their adapters, shared by every session (read-only once the app runs)."""

    def __init__(self) -> None:
        self.bases: dict[str, Base] = {}
        self._lock = threading.Lock()

    def add_base(
        self,
        name: str,
        kind: Kind,
        model: nn.Module,
        processor: Any,
        source: str,
        location: str | None = None,
        runnable: bool = True,
    ) -> Base:
        """Add a base; ``runnable=False`` for a backbone without a trained head (its probe is its reference)."""
        base = Base(name, kind, model if isinstance(model, Lazy) else model.eval(), processor, source, location)
        if runnable:  # the same model (or the same Lazy: it loads once)
            base.variants["base"] = Variant("base", "base", base._model, source)
        with self._lock:
            self.bases[name] = base
        return base

    def add_variant(self, base_name: str, variant: Variant) -> None:
        with self._lock:
            self.bases[base_name].variants[variant.name] = variant

    def load_all(self) -> None:
        """Load every model not in memory yet, base by base, and register each in its base's ``MixedModel`` (a
        failure is logged; it shows again on use)."""
        for base in list(self.bases.values()):
            for name, variant in list(base.variants.items()):
                try:
                    variant.model  # noqa: B018 - reading it loads it
                    serve(mixed_of(base), variant, name)
                except Exception:
                    logger.exception("loading %s / %s failed", base.name, variant.name)

    def names(self, kind: Kind | None = None) -> list[str]:
        return [n for n, b in self.bases.items() if kind is None or b.kind == kind]


@dataclass
class SessionModels:
    """What one user trained or loaded in this session, invisible to everyone else.

    ``bases``: bases loaded from the Models tab; ``variants``: base name -> variant name -> Variant.
    """

    bases: dict[str, Base] = field(default_factory=dict)
    variants: dict[str, dict[str, Variant]] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)  # method -> hora.train.TrainResult of the last fine-tune
    run_base: str | None = None  # the base those runs adapted
    train_seconds: float = 0.0  # fine-tuning time used by this session
    cancel: threading.Event | None = None
    finished: threading.Event | None = None  # set when the last fine-tune has yielded all it trained
    workdir: Path | None = None
    key: str | None = None  # made on first use (gr.State deep-copies the value it starts from, key None included)

    def add(self, base_name: str, variant: Variant) -> None:
        self.variants.setdefault(base_name, {})[variant.name] = variant

    @property
    def prefix(self) -> str:
        """What this session's own variants are named with in a base's ``MixedModel`` (random; no other session
        can name them)."""
        if self.key is None:
            self.key = uuid.uuid4().hex
        return f"session-{self.key}/"

    def unserve(self) -> None:
        """Remove this session's variants from every ``MixedModel`` they were registered in."""
        own = [v for by_name in self.variants.values() for v in by_name.values()]
        own += [v for base in self.bases.values() for v in base.variants.values()]
        for mixed in {id(v.served[0]): v.served[0] for v in own if v.served is not None}.values():
            mixed.unregister_prefix(self.prefix)

    def folder(self) -> Path:
        """This session's private temporary folder (uploads, trained adapters, zips), made on first use."""
        if self.workdir is None or not self.workdir.is_dir():
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{SESSION_PREFIX}{os.getpid()}-"))
            _LIVE_FOLDERS.add(self.workdir)
        return self.workdir

    def close(self) -> None:
        """Stop any run, remove its variants from the shared MixedModels and delete the session's folder: called
        when the session ends."""
        if self.cancel is not None:
            self.cancel.set()
        self.unserve()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            _LIVE_FOLDERS.discard(self.workdir)
            self.workdir = None


SESSION_PREFIX = "hora-session-"  # then the server's pid: folders of a server that is gone are recognised
logger = logging.getLogger(__name__)
_LIVE_FOLDERS: set[Path] = set()


def delete_session_folders() -> int:
    """Delete every session folder this server made (at shutdown); returns how many there were."""
    folders = list(_LIVE_FOLDERS)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    _LIVE_FOLDERS.clear()
    return len(folders)


def delete_stale_session_folders(root: str | os.PathLike | None = None) -> int:
    """Delete the session folders of servers that no longer run (killed before they could clean up)."""
    deleted = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SESSION_PREFIX}*"):
        pid = folder.name[len(SESSION_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            deleted += 1
    return deleted


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def get_base(store: ModelStore, session: SessionModels | None, base_name: str) -> Base:
    """A shared base or one this session loaded."""
    if base_name in store.bases:
        return store.bases[base_name]
    if session is not None and base_name in session.bases:
        return session.bases[base_name]
    raise KeyError(f"Unknown base model {base_name!r}; loaded: {store.names()}.")


def base_names(store: ModelStore, session: SessionModels | None, kind: Kind | None = None) -> list[str]:
    own = [n for n, b in (session.bases.items() if session else []) if kind is None or b.kind == kind]
    return store.names(kind) + [n for n in own if n not in store.bases]


def variants_of(store: ModelStore, session: SessionModels | None, base_name: str) -> dict[str, Variant]:
    """The variants of a base: the shared ones followed by the session's own."""
    merged = dict(get_base(store, session, base_name).variants)
    if session is not None:
        merged.update(session.variants.get(base_name, {}))
    return merged


def _asset_record(folder) -> dict[str, Any]:
    """The builder's ``asset.json`` of an embedded asset ({} when there is none)."""
    path = folder / "asset.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _run_processor(folder) -> Any | None:
    """The preprocessing an engine run trained with (``metrics.json``), as an image processor; None without one."""
    from hora.task import Task, TaskImageProcessor

    path = folder / "metrics.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    preprocessing = record.get("preprocessing") or {}
    return TaskImageProcessor(Task.from_dict(preprocessing)) if preprocessing.get("kind") == "image" else None


@cache
def code_version() -> dict[str, str]:
    """The code what the app remembers depends on (part of every ``hora.memo`` key it uses): the libraries' versions,
    hora's source and the app's own (what it summarises and draws changes with it)."""
    from hora import memo

    return {**memo.environment(), "app": memo.fingerprint(sorted(Path(__file__).resolve().parent.glob("*.py")))}


def embedded_store(lazy: bool = False) -> ModelStore:
    """Every embedded base of ``assets/`` with all its adapters; real (packaged) bases first.

    Each base loads now, with its adapters; or, with ``lazy`` when an earlier start with the same files and code
    remembered its summary (``hora.memo``), it is registered unloaded: each model loads on first use, and
    ``ModelStore.load_all`` loads the rest (the explorer calls it in a thread once its page is built).
    """
    from hora import hub, memo
    from hora.packaged import PACKAGED

    store = ModelStore()
    assets = hub.embedded_assets()
    names = sorted((n for n in assets if "/" not in n), key=lambda n: (n not in PACKAGED, n))
    for name in names:
        fingerprint = hub.embedded_fingerprint(name)
        key = {"base": fingerprint, "code": code_version()} if fingerprint else None
        summary = memo.recall("store", key) if lazy and key else None
        base = _add_embedded(store, name, assets, summary)
        if base is None:
            continue
        base.fingerprint = fingerprint
        if key is not None and summary is None:
            variants = {n: summary_of(v) for n, v in base.variants.items()}
            memo.remember("store", key, {"kind": base.kind, "base": summary_of(base), "variants": variants})
    return store


def _add_embedded(store: ModelStore, name: str, assets: dict[str, Path], summary: dict | None) -> Base | None:
    """Add the embedded base ``name`` and its adapters: loaded now, or unloaded with their ``summary``."""
    import torch

    import hora
    from hora.hub import HubError
    from hora.methods import label
    from hora.packaged import PACKAGED

    info = _asset_record(assets[name])
    adapters = [n for n in assets if n.startswith(f"{name}/")]
    if summary is None:
        try:
            loaded = hora.load_base(name, dtype=torch.float32)  # float32: bf16 matmuls are slow on most CPUs
        except HubError as err:  # a packaged base whose package is not installed and whose Hub repo is unreachable
            if name not in PACKAGED:
                raise
            logger.warning("the embedded %s is left out: %s", name, err)
            return None
        kind, model, processor = loaded.kind, loaded.model, loaded.processor
    else:
        loading = Lazy(partial(hora.load_base, name, dtype=torch.float32))
        kind, model = summary["kind"], Lazy(lambda: loading.get().model.eval())
        processor = Lazy(lambda: loading.get().processor)
    processor = next((p for a in adapters if (p := _run_processor(assets[a])) is not None), processor)
    runnable = info.get("reference") is None  # a bare backbone's reference is its linear probe
    base = store.add_base(name, kind, model, processor, f"embedded: {name}", name, runnable)
    base.info = info
    known = summary or {"variants": {}}
    base.summary = known.get("base")
    if runnable:
        base.variants["base"].summary = base.summary
    for adapter_name in adapters:
        method = adapter_name.split("/", 1)[1]
        shown = "base (linear probe)" if method == info.get("reference") else label(method)
        if summary is None:
            adapter = hora.load_adapter(base.fresh_copy(), adapter_name).eval()
        else:
            adapter = Lazy(lambda adapter_name=adapter_name: hora.load_adapter(base.fresh_copy(), adapter_name).eval())
        variant = Variant(shown, method, adapter, f"embedded: {adapter_name}", _asset_record(assets[adapter_name]))
        variant.summary = known["variants"].get(shown)
        store.add_variant(name, variant)
    return base
