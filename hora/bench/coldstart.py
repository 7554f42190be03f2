"""Cold-start benchmark of the explorer: ``python -m hora bench cold-start [--runs 3]``.

Starts ``python -m app`` in a fresh process, times (1) until the server answers HTTP and (2) until the
page is usable in headless Chromium (the Compare tab's Classify button is visible, with every first paint in the
page), reads where the server's time went from the line it prints, stops it, and prints the medians as JSON on the
last line. Needs Debian's chromium and the playwright package (dev requirements).
It drives the app from outside, as a browser does; hora itself never imports gradio.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from hora.bench.server import LOADED, PHASE, die_with_parent, free_port, rss


# Chromium runs as root here, with no network: no sandbox, no GPU, no background traffic to Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def cold_start(timeout: float = 600.0, cache: str | None = None) -> dict[str, float]:
    """One cold start: seconds to HTTP ready and to a usable page, where the server's time went (imports, loading
    the models, building the page with its first paints), and its resident memory at rest.

    The browser is started before the server, as a visitor's is already open: the clock covers the server's start,
    the page's load and its first render, not Chromium's own start. A warm start loads its models after serving the
    page: memory at rest is measured once they all are (``all_models_loaded_s``). ``cache`` sets ``HORA_CACHE`` for the app (an
    empty folder: the first-ever start, packaged bases converted and first paints computed).
    """
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    if cache is not None:
        env["HORA_CACHE"] = cache
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile(mode="w+") as log, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        start = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=die_with_parent,
        )
        try:
            http_ready = _wait_for_http(server, url, start, timeout)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#classify-btn").wait_for(state="visible", timeout=timeout * 1000)
            usable = time.perf_counter() - start
            browser.close()
            loaded = _wait_for_line(log, LOADED, server, start, timeout)
            time.sleep(2)  # at rest: the page has loaded, every model is in memory, nothing runs
            resident = rss(server.pid) / 2**20
        finally:
            server.terminate()
            server.wait(timeout=30)
        log.seek(0)
        phases = PHASE.search(log.read())
    measured = {"http_ready_s": http_ready, "page_usable_s": usable, "rss_at_rest_mib": resident}
    if phases:
        measured |= dict(zip(("imports_s", "models_s", "page_built_s"), map(float, phases.groups()), strict=True))
    return measured | {"all_models_loaded_s": float(loaded.group(1))}


def _wait_for_line(log, pattern: re.Pattern, server: subprocess.Popen, start: float, timeout: float) -> re.Match:
    """The first match of ``pattern`` in the server's ``log`` (a file it writes), waiting for it."""
    while True:
        log.seek(0)
        if found := pattern.search(log.read()):
            return found
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode}")
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"the app never printed {pattern.pattern!r}")
        time.sleep(0.2)


def _wait_for_http(server: subprocess.Popen, url: str, start: float, timeout: float) -> float:
    """Seconds from ``start`` until ``url`` answers."""
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode}")
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the app did not answer in time")
        try:
            urllib.request.urlopen(url, timeout=1)
            return time.perf_counter() - start
        except OSError:
            time.sleep(0.05)


def run(runs: int = 3, first: bool = False, log=print) -> dict:
    """``runs`` cold starts with the cache as it is (warm); their medians and the machine. ``first`` also times a
    first-ever start, with an empty cache: the packaged bases are converted and the first paints computed then."""
    results, first_start = [], None
    if first:
        with tempfile.TemporaryDirectory(prefix="hora-cache-") as cache:
            first_start = cold_start(cache=cache)
        log(f"first-ever start (conversion included): page usable {first_start['page_usable_s']:.1f} s")
    for i in range(runs):
        results.append(cold_start())
        r = results[-1]
        keys = ("imports_s", "models_s", "page_built_s", "all_models_loaded_s")
        phases = ", ".join(f"{k[:-2].replace('_', ' ')} {r[k]:.1f} s" for k in keys if k in r)
        log(
            f"run {i + 1}: HTTP ready {r['http_ready_s']:.2f} s, page usable {r['page_usable_s']:.2f} s "
            f"({phases or 'no phases reported'}), {r['rss_at_rest_mib']:.0f} MiB resident"
        )
    medians = {f"median_{k}": statistics.median(r[k] for r in results) for k in results[0] if k.endswith("_s")}
    return {
        "runs": results,
        "first_start": first_start,
        **medians,
        "median_rss_at_rest_mib": statistics.median(r["rss_at_rest_mib"] for r in results),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


__all__ = ["CHROMIUM_ARGS", "cold_start", "run"]
