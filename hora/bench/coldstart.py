"""Cold-start benchmark of the explorer: ``python -m hora bench cold-start [--runs 3]``.

Starts ``python -m app`` in a fresh process, times (1) until the server answers HTTP and (2) until the
page is usable in headless Chromium (the Compare tab's Classify button is visible), stops it, and prints
the medians as JSON on the last line. Needs Debian's chromium and the playwright package (dev requirements).
It drives the app from outside, as a browser does; hora itself never imports gradio.
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start(timeout: float = 600.0, cache: str | None = None) -> dict[str, float]:
    """One cold start: seconds to HTTP ready and to a usable page, and the server's resident memory at rest then.

    ``cache`` sets ``HORA_CACHE`` for the app (an empty folder: the first-ever start, packaged bases converted).
    """
    from playwright.sync_api import sync_playwright

    from hora.bench.load import die_with_parent, rss

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    if cache is not None:
        env["HORA_CACHE"] = cache
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the app exited with code {server.returncode}")
            if time.perf_counter() - start > timeout:
                raise TimeoutError("the app did not answer in time")
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        http_ready = time.perf_counter() - start
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#classify-btn").wait_for(state="visible", timeout=timeout * 1000)
            usable = time.perf_counter() - start
            browser.close()
        time.sleep(2)  # at rest: the page has loaded, nothing runs
        return {"http_ready_s": http_ready, "page_usable_s": usable, "rss_at_rest_mib": rss(server.pid) / 2**20}
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(runs: int = 3, first: bool = False, log=print) -> dict:
    """``runs`` cold starts with the cache as it is (warm); their medians and the machine. ``first`` also times a
    first-ever start, with an empty cache: the packaged bases are converted then."""
    import tempfile

    results, first_start = [], None
    if first:
        with tempfile.TemporaryDirectory(prefix="hora-cache-") as cache:
            first_start = cold_start(cache=cache)
        log(f"first-ever start (conversion included): page usable {first_start['page_usable_s']:.1f} s")
    for i in range(runs):
        results.append(cold_start())
        r = results[-1]
        log(
            f"run {i + 1}: HTTP ready {r['http_ready_s']:.2f} s, page usable {r['page_usable_s']:.2f} s, "
            f"{r['rss_at_rest_mib']:.0f} MiB resident"
        )
    return {
        "runs": results,
        "first_start": first_start,
        "median_http_ready_s": statistics.median(r["http_ready_s"] for r in results),
        "median_page_usable_s": statistics.median(r["page_usable_s"] for r in results),
        "median_rss_at_rest_mib": statistics.median(r["rss_at_rest_mib"] for r in results),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


__all__ = ["CHROMIUM_ARGS", "cold_start", "free_port", "run"]
