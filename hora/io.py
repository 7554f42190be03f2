"""Filesystem helpers: the names of the files in a run folder, and atomic folder writes, so that an interrupted
save never leaves half an adapter.

A save writes ``.tmp-<name>-<pid>-<random>`` beside ``<name>``, moves the previous ``<name>`` aside to
``.old-<name>-<pid>``, renames the new folder into place and deletes the old one. A process killed while
writing leaves only a hidden ``.tmp-*`` sibling; one killed between the two renames leaves ``<name>`` missing
and the previous adapter in ``.old-*``. ``recover`` (run by every ``atomic_dir``, and callable by loaders) puts
that adapter back and deletes what dead processes left.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


# The files of a run folder: ``hora.runs`` writes them, ``hora.loaders`` and ``hora.push`` read them.
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's, for every PEFT method
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's
HEAD_CONFIG = "head_config.json"  # a head-only run: which modules the saved head replaces, and its labels
HEAD_WEIGHTS = "head.safetensors"  # a head-only run's tensors
METRICS = "metrics.json"  # the engine's record of a run: config, task, exact split, history, timing
CARD = "README.md"  # the model card

_LOCK = threading.Lock()  # the swap and recover never interleave within this process
_ACTIVE: set[Path] = set()  # this process's temporary folders still being written


def _alive(pid: int) -> bool:
    """Whether another process ``pid`` may still be writing (this process's own folders are judged by the caller)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate it on Windows: never touch another process's folders
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def recover(out_dir: str | os.PathLike) -> Path:
    """Repair what a killed ``atomic_dir`` left beside ``out_dir``; returns ``out_dir`` resolved.

    If ``out_dir`` is missing but a dead process's ``.old-<name>-<pid>`` sibling exists (killed between the two
    renames), that previous folder is renamed back. Stale ``.tmp-*`` and ``.old-*`` siblings of dead processes
    are deleted. Folders of live processes are left alone: they may be mid-save.
    """
    out = Path(out_dir).resolve()
    if not out.parent.is_dir():
        return out
    name = re.escape(out.name)
    tmp_pattern, old_pattern = re.compile(rf"\.tmp-{name}-(\d+)-[a-z0-9_]+"), re.compile(rf"\.old-{name}-(\d+)")
    with _LOCK:  # no swap of this process is in flight while we look, so its own .old-* are stale
        stale_tmp, stale_old = [], []
        for entry in out.parent.iterdir():
            if match := tmp_pattern.fullmatch(entry.name):
                pid = int(match[1])
                mine = pid == os.getpid()
                if (mine and entry not in _ACTIVE) or (not mine and not _alive(pid)):
                    stale_tmp.append(entry)
            elif (match := old_pattern.fullmatch(entry.name)) and (
                int(match[1]) == os.getpid() or not _alive(int(match[1]))
            ):
                stale_old.append(entry)
        if not out.exists() and stale_old:
            newest = max(stale_old, key=lambda p: p.stat().st_mtime)
            os.replace(newest, out)
            stale_old.remove(newest)
        for entry in stale_tmp + stale_old:
            shutil.rmtree(entry, ignore_errors=True)
    return out


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and one rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


@contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; on success it replaces ``out_dir`` in one rename.

    If the body raises, ``out_dir`` keeps whatever it held before and the temporary folder is removed. If the
    process dies, the next ``atomic_dir`` or ``recover`` on the same folder repairs it (see the module docstring);
    until then the leftovers are hidden siblings, never mistaken for an adapter.
    """
    out = recover(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK:  # registered before another thread's recover can see it
        # the pid in the name lets a later recover tell a dead writer's leftovers from a live writer's folder
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-{os.getpid()}-", dir=out.parent))
        _ACTIVE.add(tmp)
    try:
        yield tmp
        old = None
        with _LOCK:
            if out.exists():
                old = out.parent / f".old-{out.name}-{os.getpid()}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out, old)  # a directory cannot be renamed onto a non-empty one: move the old aside
            os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        _ACTIVE.discard(tmp)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
