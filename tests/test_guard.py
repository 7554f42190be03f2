"""app.guard: who a visitor is, per-visitor and per-lane limits of runs, and the training budget, then the recipe
wired into a small Gradio app (the real app's wiring is the lead's) and driven by gradio_client: one client floods a
training lane while another classifies."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import gradio as gr
import pytest

from app.guard import (
    BudgetSpentError,
    FairShare,
    FairShareError,
    LaneFullError,
    Pending,
    TooManyRunsError,
    TrainingBudget,
    client_ip,
    pending_jobs,
    visitor_id,
)


def request(ip: str | None = "203.0.113.5", forwarded: str | None = None, username=None, session=None, hash="s1"):
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return SimpleNamespace(
        headers=headers, client=SimpleNamespace(host=ip) if ip else None, username=username, session=session,
        session_hash=hash,
    )  # fmt: skip


def test_a_visitor_is_its_ip_hashed_never_its_session():
    a1, a2, b = (
        visitor_id(request(hash="tab-1")),
        visitor_id(request(hash="tab-2")),
        visitor_id(request("198.51.100.9")),
    )
    assert a1 == a2 != b and a1.startswith("ip:") and "203.0.113.5" not in a1


def test_logged_in_users_are_their_name():
    assert visitor_id(request(username="alice")) == "user:alice"
    oauth = {"oauth_info": {"userinfo": {"preferred_username": "bob"}}}
    assert visitor_id(request(session=oauth)) == "user:bob"


def test_forwarded_for_counts_only_behind_a_proxy():
    spoofed = request("10.0.0.2", forwarded="1.2.3.4, 198.51.100.7")  # the client wrote 1.2.3.4; the proxy appended
    assert client_ip(spoofed, proxy_hops=1) == "198.51.100.7"
    assert client_ip(spoofed, proxy_hops=2) == "1.2.3.4"
    assert client_ip(spoofed, proxy_hops=0) == "10.0.0.2"  # no proxy: the header is the client's own words


def test_a_starlette_request_without_session_middleware_works():
    from starlette.requests import Request

    scope = {"type": "http", "headers": [(b"x-forwarded-for", b"192.0.2.1")], "client": ("127.0.0.1", 5000)}
    real = Request(scope)
    with pytest.raises(AssertionError):
        real.session  # noqa: B018 - what the guard must survive
    assert visitor_id(real, proxy_hops=1) == visitor_id(request("192.0.2.1"))
    assert visitor_id(SimpleNamespace(session_hash="abc")) == "session:abc"
    assert visitor_id(None) == "anonymous"


def test_per_visitor_and_per_lane_limits():
    share = FairShare(per_visitor={"training": 1, "inference": 2}, lane_size={"training": 2}, hold=0)
    mine = [Pending("v", "training", True)]
    with pytest.raises(TooManyRunsError, match=r"You already have 1 run queued or running here \(training\)"):
        share.admit("v", "training", mine)
    share.admit("w", "training", mine)  # someone else may
    waiting = [Pending("x", "training", False), Pending("y", "training", False)]
    with pytest.raises(LaneFullError, match="training queue is full"):
        share.admit("w", "training", waiting)
    share.admit("v", "inference", [Pending("v", "inference", True)])
    with pytest.raises(TooManyRunsError, match="2 runs"):
        share.admit("v", "inference", [Pending("v", "inference", True), Pending("v", "inference", False)])
    assert issubclass(TooManyRunsError, ValueError)


def test_a_burst_of_simultaneous_submissions_is_counted_before_it_reaches_the_queue():
    share = FairShare(per_visitor={"training": 1}, hold=60)
    share.admit("v", "training", [])  # the queue is still empty when the second validator runs
    with pytest.raises(TooManyRunsError):
        share.admit("v", "training", [])
    share.admit("w", "training", [])


def test_a_finished_run_does_not_block_the_visitors_next_one():
    now = [0.0]
    share = FairShare(per_visitor={"loading": 1}, hold=0.5, clock=lambda: now[0])
    share.sleep = lambda seconds: now.__setitem__(0, now[0] + seconds)
    share.admit_settled("v", "loading", list)  # ran and finished at once: the queue is empty again
    share.admit_settled("v", "loading", list)  # waited out the hold, then decided from the queue
    assert now[0] == 0.5
    running = [Pending("v", "loading", True)]
    with pytest.raises(TooManyRunsError):  # a run in the queue refuses at once, without waiting
        share.admit_settled("v", "loading", lambda: running)
    assert now[0] == 0.5
    share.admit("w", "loading", [])
    with pytest.raises(TooManyRunsError):  # a burst: the second submission still finds the first's admission
        share.admit_settled("w", "loading", lambda: running[:0] + [Pending("w", "loading", False)])


def test_slot_counts_running_work():
    share = FairShare(per_visitor={"training": 1})
    with share.slot("v", "training"):
        assert share.running("v", "training") == 1
        with pytest.raises(TooManyRunsError):
            with share.slot("v", "training"):
                pass
    assert share.running("v", "training") == 0
    with pytest.raises(RuntimeError), share.slot("v", "training"):
        raise RuntimeError  # the place is given back whatever happens
    assert share.running("v", "training") == 0


def test_pending_jobs_reads_a_gradio_like_queue():
    def event(ip, concurrency_id):
        return SimpleNamespace(request=request(ip), username=None, concurrency_id=concurrency_id)

    queue = SimpleNamespace(
        event_queue_per_concurrency_id={"training": SimpleNamespace(queue=[event("1.1.1.1", "training")])},
        active_jobs=[None, [event("2.2.2.2", "classify")], None],
    )
    found = pending_jobs(queue, lanes={"classify": "inference"})
    assert [(p.lane, p.running) for p in found] == [("training", False), ("inference", True)]
    assert found[0].visitor == visitor_id(request("1.1.1.1"))


def test_the_training_budget_follows_the_visitor_over_a_window():
    now = [0.0]
    budget = TrainingBudget(seconds=100, window=3600, clock=lambda: now[0])
    with budget.running("v") as left:
        assert left == 100
        now[0] += 70
    assert budget.remaining("v") == 30 and budget.remaining("w") == 100
    with pytest.raises(ValueError), budget.running("v"):
        now[0] += 40
        raise ValueError  # a failed run is charged too
    with pytest.raises(BudgetSpentError, match=r"used your 100 s of fine-tuning .* in about 59 min"):
        budget.check("v")
    now[0] += 3600
    assert budget.remaining("v") == 100


# ---------------------------------------------------------------------------------------------------------------
# The recipe in a real Gradio app


@pytest.fixture
def guarded_app(monkeypatch):
    # `gr` is imported at module level: Gradio resolves the validator's `gr.Request` hint in the module's globals
    monkeypatch.setenv("HORA_PROXY_HOPS", "1")  # behind a proxy: X-Forwarded-For tells the visitors apart
    share = FairShare(per_visitor={"training": 1, "inference": 4}, lane_size={"training": 8})
    lanes = {"training": "training", "inference": "inference"}

    def lane_validator(lane: str):
        def validator(request: gr.Request, *inputs):  # Gradio injects the request first, then the inputs
            try:
                share.admit(visitor_id(request), lane, pending_jobs(demo._queue, lanes))
                reason = ""
            except FairShareError as refusal:
                reason = str(refusal)
            return [gr.validate(not reason, reason)] + [gr.validate(True, "")] * (len(inputs) - 1)

        return validator

    def train(text, steps):
        for i in range(int(steps)):
            time.sleep(0.2)
            yield f"step {i}"

    with gr.Blocks() as demo:
        text, steps, out = gr.Textbox(), gr.Number(), gr.Textbox()
        gr.Button().click(
            train, [text, steps], out, api_name="train", concurrency_id="training", concurrency_limit=1,
            validator=lane_validator("training"),
        )  # fmt: skip
        gr.Button().click(
            lambda t: t.upper(), text, out, api_name="classify", concurrency_id="inference", concurrency_limit=4,
            validator=lane_validator("inference"),
        )  # fmt: skip
    demo.queue(max_size=None)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url
    demo.close()


def test_a_flood_of_trainings_is_refused_while_another_visitor_classifies(guarded_app):
    from gradio_client import Client

    flooder = Client(guarded_app, verbose=False, headers={"X-Forwarded-For": "198.51.100.66"})
    polite = Client(guarded_app, verbose=False, headers={"X-Forwarded-For": "198.51.100.7"})
    jobs = [flooder.submit("x", 10, api_name="/train") for _ in range(12)]  # all at once, none awaited
    outcomes = []
    for job in jobs:
        try:
            job.result(timeout=60)
            outcomes.append("ran")
        except Exception as error:  # the refusals: gradio_client's ValidationError
            outcomes.append("refused" if "You already have" in str(error) else repr(error))
    answers = [polite.predict("abc", api_name="/classify") for _ in range(5)]
    assert outcomes.count("ran") == 1 and outcomes.count("refused") == 11, outcomes
    assert answers == ["ABC"] * 5
    threading.Thread(target=flooder.close).start()
    polite.close()
