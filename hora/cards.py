"""Model cards: ``README.md`` with YAML front matter (always written by a YAML library) and a Markdown body.

The one card writer of the project: the engine's run cards (``hora.runs``), pushed adapters (``hora.push``) and
the embedded assets (``hora.assets``) all go through ``render`` / ``write``, and every reader through ``read``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hora.io import CARD


_FRONT_MATTER = re.compile(r"^---\s*\n(.*?)\n---\s*\n", flags=re.DOTALL)


def render(front_matter: dict[str, Any], body: str) -> str:
    """The card's text: ``---``, the front matter as YAML, ``---``, then the body."""
    text = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{text}---\n\n{body.strip()}\n"


def write(folder: str | os.PathLike, front_matter: dict[str, Any], body: str) -> Path:
    """Write ``folder/README.md``; returns its path."""
    path = Path(folder) / CARD
    path.write_text(render(front_matter, body), encoding="utf-8")
    return path


def read(folder: str | os.PathLike) -> dict[str, Any]:
    """The YAML front matter of ``folder/README.md`` as a dict ({} without a card or front matter)."""
    path = Path(folder) / CARD
    if not path.is_file():
        return {}
    match = _FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:  # a card written by someone else: its body may still be useful, its metadata is not
        return {}
    return data if isinstance(data, dict) else {}


def metric(kind: str, value: float, name: str) -> dict[str, Any]:
    """One ``model-index`` metric entry, rounded so that a card and the JSON next to it agree to the digit."""
    return {"type": kind, "value": round(float(value), 4), "name": name}


def model_index(name: str, task: tuple[str, str], dataset: dict[str, Any], metrics: list[dict]) -> list[dict]:
    """The ``model-index`` block the Hub renders as an evaluation table; ``task`` is (type, readable name)."""
    return [
        {
            "name": name,
            "results": [{"task": {"type": task[0], "name": task[1]}, "dataset": dataset, "metrics": metrics}],
        }
    ]


def card_metrics(card: dict[str, Any]) -> dict[str, float]:
    """``{metric name: value}`` from a card's ``model-index``."""
    out: dict[str, float] = {}
    for entry in card.get("model-index", []):
        for result in entry.get("results", []):
            for m in result.get("metrics", []):
                out[m["name"]] = float(m["value"])
    return out


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["card_metrics", "metric", "model_index", "read", "render", "table", "write"]
