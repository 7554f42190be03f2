"""Where a model or adapter name points: an embedded asset, a local folder or a Hugging Face Hub repo.

    >>> from hora.hub import resolve
    >>> resolve("vit-digits").path                      # embedded in the repository's assets/ folder
    >>> resolve("org/name").path                        # a Hub snapshot, fetched into the usual cache

``hora.loaders`` builds models from what this module finds. A name resolves, in this order, to

1. a local folder (any path that exists);
2. an embedded asset: ``"vit-digits"`` is ``assets/vit-digits``, ``"vit-digits/hora"`` is
   ``assets/vit-digits/adapters/hora`` (``embedded_assets()`` lists them);
3. a Hub repo id (``"org/name"``), fetched with ``huggingface_hub.snapshot_download`` into the usual cache.
   ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_ENDPOINT`` are read at call time, so they can be set after import.

Only safetensors weights, JSON configs, tokenizer files and text cards are fetched: never ``.bin`` pickles.
Anything that cannot be resolved raises ``HubError`` (a ``ValueError``) whose message says what was tried and how
to fix it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hora.io import ADAPTER_CONFIG, HEAD_CONFIG


ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.txt", "*.model"]
"""Files fetched from the Hub: configs, safetensors weights, tokenizer files (json, txt, sentencepiece), cards."""

_EMBEDDED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class HubError(ValueError):
    """A model or adapter could not be found, fetched or loaded; the message says how to fix it."""


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
            for adapter in sorted(p for p in adapters.iterdir() if is_adapter(p)):
                found[f"{base.name}/{adapter.name}"] = adapter
    return found


def is_adapter(folder: Path) -> bool:
    """A PEFT adapter folder, or a head-only run of ``hora.train`` (``head_config.json``)."""
    return (folder / ADAPTER_CONFIG).is_file() or (folder / HEAD_CONFIG).is_file()


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


def __getattr__(name: str) -> Any:
    # Compatible aliases: the loaders moved to hora.loaders (which imports this module, hence the lazy import).
    if name in ("LoadedBase", "load_adapter", "load_base"):
        from hora import loaders

        return getattr(loaders, name)
    if name == "read_card":
        from hora import cards

        return cards.read
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALLOW_PATTERNS", "HubError", "Resolved", "assets_dir", "embedded_assets", "is_adapter", "resolve"]
