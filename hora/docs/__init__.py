"""Numbers in the docs that cannot go stale: every benchmark table in ``README.md`` and ``docs/*.md`` is rendered from
the JSON its benchmark command wrote (committed beside it, under ``assets/bench/``), between two markers::

    <!-- generated: real-grid smollm2-135m-instruct -->
    | variant | ... |
    <!-- end generated -->

``python -m hora docs`` rewrites every such block from its JSON; ``python -m hora docs --check`` (and
``tests/test_docs.py``) fails when a block differs from what its JSON renders. A table whose JSON was measured with
settings that are no longer the defaults says so under the table, automatically: each report records the PEFT
configuration its adapters ran with, and ``config_notes`` compares it with today's defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from hora.docs import explorer, grids, measures
from hora.docs.grids import paired_rows
from hora.docs.staleness import ROOT, WATCHED, config_notes


BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+)(?: (?P<arg>[^ ]+?))? -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
DOCS = ("README.md", "docs/*.md")

RENDERERS: dict[str, Callable[[str], str]] = {
    "headline": grids.headline,
    "real-grid": grids.real_grid,
    "paired": grids.paired,
    "agreement": grids.agreement,
    "lr-sweep": grids.lr_sweep,
    "tiny-grid": grids.tiny_grid,
    "embedded": grids.embedded,
    "param-count": measures.param_counts,
    "step-size": measures.step_size,
    "conformance": measures.conformance,
    "answers": measures.answers,
    "quant-transfer": measures.quant_transfer,
    "ops": measures.ops,
    "speed": measures.speed,
    "cold-start": explorer.cold_start,
    "serving": explorer.serving,
    "side-by-side": explorer.side_by_side,
    "load": explorer.load,
    "adversarial": explorer.adversarial,
}


# ---------------------------------------------------------------------------------------------------------------
# Files


def doc_files(root: Path = ROOT) -> list[Path]:
    """The README and every page under docs/."""
    return [p for pattern in DOCS for p in sorted(root.glob(pattern))]


def render_blocks(text: str) -> str:
    """``text`` with every generated block rendered afresh from its JSON."""

    def replace(match: re.Match) -> str:
        name, arg = match["name"], match["arg"] or ""
        if name not in RENDERERS:
            raise ValueError(f"Unknown generated block {name!r}; known: {', '.join(sorted(RENDERERS))}.")
        return f"{match.group(1)}{RENDERERS[name](arg).rstrip()}\n{match.group(5)}"

    return BLOCK.sub(replace, text)


def sync(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Render every doc file's generated blocks; the files whose blocks were stale (rewritten unless ``check``)."""
    stale = []
    for path in doc_files(root):
        text = path.read_text(encoding="utf-8")
        fresh = render_blocks(text)
        if fresh != text:
            stale.append(path)
            if not check:
                path.write_text(fresh, encoding="utf-8")
    return stale


__all__ = [
    "BLOCK",
    "RENDERERS",
    "ROOT",
    "WATCHED",
    "config_notes",
    "doc_files",
    "paired_rows",
    "render_blocks",
    "sync",
]
