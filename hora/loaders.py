"""The one loader of the project: base models and trained adapters, by name.

    >>> import hora
    >>> base = hora.load_base("vit-digits")                   # embedded in the repository's assets/ folder
    >>> model = hora.load_adapter(base, "vit-digits/hora")    # a peft.PeftModel (HoRA is registered by hora)

Names resolve through ``hora.hub`` (local folder, embedded asset, Hub repo). An adapter folder is a PEFT adapter
(LoRA, DoRA, HoRA, DoRAN) or a run of the training engine: a PEFT adapter trained for a new label set
(``metrics.json`` names the labels) or a head-only run (``head_config.json`` + ``head.safetensors``). The engine
(``hora.train``, ``hora.runs``), the CLI and the app all load through here.

Only safetensors are read and no repository's own code runs; an adapter is checked against its base
(``hora.validate``) before anything is built from it.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from hora import cards, hub
from hora.hub import HubError
from hora.io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_CONFIG, HEAD_WEIGHTS, METRICS
from hora.models import BaseKind, TaskKind, UnsupportedModelError, base_kind, fit_labels, model_class, new_head


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


def load_base(
    name_or_path_or_repo: str | os.PathLike,
    *,
    revision: str | None = None,
    task: TaskKind | None = None,
    id2label: dict[int, str] | None = None,
    **kw: Any,
) -> LoadedBase:
    """Load a base model (eval mode) and its image processor or tokenizer.

    ``name_or_path_or_repo`` is a local folder, an embedded asset name (``"vit-digits"``, ``"lm-shakespeare"``)
    or a Hub repo id; ``revision`` (branch, tag or commit) applies to Hub repos only. ``task`` builds the model
    for a task other than its own (``"text"``: a causal LM with a sequence-classification head), and ``id2label``
    gives a classifier a fresh head when its labels differ. Extra keyword arguments go to ``from_pretrained``
    (e.g. ``dtype=torch.float32``). Only safetensors weights are loaded.
    """
    from transformers import AutoConfig

    kw = _safe_kwargs(dict(kw))
    found = hub.resolve(name_or_path_or_repo, revision=revision)
    if not (found.path / "config.json").is_file():
        hint = " It looks like an adapter: use load_adapter()." if hub.is_adapter(found.path) else ""
        raise HubError(f"{found.name} has no config.json, so it is not a transformers model.{hint}")
    if not any(found.path.glob("*.safetensors")):
        raise HubError(
            f"{found.name} has no *.safetensors weights; hora does not load pickled .bin checkpoints. "
            "Convert them once with `model.save_pretrained(folder)` (safetensors is the default)."
        )
    try:
        config = AutoConfig.from_pretrained(found.path, trust_remote_code=False)
        kind = base_kind(config)
        task = task or ("text" if _is_sequence_classifier(config) else kind)
        _check_task(task, kind, config, found.path)
        if task == "text":
            if not id2label and _is_sequence_classifier(config):
                id2label = {int(k): str(v) for k, v in config.id2label.items()}
            if not id2label:
                raise HubError("Text classification needs the label set (id2label) to build its classifier.")
            kw["num_labels"] = len(id2label)
        model = model_class(task, config).from_pretrained(
            found.path, use_safetensors=True, trust_remote_code=False, **kw
        )
        processor = _processor(found.path, task, config)
    except HubError:
        raise
    except UnsupportedModelError as error:
        raise HubError(str(error)) from error
    except (OSError, ValueError, KeyError) as error:
        raise HubError(f"Could not load the model in {found.name}: {type(error).__name__}: {error}") from error
    if task == "text" and not _is_sequence_classifier(config):
        new_head(model, id2label)  # a causal LM has no classifier to keep: draw it from the seeded RNG, as always
        replaced = True
    else:
        replaced = fit_labels(model, id2label)
    if task == "text" and model.config.pad_token_id is None:
        model.config.pad_token_id = processor.pad_token_id
    card = cards.read(found.path)
    return LoadedBase(model.eval(), processor, kind, found.name, found.path, found.source, card, task, replaced)


def run_record(folder: str | os.PathLike) -> dict[str, Any]:
    """What a run of the engine says about itself: ``metrics.json`` ({} for a plain adapter folder)."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubError(f"{Path(folder).name}/{METRICS} is not valid JSON: {error}") from error
    if not isinstance(record, dict):
        raise HubError(f"{Path(folder).name}/{METRICS} must hold a JSON object.")
    return record


def run_labels(folder: str | os.PathLike) -> dict[int, str] | None:
    """The label set a run trained a new classifier for (None: the base's own, or not a classifier)."""
    folder = Path(folder)
    for record in (run_record(folder), _json(folder / HEAD_CONFIG)):
        labels = record.get("id2label")
        if labels:
            if not isinstance(labels, dict):
                raise HubError(f"{folder.name}: id2label must map class indices to names.")
            return {int(k): str(v) for k, v in labels.items()}
    return None


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubError(f"{path.parent.name}/{path.name} is not valid JSON: {error}") from error
    return data if isinstance(data, dict) else {}


