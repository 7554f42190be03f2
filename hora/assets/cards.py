"""Model cards (HF-style README.md with YAML front matter), per-asset metadata and the sha256 manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml


MANIFEST = "manifest.json"
METADATA = "asset.json"


def metric(kind: str, value: float, name: str) -> dict:
    """One model-index metric entry, rounded so that the card and ``asset.json`` agree to the digit."""
    return {"type": kind, "value": round(float(value), 4), "name": name}


def model_index(name: str, task: tuple[str, str], dataset: dict, metrics: list[dict]) -> list[dict]:
    """The ``model-index`` block the Hub renders as an evaluation table."""
    return [
        {
            "name": name,
            "results": [{"task": {"type": task[0], "name": task[1]}, "dataset": dataset, "metrics": metrics}],
        }
    ]


def card_metrics(card: dict) -> dict[str, float]:
    """``{metric name: value}`` from a card's ``model-index`` (what the tests compare against)."""
    out: dict[str, float] = {}
    for entry in card.get("model-index", []):
        for result in entry.get("results", []):
            for m in result.get("metrics", []):
                out[m["name"]] = float(m["value"])
    return out


def write_card(folder: Path, front_matter: dict[str, Any], body: str) -> None:
    """``folder/README.md``: YAML front matter, then the Markdown body."""
    yaml_text = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True, width=1000)
    (folder / "README.md").write_text(f"---\n{yaml_text}---\n\n{body.strip()}\n", encoding="utf-8")


def write_metadata(folder: Path, data: dict[str, Any]) -> None:
    """``folder/asset.json``: everything the builder knows about an asset, for the app and the tests."""
    (folder / METADATA).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def read_metadata(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / METADATA).read_text(encoding="utf-8"))


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_entries(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file under ``root`` but the manifest itself."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() != MANIFEST)
    return {p.relative_to(root).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}


def write_manifest(root: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """``root/manifest.json``: a sha256 and size per file, the total size and ``extra`` (build facts)."""
    files = manifest_entries(root)
    manifest = {**extra, "total_bytes": sum(f["bytes"] for f in files.values()), "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def refresh_manifest(root: Path, **facts: Any) -> dict[str, Any]:
    """Rewrite ``root/manifest.json`` for the files there now, keeping the build's facts and adding ``facts``.

    For what is added after a build (the benchmark, the screenshots): the build's own facts stay as they were.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"No {path}: build the assets first (python -m hora.assets build).")
    kept = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("files", "total_bytes")}
    return write_manifest(root, {**kept, **facts})
