"""app/store.py: the explorer's models (variants over shared base weights) and visitors' session folders, which
never outlive their session or the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import tiny_store

from app import store
from app.store import SessionModels


ROOT = Path(__file__).resolve().parents[1]


def test_adapter_variants_share_the_bases_weights():
    tiny = tiny_store()
    base = tiny.bases["tiny-llama"]
    copy = base.fresh_copy()
    assert copy is not base.model
    assert all(a is b for a, b in zip(copy.parameters(), base.model.parameters()))


def test_session_folders_carry_the_servers_pid_and_go_at_shutdown(tmp_path, monkeypatch):
    monkeypatch.setattr(store.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(store, "_LIVE_FOLDERS", set())  # other tests' sessions in this process are not ours to count
    sessions = [SessionModels(), SessionModels()]
    folders = [s.folder() for s in sessions]
    assert all(f.name.startswith(f"hora-session-{os.getpid()}-") and f.is_dir() for f in folders)
    sessions[0].close()
    assert not folders[0].exists()
    assert store.delete_session_folders() == 1 and not folders[1].exists()


def test_folders_of_a_dead_server_are_deleted_at_the_next_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"hora-session-{dead.pid}-abc"
    mine = tmp_path / f"hora-session-{os.getpid()}-abc"
    other = tmp_path / "unrelated"
    for folder in (stale, mine, other):
        folder.mkdir()
    assert store.delete_stale_session_folders(tmp_path) == 1
    assert not stale.exists() and mine.exists() and other.exists()


def test_a_terminated_server_deletes_its_session_folders(tmp_path):
    script = (
        "import sys, time, tempfile; tempfile.tempdir = sys.argv[1]; sys.argv = sys.argv[:1]\n"
        "import atexit, signal\n"
        "from app.store import SessionModels, delete_session_folders\n"
        "atexit.register(delete_session_folders); signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print(SessionModels().folder(), flush=True); time.sleep(60)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    folder = Path(server.stdout.readline().strip())
    assert folder.is_dir()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    deadline = time.monotonic() + 5
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists()
