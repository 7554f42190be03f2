"""Fair sharing of a public explorer: who a visitor is, how many runs each may have queued or running per lane,
how full each lane may get, and how many seconds of fine-tuning each visitor may use.

Pure Python (no Gradio components): the app passes Gradio's request and queue objects in, duck-typed.

- ``visitor_id(request)``: the Space's OAuth user (or the app's own login) when there is one, else a salted hash
  of the client's IP address (from ``X-Forwarded-For`` behind a Space's proxy), never the session: a fresh session
  or a second browser tab is the same visitor.
- ``FairShare.admit(visitor, lane, pending)``: refuse a new run when the visitor already has ``per_visitor[lane]``
  runs queued or running in that lane (``TooManyRunsError``: "you already have N runs queued ..."), or when the
  lane already holds ``lane_size[lane]`` waiting runs (``LaneFullError``). ``pending`` is what the queue holds now:
  ``pending_jobs(demo._queue, lanes)`` reads it from Gradio's queue, so nothing can leak when a run is cancelled.
  Call it from the event's ``validator``, which Gradio runs before the run joins the queue.
- ``FairShare.slot(visitor, lane)``: the same per-visitor limit as a context manager around the work itself, for
  calls that do not go through the queue.
- ``TrainingBudget``: training seconds per visitor over a sliding window (default: an hour), charged when a run
  ends (finished, failed or stopped), so a fresh session does not reset it.
- ``check_memory(ceiling)``: refuse a new fine-tune while the server's resident memory is above ``ceiling``
  (``MemoryCeilingError``), so that a run never starts on a server the kernel would then kill.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


class FairShareError(ValueError):
    """A run refused so that other visitors get their turn; the message says why and when to try again."""


class TooManyRunsError(FairShareError):
    """The visitor already has as many runs queued or running in this lane as one visitor may."""


class LaneFullError(FairShareError):
    """The lane's queue is full (every visitor together); the message asks to try again shortly."""


class BudgetSpentError(FairShareError):
    """The visitor has used its training seconds for the current window."""


class MemoryCeilingError(FairShareError):
    """The server holds more memory than it may when a new run starts."""


_SALT = secrets.token_bytes(16)  # per process: the hashes mean nothing outside it and change at every restart


def _proxy_hops() -> int:
    """How many proxies append to ``X-Forwarded-For`` in front of the app: ``HORA_PROXY_HOPS``, else 1 on a
    Space (its proxy), else 0 (the header is the client's own words and is ignored)."""
    try:
        return max(0, int(os.environ["HORA_PROXY_HOPS"]))
    except (KeyError, ValueError):
        return 1 if os.environ.get("SPACE_ID") else 0


