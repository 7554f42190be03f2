"""The one loader of the project: base models and trained adapters, by name.

    >>> import hora
    >>> base = hora.load_base("vit-digits")                   # embedded in the repository's assets/ folder
    >>> model = hora.load_adapter(base, "vit-digits/hora")    # a peft.PeftModel (HoRA is registered by hora)

Names resolve through ``hora.hub`` (local folder, embedded asset, Hub repo). An adapter folder is a PEFT adapter
(LoRA, DoRA, HoRA, DoRAN) or a run of the training engine: a PEFT adapter trained for a new label set
(``metrics.json`` names the labels) or a head-only run (``head_config.json`` + ``head.safetensors``). The engine
(``hora.train``, ``hora.runs``), the CLI and the app all load through here.

Only safetensors are read and no repository's own code runs. What a folder declares is checked before anything
is built from it: a base's config sizes and its parameter count (counted on the meta device) against
``hora.models.max_base_params()``, its weights against its config (a nearly empty weights file would leave a random
model); an adapter's config and tensors against its base (``hora.validate``: names, not patterns, unless trusted;
bounded sizes; finite weights). ``allow_local=False`` is the public app's mode (``hora.hub.public_mode()``): Hub
repo ids and bundled names only. Every refusal is a ``HubError`` whose message names no server folder.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from hora import cards, hub
from hora.hub import HubError
from hora.io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_CONFIG, HEAD_WEIGHTS, METRICS
from hora.models import (
    BUILDING,
    BaseKind,
    TaskKind,
    UnsupportedModelError,
    base_kind,
    check_config_sizes,
    check_model_size,
    check_weights_cover,
    fit_labels,
    max_base_params,
    model_class,
    new_head,
    parameter_count,
)
from hora.validate import (
    MAX_CONFIG_BYTES,
    MAX_IMAGE_SIZE,
    MAX_POSITIONS,
    AdapterError,
    check_adapter,
    check_finite,
    check_int,
    check_labels,
    is_plain_name,
    peft_config,
    read_safetensors_header,
)


MAX_MODEL_CONFIG_BYTES = 16 << 20  # config.json (ImageNet-21k's 21,843 labels take about 1 MB)
MAX_RECORD_BYTES = 16 << 20  # metrics.json: the history of a long run


@dataclass
class LoadedBase:
    """A base model with what is needed to feed it.

    ``processor`` is the image processor (``kind == "image"``) or the tokenizer; ``task`` is what the model was
    built for (``"text"``: a causal LM with a sequence-classification head); ``head_replaced`` says whether its
    classifier was re-initialised for a new label set; ``card`` is the front matter of the folder's README.md.
    """

    model: nn.Module
    processor: Any
    kind: BaseKind
    name: str
    path: Path
    source: Literal["embedded", "local", "packaged", "hub"]
    card: dict = field(default_factory=dict)
    task: TaskKind = "image"
    head_replaced: bool = False


def _safe_kwargs(kw: dict) -> dict:
    if kw.pop("trust_remote_code", False):
        raise HubError("hora never runs a repository's own code: trust_remote_code=True is not supported.")
    kw.pop("use_safetensors", None)
    return kw


def _check_task(task: TaskKind, kind: BaseKind, config: Any, where: Path) -> None:
    """Refuse a task the base cannot do, saying what would work."""
    if task == "text":
        model_class("text", config)  # raises when the architecture has no sequence-classification head
    if (task == "image") != (kind == "image"):
        what = "an image classifier" if kind == "image" else "a language model"
        raise HubError(f"{where.name} is {what}, so it cannot be trained or loaded for a {task!r} task.")


def _is_sequence_classifier(config: Any) -> bool:
    """A checkpoint saved with its text classifier (a ``full`` run of the engine), not a bare causal LM."""
    return any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or [])


def default_image_processor(config: Any) -> Any:
    """ViT's preprocessing at the config's image size: what the engine uses for a base that ships no processor."""
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    size = int(getattr(config, "image_size", 224))
    return ViTImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _processor(path: Path, task: TaskKind, config: Any) -> Any:
    from transformers import AutoImageProcessor, AutoTokenizer

    if task == "image":
        if not (path / "preprocessor_config.json").is_file():
            return default_image_processor(config)
        # PIL backend: the same pixels with or without torchvision, as the builder trained on.
        return AutoImageProcessor.from_pretrained(path, backend="pil")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tokenizer.pad_token is None:  # causal LM tokenizers often have none; padded positions are masked
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _model_config(found: hub.Resolved) -> Any:
    """The folder's config after its sizes were checked on the raw JSON (before transformers parses it)."""
    from transformers import AutoConfig

    file = found.path / "config.json"
    if file.stat().st_size > MAX_MODEL_CONFIG_BYTES:
        raise HubError(
            f"{found.name}/config.json is larger than {MAX_MODEL_CONFIG_BYTES >> 20} MB; not a model config."
        )
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise HubError(f"{found.name}/config.json is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise HubError(f"{found.name}/config.json must hold a JSON object.")
    try:
        check_config_sizes(raw, f"{found.name}/config.json")
        _check_preprocessor(found)
    except AdapterError as error:
        raise HubError(str(error)) from error
    return AutoConfig.from_pretrained(found.path, trust_remote_code=False)


def _check_preprocessor(found: hub.Resolved) -> None:
    """An image processor resizes every input to its ``size``: bound it, or one classify could allocate gigabytes."""
    file = found.path / "preprocessor_config.json"
    if not file.is_file():
        return
    where = f"{found.name}/preprocessor_config.json"
    values = _json(file, MAX_CONFIG_BYTES)
    for key in ("size", "crop_size"):
        size = values.get(key)
        for name, value in size.items() if isinstance(size, dict) else [(key, size)]:
            if value is not None:
                check_int(value, f"{key}.{name}" if name != key else key, 1, MAX_IMAGE_SIZE, where)


def _stored_values(found: hub.Resolved) -> int:
    """Values held by the folder's safetensors files, from their headers (each checked against its file size)."""
    total = 0
    for file in sorted(found.path.glob("*.safetensors")):
        header = read_safetensors_header(file, f"{found.name}/{file.name}")
        total += sum(math.prod(shape) for _, shape in header.values())
    return total


def _check_size(found: hub.Resolved, config: Any, task: TaskKind, labels: int | None, limit: int | None) -> None:
    """Count the parameters the config describes (meta device) and refuse too large a model or missing weights."""
    counted = copy.deepcopy(config)
    if labels:
        counted.num_labels = labels
    count = parameter_count(counted, task)
    check_model_size(count, found.name, limit)
    try:
        stored = _stored_values(found)
    except AdapterError as error:
        raise HubError(str(error)) from error
    check_weights_cover(stored, count, found.name)


def _shown_name(found: hub.Resolved) -> str:
    """What the loaded model calls itself (``name_or_path``, which PEFT records as an adapter's base): a name for
    embedded, packaged and Hub bases, never the server's path to them."""
    if found.source != "local":
        return found.name
    return hub.display_name(found.path) or os.fspath(found.path)


def load_base(
    name_or_path_or_repo: str | os.PathLike,
    *,
    revision: str | None = None,
    task: TaskKind | None = None,
    id2label: dict[int, str] | None = None,
    allow_local: bool = True,
    max_params: int | None = None,
    **kw: Any,
) -> LoadedBase:
    """Load a base model (eval mode) and its image processor or tokenizer.

    ``name_or_path_or_repo`` is a local folder, an embedded asset name (``"vit-digits"``, ``"lm-shakespeare"``)
    or a Hub repo id; ``revision`` (branch, tag or commit) applies to Hub repos only. ``task`` builds the model
    for a task other than its own (``"text"``: a causal LM with a sequence-classification head), and ``id2label``
    gives a classifier a fresh head when its labels differ. Extra keyword arguments go to ``from_pretrained``
    (e.g. ``dtype=torch.float32``). Only safetensors weights are loaded.

    ``allow_local=False`` (public mode) accepts Hub repo ids and bundled names only. A config describing more than
    ``max_params`` parameters (default ``hora.models.max_base_params()``) is refused before anything is built or
    downloaded, and so is a folder whose weights cover less than half of what its config describes.
    """
    kw = _safe_kwargs(dict(kw))
    limit = max_base_params() if max_params is None else max_params
    found = hub.resolve(
        name_or_path_or_repo, revision=revision, allow_local=allow_local, max_download_bytes=4 * limit + (256 << 20)
    )
    if not (found.path / "config.json").is_file():
        hint = " It looks like an adapter: use load_adapter()." if hub.is_adapter(found.path) else ""
        raise HubError(f"{found.name} has no config.json, so it is not a transformers model.{hint}")
    if not any(found.path.glob("*.safetensors")):
        raise HubError(
            f"{found.name} has no *.safetensors weights; hora does not load pickled .bin checkpoints. "
            "Convert them once with `model.save_pretrained(folder)` (safetensors is the default)."
        )
    with BUILDING:  # transformers sets torch's process-wide default dtype while it builds (hora.models)
        try:
            config = _model_config(found)
            kind = base_kind(config)
            task = task or ("text" if _is_sequence_classifier(config) else kind)
            _check_task(task, kind, config, found.path)
            if task == "text":
                if not id2label and _is_sequence_classifier(config):
                    id2label = {int(k): str(v) for k, v in config.id2label.items()}
                if not id2label:
                    raise HubError("Text classification needs the label set (id2label) to build its classifier.")
                kw["num_labels"] = len(id2label)
            _check_size(found, config, task, kw.get("num_labels"), limit)
            model = model_class(task, config).from_pretrained(
                found.path, use_safetensors=True, trust_remote_code=False, **kw
            )
            processor = _processor(found.path, task, config)
        except HubError:
            raise
        except UnsupportedModelError as error:
            raise HubError(str(error)) from error
        except Exception as error:  # transformers, safetensors and tokenizers raise many types on a bad folder
            detail = hub.redact(f"{type(error).__name__}: {error}", found.path)[:500]
            raise HubError(f"Could not load the model in {found.name}: {detail}") from error
        if task == "text" and not _is_sequence_classifier(config):
            new_head(model, id2label)  # a causal LM has no classifier to keep: draw it from the seeded RNG, as always
            replaced = True
        else:
            replaced = fit_labels(model, id2label)
        if task == "text" and model.config.pad_token_id is None:
            model.config.pad_token_id = processor.pad_token_id
        model.name_or_path = model.config._name_or_path = _shown_name(found)  # what PEFT records as the base
        card = cards.read(found.path)
        return LoadedBase(model.eval(), processor, kind, found.name, found.path, found.source, card, task, replaced)


def _json(path: Path, limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """A JSON object of a run folder ({} when the file is missing); wrong JSON or shape is a ``HubError``."""
    if not path.is_file():
        return {}
    where = f"{path.parent.name}/{path.name}"
    if path.stat().st_size > limit:
        raise HubError(f"{where} is larger than {limit >> 20} MB; that is not what hora writes there.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise HubError(f"{where} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise HubError(f"{where} must hold a JSON object, not {type(data).__name__}.")
    return data


def _numbers(value: Any, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def _check_record(record: dict[str, Any], where: str) -> None:
    """The fields of ``metrics.json`` that loading and evaluation read, each of the shape hora writes."""
    pre = record.get("preprocessing")
    if pre is not None:
        if not isinstance(pre, dict) or pre.get("kind") not in ("image", "text", "lm"):
            raise AdapterError("`preprocessing` must be an object whose kind is 'image', 'text' or 'lm'.")
        for key, high in (("image_size", MAX_IMAGE_SIZE), ("max_length", MAX_POSITIONS), ("context", MAX_POSITIONS)):
            if pre.get(key) is not None:
                check_int(pre[key], f"preprocessing.{key}", 1, high, where)
        for key in ("mean", "std"):
            if pre.get(key) is not None and not _numbers(pre[key], 3):
                raise AdapterError(f"`preprocessing.{key}` must be 3 finite numbers (R, G, B).")
        if pre.get("std") is not None and not all(pre["std"]):
            raise AdapterError("`preprocessing.std` must not hold a zero.")
        if not (isinstance(pre.get("eval_fraction", 0.1), (int, float)) and 0 < pre.get("eval_fraction", 0.1) < 1):
            raise AdapterError("`preprocessing.eval_fraction` must be a number between 0 and 1.")
        if pre.get("id2label") is not None:
            check_labels(pre["id2label"], f"{where} preprocessing")
    if record.get("id2label") is not None:
        check_labels(record["id2label"], where)
    split = record.get("split")
    if split is not None:
        indices = split.get("eval", []) if isinstance(split, dict) else None
        if not isinstance(indices, list) or not all(type(i) is int and i >= 0 for i in indices):
            raise AdapterError("`split.eval` must be a list of example indices.")
        if split.get("eval_chunks") is not None and type(split["eval_chunks"]) is not int:
            raise AdapterError("`split.eval_chunks` must be a number of chunks.")
    if not isinstance(record.get("method", ""), str) or not isinstance(record.get("data", {}), dict):
        raise AdapterError("`method` must be a method name and `data` an object.")


def run_record(folder: str | os.PathLike) -> dict[str, Any]:
    """What a run of the engine says about itself: ``metrics.json`` ({} for a plain adapter folder).

    The fields that loading and evaluation read are checked for the shape hora writes (a ``HubError`` otherwise).
    """
    record = _json(Path(folder) / METRICS)
    where = f"{Path(folder).name}/{METRICS}"
    try:
        _check_record(record, where)
    except AdapterError as error:
        raise HubError(f"{where} is not a run record of hora's engine: {error}") from error
    return record


def run_labels(folder: str | os.PathLike) -> dict[int, str] | None:
    """The label set a run trained a new classifier for (None: the base's own, or not a classifier)."""
    folder = Path(folder)
    for record, file in ((run_record(folder), METRICS), (_json(folder / HEAD_CONFIG), HEAD_CONFIG)):
        labels = record.get("id2label")
        if labels:
            try:
                return check_labels(labels, f"{folder.name}/{file}")
            except AdapterError as error:
                raise HubError(str(error)) from error
    return None


def load_adapter(
    base_model: LoadedBase | nn.Module,
    name_or_path_or_repo: str | os.PathLike,
    adapter_name: str = "default",
    *,
    revision: str | None = None,
    trusted: bool | None = None,
    allow_local: bool = True,
    **kw: Any,
) -> nn.Module:
    """Load an adapter (LoRA, DoRA, HoRA, DoRAN) onto ``base_model``; returns a ``peft.PeftModel`` in eval mode.

    ``base_model`` is a ``LoadedBase`` or a model; it is adapted in place, as with ``PeftModel.from_pretrained``.
    If it is already a ``PeftModel`` the adapter is added under ``adapter_name`` and made active.
    ``name_or_path_or_repo`` is a local folder, an embedded name (``"vit-digits/hora"``; a bare ``"hora"`` means
    an adapter of the embedded base given) or a Hub repo id. Extra keyword arguments go to
    ``PeftModel.from_pretrained``.

    ``trusted``: whether the config may use regular expressions (``hora.validate``); by default only the
    project's embedded adapters are trusted; pass ``True`` for runs the caller wrote itself. Every adapter is
    checked against its base (sizes, shapes, finite weights) before PEFT sees it. ``allow_local=False`` (public
    mode) accepts Hub repo ids and bundled names only.

    A run of the engine for a new label set first gets a classifier of that size, which the adapter's saved head
    then fills. A head-only run has no PEFT adapter: it returns the base model itself with the trained head.
    """
    kw = _safe_kwargs(dict(kw))
    model = base_model.model if isinstance(base_model, LoadedBase) else base_model
    name = os.fspath(name_or_path_or_repo)
    if isinstance(base_model, LoadedBase) and "/" not in name and not (allow_local and Path(name).exists()):
        scoped = f"{base_model.name}/{name}"
        if scoped in hub.embedded_assets():
            name = scoped
    limit = 4 * max_base_params() + (256 << 20)
    found = hub.resolve(name, revision=revision, allow_local=allow_local, max_download_bytes=limit)
    if not hub.is_adapter(found.path):
        hint = " It looks like a base model: use load_base()." if (found.path / "config.json").is_file() else ""
        raise HubError(f"{found.name} has no {ADAPTER_CONFIG}, so it is not a PEFT adapter.{hint}")
    _warn_if_other_base(found.path, base_model)
    if not (found.path / ADAPTER_CONFIG).is_file():
        with BUILDING:
            return _load_head(model, found.path)
    if not (found.path / ADAPTER_WEIGHTS).is_file():
        raise HubError(f"{found.name} has no {ADAPTER_WEIGHTS}; hora does not load pickled adapters.")
    with BUILDING:
        return _load_peft(model, found, adapter_name, found.source == "embedded" if trusted is None else trusted, kw)


def _load_peft(model: nn.Module, found: hub.Resolved, adapter_name: str, trusted: bool, kw: dict) -> nn.Module:
    """Check the adapter against ``model``, then build it from the checked config (PEFT never reads the JSON)."""
    from peft import PeftModel

    import hora  # noqa: F401  (registers HORA and DORAN with PEFT)

    try:
        if not isinstance(model, PeftModel):
            fit_labels(model, run_labels(found.path))
        config = peft_config(check_adapter(model, found.path, trusted=trusted))
    except AdapterError as error:
        raise HubError(f"{found.name}: {error}") from error
    try:
        if isinstance(model, PeftModel):
            if adapter_name not in model.peft_config:
                config.inference_mode = True
                model.add_adapter(adapter_name, config)
            model.load_adapter(found.path, adapter_name=adapter_name, is_trainable=False, **kw)
            model.set_adapter(adapter_name)
            peft_model = model
        else:
            peft_model = PeftModel.from_pretrained(model, found.path, adapter_name=adapter_name, config=config, **kw)
    except Exception as error:  # PEFT and torch raise many types (size mismatches, bad keys)
        detail = hub.redact(f"{type(error).__name__}: {error}", found.path)[:500]
        raise HubError(f"Could not load the adapter in {found.name} onto this base model: {detail}") from error
    return peft_model.eval()


def _load_head(model: nn.Module, folder: Path) -> nn.Module:
    """A head-only run of the engine: the base model with its trained classifier (no PEFT adapter)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    if isinstance(model, PeftModel):
        raise HubError(f"{folder.name} is a head-only run: load it onto a plain base model, not a PeftModel.")
    head = _json(folder / HEAD_CONFIG, MAX_CONFIG_BYTES)
    weights = folder / HEAD_WEIGHTS
    if head.get("format") != "hora-head" or not weights.is_file():
        raise HubError(f"{folder.name} is not a head-only run of hora.train ({HEAD_CONFIG} + {HEAD_WEIGHTS}).")
    modules = head.get("modules", [])
    if not isinstance(modules, list) or not all(is_plain_name(m) for m in modules):
        raise HubError(f"{folder.name}/{HEAD_CONFIG}: `modules` must be a list of module names.")
    try:
        header = read_safetensors_header(weights, f"{folder.name}/{HEAD_WEIGHTS}")
        labels = run_labels(folder)
        state = {k: tuple(v.shape) for k, v in model.state_dict().items()}  # tied weights (an LM head) too
        expected = dict(state)
        if labels is not None and type(model).__name__.endswith("Classification"):
            expected.update({k: (len(labels), *v[1:]) for k, v in state.items() if k.split(".")[0] in modules})
        wrong = [k for k, (_, shape) in header.items() if expected.get(k) != shape]
        if wrong:
            raise HubError(f"The head in {folder.name} does not fit this base model: {', '.join(wrong[:5])}.")
        check_finite(weights, f"{folder.name}/{HEAD_WEIGHTS}")
    except AdapterError as error:
        raise HubError(str(error)) from error
    fit_labels(model, labels)
    model.load_state_dict(load_file(os.fspath(weights)), strict=False)
    return model.eval()


def _warn_if_other_base(adapter_path: Path, base_model: LoadedBase | nn.Module) -> None:
    """Warn when an embedded adapter names a different embedded base than the one it is loaded onto."""
    if not isinstance(base_model, LoadedBase) or base_model.source != "embedded":
        return
    record = _json(adapter_path / ADAPTER_CONFIG, MAX_CONFIG_BYTES) or _json(
        adapter_path / HEAD_CONFIG, MAX_CONFIG_BYTES
    )
    expected = record.get("base_model_name_or_path") or record.get("base_model")
    if isinstance(expected, str) and expected in hub.embedded_assets() and expected != base_model.name:
        warnings.warn(
            f"Adapter {adapter_path.name!r} was trained on {expected!r}, not on {base_model.name!r}.", stacklevel=3
        )


__all__ = ["LoadedBase", "default_image_processor", "load_adapter", "load_base", "run_labels", "run_record"]
