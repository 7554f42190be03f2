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


# ---------------------------------------------------------------------------------------------------------------
# A warm start: the page is built before the models load


def _embedded_assets(root: Path) -> Path:
    import peft
    from helpers import save_gpt2, save_vit, tiny_gpt2, tiny_vit

    import hora

    save_vit(root / "tiny-vit")
    lora = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(tiny_vit(), lora).save_pretrained(root / "tiny-vit" / "adapters" / "lora")
    save_gpt2(root / "tiny-gpt2")
    config = hora.HoraConfig(r=2, hyper_hidden=4, target_modules=["c_attn"], init_weights=False)
    peft.get_peft_model(tiny_gpt2(), config).save_pretrained(root / "tiny-gpt2" / "adapters" / "hora")
    return root


def _loaded(models: store.ModelStore) -> list[str]:
    return [f"{b.name}/{v.name}" for b in models.bases.values() for v in b.variants.values() if store.is_loaded(v)]


def test_a_warm_start_builds_its_page_before_loading_a_model(tmp_path, monkeypatch):
    import torch
    from helpers import example_inputs, output_tensor

    from app.main import build_app

    monkeypatch.setenv("HORA_ASSETS", str(_embedded_assets(tmp_path / "assets")))
    monkeypatch.setenv("HORA_CACHE", str(tmp_path / "cache"))
    first = store.embedded_store(lazy=True)  # the first start: nothing remembered, everything loads now
    every = ["tiny-gpt2/base", "tiny-gpt2/HoRA", "tiny-vit/base", "tiny-vit/LoRA"]
    assert _loaded(first) == every
    build_app(first)  # draws and remembers the first paints

    warm = store.embedded_store(lazy=True)
    assert _loaded(warm) == []
    for name, base in warm.bases.items():
        assert base.summary == store.summarise(first.bases[name].model)
        for shown, variant in base.variants.items():
            assert variant.summary == store.summarise(first.bases[name].variants[shown].model)
    build_app(warm)
    assert _loaded(warm) == []  # every tab's first paint came from what the first start remembered

    warm.load_all()
    assert _loaded(warm) == every
    inputs = example_inputs("vit")
    with torch.no_grad():
        for shown in ("base", "LoRA"):
            expected = output_tensor(first.bases["tiny-vit"].variants[shown].model(**inputs))
            assert torch.equal(output_tensor(warm.bases["tiny-vit"].variants[shown].model(**inputs)), expected)


def test_a_model_asked_for_by_two_threads_loads_once():
    import threading

    calls = []

    def make():
        calls.append(1)
        time.sleep(0.2)  # long enough for the other thread to ask meanwhile
        return object()

    lazy = store.Lazy(make)
    found = []
    threads = [threading.Thread(target=lambda: found.append(lazy.get())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and found[0] is found[1] and lazy.ready
