"""hora.jobs: several runs in turn, streamed step by step, stoppable, with failures reported to the caller."""

from __future__ import annotations

import threading

import pytest
from helpers import save_vit, write_image_folder

from hora import jobs
from hora.data import load_data
from hora.train import TrainConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
FAST = {"shots": 3, "lr": 1e-2, "batch_size": 6, "eval_every": 2, "r": 4, "hyper_hidden": 8}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    return save_vit(root / "vit"), load_data(write_image_folder(root / "data"))


def test_runs_stream_every_step_then_their_result(setup, tmp_path):
    base, data = setup
    configs = [TrainConfig(method="lora", steps=3, **FAST), TrainConfig(method="hora", steps=2, **FAST)]
    cancel = threading.Event()
    updates = list(jobs.train_in_turn(base, data, configs, out_root=tmp_path, cancel=cancel))
    assert [(u.index, u.event.step if u.event else "done") for u in updates] == [
        (0, 1), (0, 2), (0, 3), (0, "done"), (1, 1), (1, 2), (1, "done"),
    ]  # fmt: skip
    assert updates[3].result.stopped == "completed" and (tmp_path / "adapter-hora" / "metrics.json").is_file()
    assert updates[2].progress == 1.0 and cancel.is_set()  # the job leaves no worker behind


def test_cancel_keeps_what_was_trained_and_starts_nothing_more(setup, tmp_path):
    base, data = setup
    configs = [TrainConfig(method="lora", steps=50, **FAST), TrainConfig(method="hora", steps=50, **FAST)]
    cancel = threading.Event()
    updates = []
    for update in jobs.train_in_turn(base, data, configs, out_root=tmp_path, cancel=cancel):
        updates.append(update)
        if update.event is not None and update.event.step == 2:
            cancel.set()
    results = [u.result for u in updates if u.result is not None]
    assert len(results) == 1 and results[0].stopped == "cancelled" and results[0].metrics["steps_done"] <= 3
    assert {u.method for u in updates} == {"lora"}


def test_the_budget_stops_the_job(setup, tmp_path):
    base, data = setup
    configs = [TrainConfig(method="lora", steps=500, **FAST)]
    updates = list(
        jobs.train_in_turn(base, data, configs, out_root=tmp_path, cancel=threading.Event(), budget_seconds=0)
    )
    assert updates[-1].result.stopped == "cancelled" and updates[-1].result.metrics["steps_done"] < 500


def test_a_failure_is_reported_and_the_next_run_goes_on(setup, tmp_path, monkeypatch):
    base, data = setup
    real, calls = jobs.train, []

    def fails_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "train", fails_first)
    configs = [TrainConfig(method="lora", steps=2, **FAST), TrainConfig(method="hora", steps=2, **FAST)]
    updates = list(jobs.train_in_turn(base, data, configs, out_root=tmp_path, cancel=threading.Event()))
    assert str(updates[0].error) == "disk on fire" and updates[-1].result.stopped == "completed"
