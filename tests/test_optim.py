"""hora.optim: the schedule, clipping and seeded batches the engine and the asset builder share."""

from __future__ import annotations

import math
import threading
from itertools import islice

import pytest
import torch

import hora.optim
from hora.optim import (
    Snapshot,
    clip_gradients,
    compile_model,
    cosine_schedule,
    count_tokens,
    is_cancelled,
    seeded_batches,
)


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    lrs = [cosine_schedule(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # non-increasing after warm-up
    floored = [cosine_schedule(s, 100, 2.0, 5, floor=0.1) for s in range(100)]
    assert min(floored) >= 0.2 - 1e-12 and floored[-1] == pytest.approx(
        0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 94 / 95))
    )


def test_clip_gradients_without_an_accelerator():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 3.0)
    assert clip_gradients(None, [p], None) == pytest.approx(6.0)  # the norm, nothing clipped
    assert clip_gradients(None, [p], 1.0) == pytest.approx(6.0) and float(p.grad.norm()) == pytest.approx(1.0)


def test_seeded_batches_are_reproducible_epochs():
    first = list(islice(seeded_batches(5, 2, seed=3), 5))
    assert first == list(islice(seeded_batches(5, 2, seed=3), 5))
    assert sorted(first[0] + first[1] + first[2][:1]) == [0, 1, 2, 3, 4]  # one epoch before any repeat
    assert first != list(islice(seeded_batches(5, 2, seed=4), 5))


def test_snapshot_goes_back():
    p = torch.nn.Parameter(torch.ones(3))
    snap = Snapshot([p])
    with torch.no_grad():
        p.mul_(5)
    snap.restore()
    assert torch.equal(p, torch.ones(3))


def test_small_helpers():
    event = threading.Event()
    assert not is_cancelled(event) and not is_cancelled(None) and is_cancelled(lambda: True)
    event.set()
    assert is_cancelled(event)
    assert count_tokens({"input_ids": torch.zeros(2, 5), "attention_mask": torch.tensor([[1, 1, 0, 0, 0]] * 2)}) == 4
    assert count_tokens({"input_ids": torch.zeros(2, 5)}) == 10 and count_tokens({"pixel_values": torch.zeros(1)}) == 0


def test_compile_model_shares_the_parameters(monkeypatch):
    """What the training step calls when compiled: the same parameters (the optimiser's), the same outputs."""
    monkeypatch.setattr(hora.optim, "COMPILE_BACKEND", "aot_eager")  # inductor needs a C++ compiler
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    compiled = compile_model(model)
    assert [p for p in compiled.parameters()] == [p for p in model.parameters()]
    x = torch.randn(2, 4)
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    assert all(torch.allclose(g, p.grad) for g, p in zip(grads, model.parameters()))
