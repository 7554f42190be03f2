"""``python -m app`` or ``python app/__main__.py``: serve the explorer on the embedded assets (offline, CPU or GPU)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time


STARTED = time.perf_counter()  # the interpreter's own start is a few tens of milliseconds before this


if not __package__:  # `python app/__main__.py` (Spaces' Gradio SDK): `app` is imported from the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the hora explorer.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="load every model, draw the first paints, remember both in hora's cache, and exit (a Docker build runs "
        "it, so that the container's first start is a warm one)",
    )
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import atexit
    import signal

    from app.main import create_app, launch
    from app.store import delete_session_folders, delete_stale_session_folders

    imported = time.perf_counter()
    delete_stale_session_folders()  # what a killed earlier server left behind
    atexit.register(delete_session_folders)  # visitors' uploads and runs never outlive the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stopped container exits through atexit too
    timings: dict[str, float] = {}

    all_loaded = threading.Event()

    def loaded() -> None:  # python -m hora bench cold-start waits for this line before measuring memory at rest
        print(f"hora explorer: every model loaded {time.perf_counter() - STARTED:.2f} s", file=sys.stderr, flush=True)
        all_loaded.set()

    demo = create_app(timings, on_loaded=loaded)
    # where the start-up time went (python -m hora bench cold-start reads this line)
    print(
        f"hora explorer: imports {imported - STARTED:.2f} s, models {timings['models_s']:.2f} s, "
        f"page {timings['page_s']:.2f} s",
        file=sys.stderr,
        flush=True,
    )
    if not args.prepare:
        launch(demo, server_name=args.host, server_port=args.port)
    else:  # every model loaded once, by the loading thread: leaving while it runs in torch would abort the process
        loading = [t for t in threading.enumerate() if t.name == "load-models"]
        while not all_loaded.wait(1.0) and any(t.is_alive() for t in loading):
            pass
        if not all_loaded.is_set():
            raise SystemExit("python -m app --prepare: the models did not all load (see the error above).")


if __name__ == "__main__":
    main()
