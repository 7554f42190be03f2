"""The explorer as a server for the benchmarks and the deployment tests: ``python -m app`` started on a free port,
waited for (HTTP, then the line saying every model is loaded), stopped, and its resident memory measured; a server
dies with the process that started it.

The lines the app prints about its start-up are matched here (``PHASE``, ``LOADED``), in one place.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PHASE = re.compile(r"hora explorer: imports ([\d.]+) s, models ([\d.]+) s, page ([\d.]+) s")
"""The line ``python -m app`` prints on stderr once it is about to serve: where its start-up time went."""
LOADED = re.compile(r"hora explorer: every model loaded ([\d.]+) s")
"""The line it prints once every model is in memory (a warm start loads them after serving the page)."""


def die_with_parent() -> None:
    """In a child process (``preexec_fn``): have Linux send it SIGTERM when its parent dies, so that a benchmark or a
    test run that is killed leaves no server behind. Elsewhere it does nothing."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG


def start_app(port: int, log: Path, timeout: float = 180.0) -> subprocess.Popen:
    """``python -m app`` on 127.0.0.1:``port`` (output to ``log``), returned once it answers HTTP with every model
    loaded: a warm start serves its page before loading them, and the users measure serving, not loading."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HORA_PROXY_HOPS": "1"}
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    start = time.monotonic()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode}:\n{tail(log)}")
        if time.monotonic() - start > timeout:
            stop_app(server)
            raise TimeoutError(f"the app was not serving with its models loaded within {timeout:.0f} s:\n{tail(log)}")
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) and LOADED.search(tail(log, 10**6)):
                return server
        time.sleep(0.2)


def stop_app(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else ""


def rss(pid: int) -> int:
    """Resident memory of ``pid`` and all its children, in bytes (0 once it is gone)."""
    try:
        process = psutil.Process(pid)
        processes = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for each in processes:
        with contextlib.suppress(psutil.Error):  # a child that just exited
            total += each.memory_info().rss
    return total


class RssSampler(threading.Thread):
    """Samples ``rss(pid)`` every ``interval`` seconds and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, rss(pid)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss(self.pid))


__all__ = ["LOADED", "PHASE", "RssSampler", "die_with_parent", "free_port", "rss", "start_app", "stop_app", "tail"]
