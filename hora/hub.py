"""Load base models and adapters by name: an embedded asset, a local folder or a Hugging Face Hub repo.

    >>> from hora.hub import load_base, load_adapter
    >>> base = load_base("vit-digits")                  # embedded in the repository's assets/ folder
    >>> model = load_adapter(base, "vit-digits/hora")   # a peft.PeftModel (HoRA is registered by hora)

A name resolves, in this order, to

1. a local folder (any path that exists);
2. an embedded asset: ``"vit-digits"`` is ``assets/vit-digits``, ``"vit-digits/hora"`` is
   ``assets/vit-digits/adapters/hora`` (``embedded_assets()`` lists them);
3. a Hub repo id (``"org/name"``), fetched with ``huggingface_hub.snapshot_download`` into the usual cache.
   ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_ENDPOINT`` are read at call time, so they can be set after import.

Only safetensors weights, JSON configs, tokenizer files and text cards are fetched or read: never ``.bin``
pickles, never ``trust_remote_code``. Anything that cannot be resolved raises ``HubError`` (a ``ValueError``)
whose message says what was tried and how to fix it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn


ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.txt", "*.model"]
"""Files fetched from the Hub: configs, safetensors weights, tokenizer files (json, txt, sentencepiece), cards."""

HEAD_CONFIG = "head_config.json"  # hora.train's head-only runs: head.safetensors + this
RUN_METRICS = "metrics.json"  # hora.train's record of a run, with the label set of a new classifier

_EMBEDDED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

Kind = Literal["image", "lm"]


class HubError(ValueError):
    """A model or adapter could not be found, fetched or loaded; the message says how to fix it."""


@dataclass
class LoadedBase:
    """A base model ready for inference, with what is needed to feed it.

    ``processor`` is the image processor (``kind == "image"``) or the tokenizer (``kind == "lm"``);
    ``card`` is the YAML front matter of the folder's ``README.md`` (empty when there is none).
    """

    model: nn.Module
    processor: Any
    kind: Kind
    name: str
    path: Path
    source: Literal["embedded", "local", "hub"]
    card: dict = field(default_factory=dict)


@dataclass
class Resolved:
    """Where a name was found."""

    path: Path
    name: str
    source: Literal["embedded", "local", "hub"]


def assets_dir() -> Path:
    """The embedded assets folder: ``$HORA_ASSETS`` if set, else ``assets/`` at the repository root."""
    override = os.environ.get("HORA_ASSETS")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "assets"


def embedded_assets(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Every embedded base (``"vit-digits"``) and adapter (``"vit-digits/hora"``) with its folder."""
    root = Path(root) if root is not None else assets_dir()
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for base in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        found[base.name] = base
        adapters = base / "adapters"
        if adapters.is_dir():
            for adapter in sorted(p for p in adapters.iterdir() if _is_adapter(p)):
                found[f"{base.name}/{adapter.name}"] = adapter
    return found


def _is_adapter(folder: Path) -> bool:
    """A PEFT adapter folder, or a head-only run of ``hora.train`` (``head_config.json``)."""
    return (folder / "adapter_config.json").is_file() or (folder / HEAD_CONFIG).is_file()


