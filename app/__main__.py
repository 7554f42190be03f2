"""``python -m app``: serve the explorer on the embedded assets (offline, CPU or GPU)."""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the hora explorer.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from app.main import create_app, launch

    launch(create_app(), server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