def _get(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - starlette raises AssertionError for request.session without its middleware
        return None


def _oauth_user(request: Any) -> str | None:
    """The Hugging Face user logged in through the Space's OAuth (``hf_oauth: true``), if any."""
    session = _get(request, "session")
    info = session.get("oauth_info") if isinstance(session, Mapping) else None
    user = info.get("userinfo") if isinstance(info, Mapping) else None
    name = user.get("preferred_username") if isinstance(user, Mapping) else None
    return str(name) if name else None


def client_ip(request: Any, proxy_hops: int | None = None) -> str | None:
    """The client's IP address: the ``proxy_hops``-th entry from the right of ``X-Forwarded-For`` (each trusted proxy
    appends the address it saw), else the connection's peer."""
    hops = _proxy_hops() if proxy_hops is None else proxy_hops
    headers = _get(request, "headers")
    forwarded = headers.get("x-forwarded-for") if headers is not None and hops > 0 else None
    if forwarded:
        entries = [e.strip() for e in str(forwarded).split(",") if e.strip()]
        if entries:
            return entries[-min(hops, len(entries))]
    client = _get(request, "client")
    host = _get(client, "host") if client is not None else None
    return str(host) if host else None


def visitor_id(request: Any, username: str | None = None, *, proxy_hops: int | None = None) -> str:
    """Who is asking: ``"user:<name>"`` (OAuth or the app's login), else ``"ip:<hash>"`` (the client's IP, salted
    and hashed per process, never stored in clear), else ``"session:<hash>"``, else ``"anonymous"``.

    ``request`` is a ``gr.Request`` or the Starlette request Gradio keeps on a queued event.
    """
    user = username or _get(request, "username") or _oauth_user(request)
    if user:
        return f"user:{user}"
    ip = client_ip(request, proxy_hops)
    if ip:
        return "ip:" + hmac.new(_SALT, ip.encode(), hashlib.sha256).hexdigest()[:16]
    session = _get(request, "session_hash")
    return f"session:{session}" if session else "anonymous"


@dataclass(frozen=True)
class Pending:
    """One run the queue holds: whose, in which lane, and whether it is running or still waiting."""

    visitor: str
    lane: str
    running: bool


def pending_jobs(
    queue: Any, lanes: Mapping[str, str] | None = None, identify: Callable[..., str] = visitor_id
) -> list[Pending]:
    """Every run waiting or running in a Gradio queue (``demo._queue``), with its visitor and lane.

    ``lanes`` maps an event's ``concurrency_id`` to its lane (ids not listed are their own lane). Read from
    Gradio 6's ``Queue``: ``event_queue_per_concurrency_id[id].queue`` (waiting) and ``active_jobs`` (running);
    each event keeps its ``request`` and ``username``.
    """
    lanes = lanes or {}
    found = []

    def add(event: Any, running: bool) -> None:
        concurrency_id = str(_get(event, "concurrency_id"))
        visitor = identify(_get(event, "request"), _get(event, "username"))
        found.append(Pending(visitor, lanes.get(concurrency_id, concurrency_id), running))

    for event_queue in list((_get(queue, "event_queue_per_concurrency_id") or {}).values()):
        for event in list(_get(event_queue, "queue") or []):
            add(event, False)
    for job in list(_get(queue, "active_jobs") or []):
        for event in job or []:
            add(event, True)
    return found


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


@dataclass
class FairShare:
    """Per-visitor limits of runs queued + running per lane (``per_visitor``), and of waiting runs per lane for all
    visitors together (``lane_size``). A lane missing from a map is not limited by it.

    ``admit`` also remembers what it admitted for ``hold`` seconds: Gradio adds a run to its queue only after the
    validator returns, so a burst of simultaneous submissions would otherwise all see an empty queue. A visitor's
    count is the larger of its runs in the queue and its admissions of the last ``hold`` seconds (``admit_settled``
    waits those out when they alone refuse, so that a finished run never blocks the visitor's next one).
    """

    per_visitor: dict[str, int]
    lane_size: dict[str, int] = field(default_factory=dict)
    hold: float = 0.5  # a burst of submissions arrives within milliseconds; a visitor's next click, later
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _admitted: deque = field(default_factory=deque, init=False, repr=False)  # (when, visitor, lane)
    _running: Counter = field(default_factory=Counter, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _recent(self) -> list[tuple[float, str, str]]:
        horizon = self.clock() - self.hold
        while self._admitted and self._admitted[0][0] <= horizon:
            self._admitted.popleft()
        return list(self._admitted)

    def refusal(self, visitor: str, lane: str, pending: Iterable[Pending]) -> str | None:
        """Why a new run of ``visitor`` in ``lane`` must wait for another time, or None when it may join."""
        pending, recent = list(pending), self._recent()
        queued = sum(p.visitor == visitor and p.lane == lane for p in pending)
        mine = max(queued, sum(v == visitor and ln == lane for _, v, ln in recent))
        limit = self.per_visitor.get(lane)
        if limit is not None and mine >= limit:
            return (
                f"You already have {_runs(mine)} queued or running here ({lane}); each visitor may have {limit} at "
                "a time, so that everyone gets a turn. Wait for it to finish (or stop it), then try again."
            )
        waiting = max(sum(p.lane == lane and not p.running for p in pending), sum(ln == lane for *_, ln in recent))
        size = self.lane_size.get(lane)
        if size is not None and waiting >= size:
            return f"The {lane} queue is full ({waiting} runs waiting). Please try again in a minute."
        return None

    def admit(self, visitor: str, lane: str, pending: Iterable[Pending]) -> None:
        """Raise ``TooManyRunsError`` / ``LaneFullError`` when a new run may not join ``lane`` now; else count it."""
        with self._lock:
            reason = self.refusal(visitor, lane, pending)
            if reason is None:
                self._admitted.append((self.clock(), visitor, lane))
        if reason is not None:
            raise (TooManyRunsError if reason.startswith("You already") else LaneFullError)(reason)

    def admit_settled(self, visitor: str, lane: str, read_pending: Callable[[], Iterable[Pending]]) -> None:
        """``admit``, but when only the visitor's admissions of the last ``hold`` seconds stand in the way (not its
        runs in the queue: a run that finished within ``hold`` is one of them), wait ``hold`` for them to settle
        (joined the queue, or gone) and decide again from the queue. A client that calls one endpoint after another
        is served; a burst of simultaneous submissions still gets one place."""
        try:
            self.admit(visitor, lane, read_pending())
        except TooManyRunsError:
            queued = sum(p.visitor == visitor and p.lane == lane for p in read_pending())
            if queued >= self.per_visitor.get(lane, queued + 1):
                raise
            self.sleep(self.hold)
            self.admit(visitor, lane, read_pending())

    @contextmanager
    def slot(self, visitor: str, lane: str) -> Iterator[None]:
        """Hold one of the visitor's places in ``lane`` while the block runs (``TooManyRunsError`` if none is free)."""
        key, limit = (visitor, lane), self.per_visitor.get(lane)
        with self._lock:
            if limit is not None and self._running[key] >= limit:
                running = [Pending(visitor, lane, True)] * self._running[key]
                raise TooManyRunsError(self.refusal(visitor, lane, running))
            self._running[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[key] -= 1
                if self._running[key] <= 0:
                    del self._running[key]

    def running(self, visitor: str, lane: str) -> int:
        """How many ``slot`` blocks of ``visitor`` are running in ``lane`` now."""
        with self._lock:
            return self._running[(visitor, lane)]


class TrainingBudget:
    """Seconds of training each visitor may use within a sliding ``window`` (seconds), whatever its sessions."""

    def __init__(self, seconds: float, window: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.window, self.clock = float(seconds), float(window), clock
        self._used: dict[str, deque[tuple[float, float]]] = {}  # visitor -> (when, seconds) of each charge
        self._lock = threading.Lock()

    def _prune(self, visitor: str, now: float) -> deque[tuple[float, float]]:
        charges = self._used.get(visitor, deque())
        while charges and charges[0][0] <= now - self.window:
            charges.popleft()
        if not charges:
            self._used.pop(visitor, None)
        return charges

    def used(self, visitor: str) -> float:
        """Seconds ``visitor`` trained within the last window."""
        with self._lock:
            return sum(s for _, s in self._prune(visitor, self.clock()))

    def remaining(self, visitor: str) -> float:
        """Seconds ``visitor`` may still train now (at least 0)."""
        return max(0.0, self.seconds - self.used(visitor))

    def check(self, visitor: str) -> float:
        """The seconds left; ``BudgetSpentError`` (saying when time frees up) when there are none."""
        left = self.remaining(visitor)
        if left <= 0:
            with self._lock:
                charges = self._prune(visitor, self.clock())
                wait = charges[0][0] + self.window - self.clock() if charges else 0.0
            raise BudgetSpentError(
                f"You have used your {self.seconds:.0f} s of fine-tuning for this {self.window / 60:.0f}-minute "
                f"window; more frees up in about {max(1, round(wait / 60))} min. Meanwhile, Compare and Heads "
                "work as before."
            )
        return left

    def charge(self, visitor: str, seconds: float) -> None:
        """Count ``seconds`` of training against ``visitor`` (now)."""
        if seconds > 0:
            with self._lock:
                self._used.setdefault(visitor, deque()).append((self.clock(), float(seconds)))

    @contextmanager
    def running(self, visitor: str) -> Iterator[float]:
        """Check the budget, yield the seconds left (the run's own time limit), charge the time used on exit,
        whether the run finished, failed or was stopped."""
        left = self.check(visitor)
        started = self.clock()
        try:
            yield left
        finally:
            self.charge(visitor, self.clock() - started)


def server_memory() -> int:
    """Resident memory of this server process and its children, in bytes (0 where it cannot be read)."""
    try:
        import psutil

        process = psutil.Process(os.getpid())
        processes = [process, *process.children(recursive=True)]
    except Exception:  # noqa: BLE001 - no psutil, or no /proc: nothing to measure, nothing refused
        return 0
    total = 0
    for each in processes:
        try:
            total += each.memory_info().rss
        except Exception:  # noqa: BLE001, S112 - a child that just exited
            continue
    return total


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(ceiling: int, used: int | None = None) -> None:
    """``MemoryCeilingError`` when the server's resident memory (``used``, default: ``server_memory()``) is above
    ``ceiling`` bytes: a new fine-tune would need more (a training copy of its base) than the server may take."""
    used = server_memory() if used is None else used
    if used > ceiling:
        raise MemoryCeilingError(
            f"The server is short of memory right now ({_gib(used)} in use; it starts no new fine-tune above "
            f"{_gib(ceiling)}), so fine-tuning is paused until runs end or visitors leave. Please try again in a "
            "few minutes; Compare and Heads work as before."
        )


__all__ = [
    "BudgetSpentError",
    "FairShare",
    "FairShareError",
    "LaneFullError",
    "MemoryCeilingError",
    "Pending",
    "TooManyRunsError",
    "TrainingBudget",
    "check_memory",
    "client_ip",
    "pending_jobs",
    "server_memory",
    "visitor_id",
]
