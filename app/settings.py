"""Limits that keep a shared, public app responsive. Override with environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = _env_int("HORA_MAX_PROMPT_CHARS", 2000)
    max_new_tokens: int = _env_int("HORA_MAX_NEW_TOKENS", 256)
    max_perplexity_tokens: int = _env_int("HORA_MAX_PERPLEXITY_TOKENS", 4096)
    max_train_steps: int = _env_int("HORA_MAX_TRAIN_STEPS", 500)
    max_train_seconds: int = _env_int("HORA_MAX_TRAIN_SECONDS", 300)
    max_session_train_seconds: int = _env_int("HORA_MAX_SESSION_TRAIN_SECONDS", 900)
    max_file_size: str = os.environ.get("HORA_MAX_FILE_SIZE", "20mb")
    queue_size: int = _env_int("HORA_QUEUE_SIZE", 64)
    inference_concurrency: int = _env_int("HORA_INFERENCE_CONCURRENCY", 4)
    training_concurrency: int = _env_int("HORA_TRAINING_CONCURRENCY", 1)


LIMITS = Limits()


def clamp(value: float | None, low: float, high: float) -> float:
    """``value`` forced into [low, high]; None (a cleared number box) becomes ``low``."""
    if value is None:
        return low
    return max(low, min(high, float(value)))