def load_adapter(
    base_model: LoadedBase | nn.Module,
    name_or_path_or_repo: str | os.PathLike,
    adapter_name: str = "default",
    *,
    revision: str | None = None,
    **kw: Any,
) -> nn.Module:
    """Load an adapter (LoRA, DoRA, HoRA, DoRAN) onto ``base_model``; returns a ``peft.PeftModel`` in eval mode.

    ``base_model`` is a ``LoadedBase`` or a model; it is adapted in place, as with ``PeftModel.from_pretrained``.
    If it is already a ``PeftModel`` the adapter is added under ``adapter_name`` and made active.
    ``name_or_path_or_repo`` is a local folder, an embedded name (``"vit-digits/hora"``; a bare ``"hora"`` means
    an adapter of the embedded base given) or a Hub repo id. Extra keyword arguments go to
    ``PeftModel.from_pretrained``.

    A run of the engine for a new label set first gets a classifier of that size, which the adapter's saved head
    then fills. A head-only run has no PEFT adapter: it returns the base model itself with the trained head.
    """
    from peft import PeftModel

    import hora  # noqa: F401  (registers HORA and DORAN with PEFT)

    kw = _safe_kwargs(dict(kw))
    model = base_model.model if isinstance(base_model, LoadedBase) else base_model
    name = os.fspath(name_or_path_or_repo)
    if isinstance(base_model, LoadedBase) and "/" not in name and not Path(name).exists():
        scoped = f"{base_model.name}/{name}"
        if scoped in hub.embedded_assets():
            name = scoped
    found = hub.resolve(name, revision=revision)
    if not hub.is_adapter(found.path):
        hint = " It looks like a base model: use load_base()." if (found.path / "config.json").is_file() else ""
        raise HubError(f"{found.name} has no {ADAPTER_CONFIG}, so it is not a PEFT adapter.{hint}")
    _warn_if_other_base(found.path, base_model)
    if not (found.path / ADAPTER_CONFIG).is_file():
        return _load_head(model, found.path)
    if not (found.path / ADAPTER_WEIGHTS).is_file():
        raise HubError(f"{found.name} has no {ADAPTER_WEIGHTS}; hora does not load pickled adapters.")
    if not isinstance(model, PeftModel):
        fit_labels(model, run_labels(found.path))
        # Adapters from the Hub or a folder are untrusted: check method, targets and shapes before building.
        from hora.validate import AdapterError, check_adapter

        try:
            check_adapter(model, found.path)
        except AdapterError as error:
            raise HubError(f"{name}: {error}") from error
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(found.path, adapter_name=adapter_name, is_trainable=False, **kw)
            model.set_adapter(adapter_name)
            peft_model = model
        else:
            peft_model = PeftModel.from_pretrained(model, found.path, adapter_name=adapter_name, **kw)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise HubError(
            f"Could not load the adapter in {found.name} onto this base model: {type(error).__name__}: {error}"
        ) from error
    return peft_model.eval()


def _load_head(model: nn.Module, folder: Path) -> nn.Module:
    """A head-only run of the engine: the base model with its trained classifier (no PEFT adapter)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    if isinstance(model, PeftModel):
        raise HubError(f"{folder.name} is a head-only run: load it onto a plain base model, not a PeftModel.")
    head = _json(folder / HEAD_CONFIG)
    weights = folder / HEAD_WEIGHTS
    if head.get("format") != "hora-head" or not weights.is_file():
        raise HubError(f"{folder.name} is not a head-only run of hora.train ({HEAD_CONFIG} + {HEAD_WEIGHTS}).")
    fit_labels(model, run_labels(folder))
    tensors = load_file(os.fspath(weights))
    state = model.state_dict()  # tied weights (an LM head) too
    wrong = [k for k, v in tensors.items() if k not in state or state[k].shape != v.shape]
    if wrong:
        raise HubError(f"The head in {folder.name} does not fit this base model: {', '.join(wrong)}.")
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def _warn_if_other_base(adapter_path: Path, base_model: LoadedBase | nn.Module) -> None:
    """Warn when an embedded adapter names a different embedded base than the one it is loaded onto."""
    if not isinstance(base_model, LoadedBase) or base_model.source != "embedded":
        return
    record = _json(adapter_path / ADAPTER_CONFIG) or _json(adapter_path / HEAD_CONFIG)
    expected = record.get("base_model_name_or_path") or record.get("base_model")
    if expected in hub.embedded_assets() and expected != base_model.name:
        warnings.warn(
            f"Adapter {adapter_path.name!r} was trained on {expected!r}, not on {base_model.name!r}.", stacklevel=3
        )


__all__ = ["LoadedBase", "default_image_processor", "load_adapter", "load_base", "run_labels", "run_record"]