def read_card(folder: str | os.PathLike) -> dict:
    """The YAML front matter of ``folder/README.md`` as a dict ({} without a card or front matter)."""
    import yaml

    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8")
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, flags=re.DOTALL)
    if not match:
        return {}
    data = yaml.safe_load(match.group(1))
    return data if isinstance(data, dict) else {}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_cache_dir() -> str | None:
    """The Hub cache as the environment says now (huggingface_hub itself reads it only at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default


def _embedded_hint() -> str:
    names = list(embedded_assets())
    return f"Embedded assets: {', '.join(names)}." if names else f"No embedded assets found under {assets_dir()}."


def _download(repo_id: str, revision: str | None) -> Path:
    """``snapshot_download`` with safe patterns; every failure becomes a ``HubError`` with a fix."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or constants.HF_HUB_OFFLINE
    cache = _hub_cache_dir()
    where = f"the Hub cache ({cache or constants.HF_HUB_CACHE})"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=ALLOW_PATTERNS,
            cache_dir=cache,
            local_files_only=offline,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except LocalEntryNotFoundError as error:
        state = (
            "HF_HUB_OFFLINE is set, so only the local cache was searched"
            if offline
            else "the Hugging Face Hub is unreachable (no network?)"
        )
        raise HubError(
            f"Cannot load {repo_id!r}{f' at revision {revision!r}' if revision else ''}: {state}, and it is not in "
            f"{where}. Fix: pass a local folder or an embedded asset name, download the repo once while online "
            f"(`hf download {repo_id}`), or point HF_HUB_CACHE at a cache that holds it. {_embedded_hint()}"
        ) from error
    except RevisionNotFoundError as error:
        raise HubError(f"The Hub repo {repo_id!r} has no revision {revision!r}.") from error
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise HubError(
            f"No accessible Hub repo {repo_id!r} (missing, private or gated: log in with `hf auth login` if it is "
            f"yours). {_embedded_hint()}"
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise HubError(f"Could not fetch {repo_id!r} from the Hub ({type(error).__name__}: {error}).") from error
    return Path(folder)


def resolve(name_or_path_or_repo: str | os.PathLike, *, revision: str | None = None) -> Resolved:
    """Find a local folder, an embedded asset or a Hub snapshot for ``name_or_path_or_repo``."""
    text = os.fspath(name_or_path_or_repo)
    path = Path(text).expanduser()
    if path.is_dir():
        return Resolved(path.resolve(), path.name, "local")
    embedded = embedded_assets()
    if text in embedded:
        return Resolved(embedded[text], text, "embedded")
    if not _EMBEDDED_NAME.match(text) or path.exists():
        raise HubError(
            f"{text!r} is neither a folder, an embedded asset nor a Hub repo id (org/name). {_embedded_hint()}"
        )
    return Resolved(_download(text, revision), text, "hub")


def _safe_kwargs(kw: dict) -> dict:
    if kw.pop("trust_remote_code", False):
        raise HubError("hora never runs a repository's own code: trust_remote_code=True is not supported.")
    kw.pop("use_safetensors", None)
    return kw


def _kind(config) -> Kind:
    architectures = getattr(config, "architectures", None) or []
    arch = architectures[0] if architectures else ""
    if arch.endswith("ForImageClassification"):
        return "image"
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return "lm"
    raise HubError(
        f"Unsupported architecture {arch or '(none in config.json)'}: hora loads image classifiers "
        "(*ForImageClassification) and causal language models (*ForCausalLM, *LMHeadModel)."
    )


def load_base(name_or_path_or_repo: str | os.PathLike, *, revision: str | None = None, **kw) -> LoadedBase:
    """Load a base model (eval mode) and its image processor or tokenizer.

    ``name_or_path_or_repo`` is a local folder, an embedded asset name (``"vit-digits"``,
    ``"lm-shakespeare"``) or a Hub repo id; ``revision`` (branch, tag or commit) applies to Hub repos only.
    Extra keyword arguments go to ``from_pretrained`` (e.g. ``dtype=torch.bfloat16``). The Auto class is
    picked from ``config.architectures``; only safetensors weights are loaded.
    """
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoTokenizer,
    )

    kw = _safe_kwargs(dict(kw))
    found = resolve(name_or_path_or_repo, revision=revision)
    if not (found.path / "config.json").is_file():
        hint = " It looks like an adapter: use load_adapter()." if _is_adapter(found.path) else ""
        raise HubError(f"{found.path} has no config.json, so it is not a transformers model.{hint}")
    if not any(found.path.glob("*.safetensors")):
        raise HubError(
            f"{found.path} has no *.safetensors weights; hora does not load pickled .bin checkpoints. "
            "Convert them once with `model.save_pretrained(folder)` (safetensors is the default)."
        )
    try:
        config = AutoConfig.from_pretrained(found.path, trust_remote_code=False)
        kind = _kind(config)
        auto = AutoModelForImageClassification if kind == "image" else AutoModelForCausalLM
        model = auto.from_pretrained(found.path, use_safetensors=True, trust_remote_code=False, **kw)
        if kind == "image":
            # PIL backend: the same pixels with or without torchvision, as the builder trained on.
            processor = AutoImageProcessor.from_pretrained(found.path, backend="pil")
        else:
            processor = AutoTokenizer.from_pretrained(found.path, trust_remote_code=False)
    except HubError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise HubError(f"Could not load the model in {found.path}: {type(error).__name__}: {error}") from error
    return LoadedBase(model.eval(), processor, kind, found.name, found.path, found.source, read_card(found.path))


