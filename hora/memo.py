"""Results remembered on disk, keyed by everything they depend on: what a server computes at every start (the
explorer's first paint) is computed once per set of weights and code, then read back in milliseconds.

A value lives in ``<cache>/memo/<kind>/<digest>.json`` (the cache of ``hora.packaged.cache_root``) beside the key it
was computed for; it is returned only when that key is equal, so a changed weight file, prompt, library version or
line of hora's code gives a fresh computation, never a stale answer. Keys must name every input that matters: the
callers build them from ``fingerprint`` (files) and ``environment`` (code).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from hora.io import write_atomic


T = TypeVar("T")
logger = logging.getLogger(__name__)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def memo_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where remembered results live: ``<cache>/memo``."""
    from hora.packaged import cache_root

    return (Path(cache_dir) if cache_dir is not None else cache_root()) / "memo"


def _entry(kind: str, key: Any, cache_dir: str | os.PathLike | None) -> tuple[Path, str]:
    if not kind.replace("-", "").isalnum():
        raise ValueError(f"kind must be letters, digits and dashes, not {kind!r}")
    canonical = json.dumps(key, sort_keys=True)
    return memo_dir(cache_dir) / kind / f"{_digest(canonical)[:32]}.json", canonical


def recall(kind: str, key: Any, *, cache_dir: str | os.PathLike | None = None) -> Any | None:
    """What ``remember`` stored for an equal ``key``, or None (never stored, another key, or a damaged entry)."""
    path, canonical = _entry(kind, key, cache_dir)
    with contextlib.suppress(OSError, ValueError):
        entry = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(entry, dict) and json.dumps(entry.get("key"), sort_keys=True) == canonical:
            return entry["value"]
    return None


def remember(kind: str, key: Any, value: Any, *, cache_dir: str | os.PathLike | None = None) -> None:
    """Store ``value`` (JSON) under ``key``; a cache that cannot be written (a read-only disk) is only logged."""
    path, _ = _entry(kind, key, cache_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"key": key, "value": value}))
        _keep_newest(path.parent, KEEP)
    except OSError as error:  # still correct, only slower next time
        logger.warning("could not remember %s in %s: %s", kind, path.parent, error)


def remembered(
    kind: str,
    key: Any,
    compute: Callable[[], T],
    *,
    cache_dir: str | os.PathLike | None = None,
) -> T:
    """``compute()``, or the value it returned before for an equal ``key`` (JSON: dicts, lists, strings, numbers).

    ``kind`` names the computation (a folder). A damaged entry or a cache that cannot be written only costs a
    recomputation.
    """
    found = recall(kind, key, cache_dir=cache_dir)
    if found is not None:
        return found
    value = compute()
    remember(kind, key, value, cache_dir=cache_dir)
    return value


KEEP = 64
"""Entries kept per kind: older ones (of weights or code since replaced) are deleted when a new one is written."""


def _keep_newest(folder: Path, keep: int) -> None:
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for stale in entries[keep:]:
        stale.unlink(missing_ok=True)


def fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """A digest of the files under ``paths`` (files or folders, recursively): their names relative to each path and
    their bytes. Any change to any file changes it."""
    digest = hashlib.sha256()
    for root in map(Path, paths):
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            digest.update(f"{path.relative_to(root) if root.is_dir() else path.name}\0".encode())
            with open(path, "rb") as handle:
                for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()


@cache
def environment() -> dict[str, str]:
    """The code a result depends on: the versions of torch, transformers and peft, and a digest of hora's own source
    (so that editing hora invalidates what it computed)."""
    import peft
    import torch
    import transformers

    source = Path(__file__).resolve().parent
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "hora": fingerprint(sorted(source.rglob("*.py"))),
    }


__all__ = ["environment", "fingerprint", "memo_dir", "recall", "remember", "remembered"]
