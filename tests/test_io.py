"""Atomic saves survive SIGKILL: a save killed while writing, or between its two renames, never costs the adapter
that was there before, and the leftovers are hidden, then cleaned by the next save or ``hora.io.recover``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import peft
import pytest
import torch
from helpers import char_tokenizer, tiny_gpt2
from transformers import GPT2LMHeadModel

from hora.io import atomic_dir, recover
from hora.train import TrainConfig, train


TESTS = Path(__file__).resolve().parent
CONFIG = {"shots": None, "steps": 2, "lr": 1e-2, "batch_size": 4, "context": 32, "r": 4, "hyper_hidden": 8}
IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    tiny_gpt2().save_pretrained(root / "gpt2")
    char_tokenizer().save_pretrained(root / "gpt2")
    (root / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 24)
    return root / "gpt2", root / "corpus.txt"


def logits_of(base: Path, adapter: Path) -> torch.Tensor:
    """The adapter as any PEFT user would load it: a fresh base plus ``PeftModel.from_pretrained``."""
    model = peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), adapter).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def start(script: str, *args: str | os.PathLike) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], env=env)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the saver exited early with code {process.returncode}"
        assert time.monotonic() < deadline, "the saver never got to the point where it is killed"
        time.sleep(0.05)


def siblings(out: Path, prefix: str) -> list[Path]:
    return sorted(out.parent.glob(f"{prefix}-{out.name}-*"))


# The real save path: hora.train.train -> hora.runs.save_run -> atomic_dir. The card is written last, after the adapter's
# weights and metrics.json, so a card writer that announces itself and hangs is a save stopped midway.
KILLED_WHILE_WRITING = """
    import pathlib, sys, time
    import hora.runs as runs
    import hora.train as t
    base, data, out, ready = sys.argv[1:]

    def hang(metrics):
        pathlib.Path(ready).write_text("half of the new adapter is on disk")
        time.sleep(600)

    runs.model_card = hang
    config = t.TrainConfig(method="hora", shots=None, steps=2, lr=1e-2, batch_size=4, context=32, r=4, hyper_hidden=8)
    t.train(base, data, config, out_dir=out)
"""


def test_a_save_killed_midway_keeps_the_old_adapter(lm_setup, tmp_path):
    base, corpus = lm_setup
    out = tmp_path / "run"
    train(base, corpus, TrainConfig(method="lora", **CONFIG), out_dir=out)
    files, before = sorted(p.name for p in out.iterdir()), logits_of(base, out)

    saver = start(KILLED_WHILE_WRITING, base, corpus, out, tmp_path / "ready")
    try:
        wait_for(tmp_path / "ready", saver)
        [partial] = siblings(out, ".tmp")  # the new adapter, half written, beside the old one
        assert {"adapter_model.safetensors", "metrics.json"} <= {p.name for p in partial.iterdir()}
        os.kill(saver.pid, signal.SIGKILL)
    finally:
        saver.kill()
        saver.wait(timeout=30)
    assert saver.returncode == -signal.SIGKILL

    # the folder is untouched: same files, same method, same outputs through plain PEFT
    assert sorted(p.name for p in out.iterdir()) == files
    assert json.loads((out / "metrics.json").read_text())["method"] == "lora"
    torch.testing.assert_close(logits_of(base, out), before, rtol=0, atol=0)
    # the half-written folder is a hidden sibling, never the adapter; recover deletes it (its writer is dead)
    assert partial.name.startswith(".") and partial.exists()
    assert recover(out) == out.resolve()
    assert not siblings(out, ".tmp") and sorted(p.name for p in out.iterdir()) == files


# atomic_dir moves the old folder aside, then renames the new one into place; die right between the two
KILLED_BETWEEN_RENAMES = """
    import os, signal, sys
    import peft
    from helpers import tiny_gpt2
    from hora.io import atomic_dir

    out = sys.argv[1]
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)

    config = peft.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False)
    model = peft.get_peft_model(tiny_gpt2(seed=1), config)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        os.replace = replace_then_die
"""


@pytest.mark.parametrize("repair", ["recover", "next_save"])
def test_a_kill_between_the_two_renames_is_recovered(lm_setup, tmp_path, repair):
    base, _ = lm_setup
    out = tmp_path / "adapter"
    config = peft.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False)
    with atomic_dir(out) as tmp:
        peft.get_peft_model(tiny_gpt2(), config).save_pretrained(tmp)
    files, before = sorted(p.name for p in out.iterdir()), logits_of(base, out)

    saver = start(KILLED_BETWEEN_RENAMES, out)
    saver.wait(timeout=120)
    assert saver.returncode == -signal.SIGKILL
    assert not out.exists()  # the gap: the old adapter sits aside, the new one was never renamed in
    assert [p.name for p in siblings(out, ".old")] == [f".old-adapter-{saver.pid}"]
    assert len(siblings(out, ".tmp")) == 1

    if repair == "recover":  # what a loader calls before reading the folder
        recover(out)
    else:  # the next save to the folder repairs it first; this one fails, so the old adapter must stay
        with pytest.raises(RuntimeError, match="disk full"), atomic_dir(out) as tmp:
            (tmp / "adapter_config.json").write_text("{}")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in out.iterdir()) == files
    torch.testing.assert_close(logits_of(base, out), before, rtol=0, atol=0)
    assert not siblings(out, ".old") and not siblings(out, ".tmp")


def test_recover_leaves_live_writers_alone(tmp_path):
    out = tmp_path / "adapter"
    live = os.getppid()  # a process that is certainly running, and not this one
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    for name in (f".tmp-adapter-{live}-abc123", f".old-adapter-{live}", f".tmp-adapter-{dead}-abc123"):
        (tmp_path / name).mkdir()
    (tmp_path / ".tmp-adapter-x-1-abc123").mkdir()  # another folder's ("adapter-x") leftovers: not ours to judge
    recover(out)
    assert not out.exists()  # a live writer's .old is mid-swap: that writer will finish the rename
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".old-adapter-{live}", f".tmp-adapter-{live}-abc123", ".tmp-adapter-x-1-abc123"]
    )