def load_adapter(
    base_model: LoadedBase | nn.Module,
    name_or_path_or_repo: str | os.PathLike,
    adapter_name: str = "default",
    *,
    revision: str | None = None,
    **kw,
):
    """Load an adapter (LoRA, DoRA, HoRA, DoRAN) onto ``base_model``; returns a ``peft.PeftModel`` in eval mode.

    ``base_model`` is a ``LoadedBase`` or a model; it is adapted in place, as with ``PeftModel.from_pretrained``.
    If it is already a ``PeftModel`` the adapter is added under ``adapter_name`` and made active.
    ``name_or_path_or_repo`` is a local folder, an embedded name (``"vit-digits/hora"``; a bare ``"hora"``
    means an adapter of the embedded base given) or a Hub repo id. Extra keyword arguments go to
    ``PeftModel.from_pretrained``.

    An adapter trained by ``hora.train`` for a new label set (its ``metrics.json`` says which) first gets a
    classifier of that size, which the adapter's saved head then fills. A head-only run (``head_config.json``,
    ``head.safetensors``) has no PEFT adapter: it returns the base model itself with the trained head.
    """
    from peft import PeftModel

    import hora  # noqa: F401  (registers HORA and DORAN with PEFT)

    kw = _safe_kwargs(dict(kw))
    model = base_model.model if isinstance(base_model, LoadedBase) else base_model
    name = os.fspath(name_or_path_or_repo)
    if isinstance(base_model, LoadedBase) and "/" not in name and not Path(name).exists():
        scoped = f"{base_model.name}/{name}"
        if scoped in embedded_assets():
            name = scoped
    found = resolve(name, revision=revision)
    if not _is_adapter(found.path):
        hint = " It looks like a base model: use load_base()." if (found.path / "config.json").is_file() else ""
        raise HubError(f"{found.path} has no adapter_config.json, so it is not a PEFT adapter.{hint}")
    _warn_if_other_base(found.path, base_model)
    if not (found.path / "adapter_config.json").is_file():
        return _load_head(model, found.path)
    if not (found.path / "adapter_model.safetensors").is_file():
        raise HubError(f"{found.path} has no adapter_model.safetensors; hora does not load pickled adapters.")
    if not isinstance(model, PeftModel):
        _fit_classifier(model, _run_labels(found.path))
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
            f"Could not load the adapter in {found.path} onto this base model: {type(error).__name__}: {error}"
        ) from error
    return peft_model.eval()


def _run_labels(folder: Path) -> dict[int, str] | None:
    """The label set a ``hora.train`` run trained a new classifier for (None: the base's own, or not a classifier)."""
    for file in (RUN_METRICS, HEAD_CONFIG):
        path = folder / file
        if path.is_file():
            labels = json.loads(path.read_text(encoding="utf-8")).get("id2label")
            if labels:
                return {int(k): str(v) for k, v in labels.items()}
    return None


def _fit_classifier(model: nn.Module, id2label: dict[int, str] | None) -> None:
    """Give a classifier a fresh head for ``id2label`` when its own labels differ (the adapter fills it)."""
    config = getattr(model, "config", None)
    if id2label is None or config is None or not type(model).__name__.endswith("Classification"):
        return
    current = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    if current != id2label:
        from hora.train import new_head

        new_head(model, id2label)


def _load_head(model: nn.Module, folder: Path) -> nn.Module:
    """A head-only run of ``hora.train``: the base model with its trained classifier (no PEFT adapter)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    if isinstance(model, PeftModel):
        raise HubError(f"{folder.name} is a head-only run: load it onto a plain base model, not a PeftModel.")
    head = json.loads((folder / HEAD_CONFIG).read_text(encoding="utf-8"))
    weights = folder / "head.safetensors"
    if head.get("format") != "hora-head" or not weights.is_file():
        raise HubError(f"{folder} is not a head-only run of hora.train (head_config.json + head.safetensors).")
    _fit_classifier(model, _run_labels(folder))
    tensors = load_file(os.fspath(weights))
    params = dict(model.named_parameters())
    wrong = [k for k, v in tensors.items() if k not in params or params[k].shape != v.shape]
    if wrong:
        raise HubError(f"The head in {folder} does not fit this base model: {', '.join(wrong)}.")
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def _warn_if_other_base(adapter_path: Path, base_model: LoadedBase | nn.Module) -> None:
    """Warn when an embedded adapter names a different embedded base than the one it is loaded onto."""
    if not isinstance(base_model, LoadedBase) or base_model.source != "embedded":
        return
    if (adapter_path / "adapter_config.json").is_file():
        expected = json.loads((adapter_path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    else:
        expected = json.loads((adapter_path / HEAD_CONFIG).read_text()).get("base_model")
    if expected in embedded_assets() and expected != base_model.name:
        import warnings

        warnings.warn(
            f"Adapter {adapter_path.name!r} was trained on {expected!r}, not on {base_model.name!r}.", stacklevel=3
        )


__all__ = [
    "ALLOW_PATTERNS",
    "HubError",
    "LoadedBase",
    "Resolved",
    "assets_dir",
    "embedded_assets",
    "load_adapter",
    "load_base",
    "read_card",
    "resolve",
]
