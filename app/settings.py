"""Limits that keep a shared, public app responsive. Override with environment variables.

The README's "Limits of a public deployment" lists every variable. The library reads two of its own:
``HORA_MAX_BASE_PARAMS`` (the largest base model a visitor can make the server build, ``hora.models``) and
``HORA_PUBLIC`` / ``SPACE_ID`` (public mode, ``hora.hub.public_mode``).

``HORA_MAX_SERVER_MEMORY`` is read at each check (``max_server_memory``): above it, the server refuses to start a
new fine-tune (``app.guard.check_memory``) rather than be killed by the kernel for want of memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


_SESSION_TRAIN_SECONDS = _env_int("HORA_MAX_SESSION_TRAIN_SECONDS", 900)


@dataclass(frozen=True)
class Limits:
    # Work per request
    max_prompt_chars: int = _env_int("HORA_MAX_PROMPT_CHARS", 2000)
    max_text_chars: int = _env_int("HORA_MAX_TEXT_CHARS", 100_000)  # any other text input (passages, names)
    max_new_tokens: int = _env_int("HORA_MAX_NEW_TOKENS", 256)
    max_perplexity_tokens: int = _env_int("HORA_MAX_PERPLEXITY_TOKENS", 4096)
    max_image_pixels: int = _env_int("HORA_MAX_IMAGE_PIXELS", 40_000_000)  # an image to classify, from its header
    max_image_side: int = _env_int("HORA_MAX_IMAGE_SIDE", 1024)  # images are reduced to this on load
    # Training
    max_train_steps: int = _env_int("HORA_MAX_TRAIN_STEPS", 500)
    max_train_seconds: int = _env_int("HORA_MAX_TRAIN_SECONDS", 300)
    max_session_train_seconds: int = _SESSION_TRAIN_SECONDS  # kept for compatibility: the visitor budget's default
    max_visitor_train_seconds: int = _env_int("HORA_MAX_VISITOR_TRAIN_SECONDS", _SESSION_TRAIN_SECONDS)
    train_budget_window: int = _env_int("HORA_TRAIN_BUDGET_WINDOW", 3600)  # seconds over which that budget counts
    max_file_size: str = os.environ.get("HORA_MAX_FILE_SIZE", "20mb")
    # Queue and fair sharing
    queue_size: int = _env_int("HORA_QUEUE_SIZE", 64)  # waiting inference runs, all visitors
    training_queue_size: int = _env_int("HORA_TRAINING_QUEUE_SIZE", 4)  # waiting fine-tunes, all visitors
    loading_queue_size: int = _env_int("HORA_LOADING_QUEUE_SIZE", 4)  # waiting Models-tab loads, all visitors
    inference_concurrency: int = _env_int("HORA_INFERENCE_CONCURRENCY", 4)
    training_concurrency: int = _env_int("HORA_TRAINING_CONCURRENCY", 1)
    loading_concurrency: int = _env_int("HORA_LOADING_CONCURRENCY", 1)
    visitor_inference_jobs: int = _env_int("HORA_VISITOR_INFERENCE_JOBS", 4)  # queued + running, per visitor
    visitor_training_jobs: int = _env_int("HORA_VISITOR_TRAINING_JOBS", 1)
    visitor_loading_jobs: int = _env_int("HORA_VISITOR_LOADING_JOBS", 1)
    proxy_hops: int = _env_int("HORA_PROXY_HOPS", 1 if os.environ.get("SPACE_ID") else 0)  # see app.guard

    @property
    def global_queue_size(self) -> int:
        """Gradio's own ``queue(max_size=...)``: the lanes together, plus room for the small unguarded events."""
        return self.queue_size + self.training_queue_size + self.loading_queue_size + 16


LIMITS = Limits()


DEFAULT_SERVER_MEMORY = 0.75
"""The default memory ceiling, as a fraction of the memory the server may use (its container's limit, else the
machine's): 12 GiB on a 16 GB ``cpu-basic`` Space. A fine-tune of the largest served base (SmolLM2, 135 M parameters)
holds a float32 training copy of it, its gradients' and optimiser's state and activations while it runs, about
2.5 GiB on top of the server; the quarter left above the ceiling is room for that one run (one trains at a time,
``HORA_TRAINING_CONCURRENCY``) and for the inference traffic meanwhile."""


def max_server_memory(total: int) -> int:
    """The memory ceiling in bytes: ``HORA_MAX_SERVER_MEMORY`` as MiB (``6000``) or, at most 1, as a fraction of
    ``total`` (``0.75``); ``DEFAULT_SERVER_MEMORY`` of ``total`` when unset or not a positive number."""
    try:
        value = float(os.environ.get("HORA_MAX_SERVER_MEMORY", "").strip() or DEFAULT_SERVER_MEMORY)
    except ValueError:
        value = DEFAULT_SERVER_MEMORY
    if not value > 0:
        value = DEFAULT_SERVER_MEMORY
    return int(value * total) if value <= 1 else int(value * 2**20)


def clamp(value: float | None, low: float, high: float) -> float:
    """``value`` forced into [low, high]; None (a cleared number box) becomes ``low``."""
    if value is None:
        return low
    return max(low, min(high, float(value)))
