"""The run folder the engine writes: save it, read its record, load it back, and its model card.

A run folder holds the trained weights (a PEFT adapter; for ``head`` the head's tensors; for ``full`` a whole
model), ``metrics.json`` (the engine's record: configuration, task, exact split, history, timing, device) and a
model card ``README.md``. The file names are ``hora.io``'s. It is written atomically (``hora.io.atomic_dir``).

    >>> model, task, run = load_run("vit-digits", "runs/hora")
    >>> evaluate(model, data, task, indices=run["split"]["eval"])      # hora.task.evaluate
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hora import cards
from hora.io import CARD, HEAD_CONFIG, HEAD_WEIGHTS, METRICS, atomic_dir
from hora.loaders import LoadedBase, load_adapter, load_base, run_record
from hora.methods import MethodInfo
from hora.models import labels_of
from hora.task import Task, build_task


_PIPELINE = {"image": "image-classification", "text": "text-classification", "lm": "text-generation"}


def save_run(
    out_dir: str | os.PathLike,
    model: nn.Module,
    info: MethodInfo,
    task: Task,
    metrics: dict,
    base_dir: Path | None = None,
) -> Path:
    """Write the trained weights, ``metrics.json`` and ``README.md`` to ``out_dir`` atomically.

    PEFT methods: a PEFT adapter folder. ``head``: the head's tensors (``head.safetensors``) and
    ``head_config.json`` saying how to apply them. ``full``: the whole model via ``save_pretrained``, with
    the tokenizer or image processor, so that the folder is a model of its own.
    """
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point()):
        raise ValueError("Refusing to save: the model has non-finite weights.")
    with atomic_dir(out_dir) as tmp:
        if info.method == "head":
            _save_head(tmp, model, info, task, metrics["base_model"])
        elif info.method == "full":
            model.save_pretrained(tmp)
        else:
            # hora never resizes a base's vocabulary, so no embedding rows need saving; PEFT's "auto" would ask the
            # Hub whether the base's name holds a config.json (a network call and a warning for packaged bases)
            model.save_pretrained(tmp, save_embedding_layers=False)
        if info.method == "full" and task.tokenizer is not None:
            task.tokenizer.save_pretrained(tmp)
        if info.method == "full" and base_dir is not None and (base_dir / "preprocessor_config.json").is_file():
            shutil.copy(base_dir / "preprocessor_config.json", tmp)
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2, default=str))
        (tmp / CARD).write_text(model_card(metrics), encoding="utf-8")
    return Path(out_dir).resolve()


def _save_head(folder: Path, model: nn.Module, info: MethodInfo, task: Task, base_model: str) -> None:
    from safetensors.torch import save_file

    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name in info.head_modules
        for key, value in model.get_submodule(name).state_dict().items()
    }
    save_file(tensors, folder / HEAD_WEIGHTS, metadata={"format": "pt"})
    head = {
        "format": "hora-head",
        "base_model": base_model,
        "modules": info.head_modules,
        "id2label": task.to_dict()["id2label"],
        "how_to_apply": (
            "Load the base model. For a new label set, replace each listed module by an nn.Linear of the "
            "saved weight's shape; then load_state_dict the tensors (keys '<module>.<parameter>', "
            "strict=False). hora.load_adapter does this."
        ),
    }
    (folder / HEAD_CONFIG).write_text(json.dumps(head, indent=2))


def model_card(metrics: dict) -> str:
    """The run's model card: YAML front matter (base_model, library_name, tags, metrics, shots, seed, dataset)
    and a short description."""
    method, kind, source = metrics["method"], metrics["task"], metrics["data"]["source"]
    final = {k: round(float(v), 6) for k, v in metrics["final"].items()}
    base_name = Path(metrics["base_model"]).name
    front = {
        "base_model": metrics["base_model"],
        "library_name": "transformers" if method == "full" else "peft",
        "pipeline_tag": _PIPELINE[kind],
        "tags": ["hora", method, "peft", _PIPELINE[kind], "few-shot"],
        "datasets": [source],
        "metrics": sorted(final),
        "hora": {
            "method": method,
            "task": kind,
            "shots": metrics["shots"],
            "seed": metrics["seed"],
            "steps": metrics["steps_done"],
            "dataset_source": source,
            "results": final,
        },
        "model-index": cards.model_index(
            f"{base_name}-{method}",
            (_PIPELINE[kind], _PIPELINE[kind].replace("-", " ")),
            {"name": source, "type": "local"},
            [{"type": k, "value": v, "name": f"held-out {k}"} for k, v in final.items()],
        ),
    }
    shots = f"{metrics['shots']} examples per class" if kind != "lm" else f"{metrics['shots'] or 'all'} chunks"
    rows = [[k, f"{v:.4f}"] for k, v in final.items()]
    body = f"""
# {base_name} + {method}

`{method}` fine-tuning ({metrics["method_info"]["trainable_params"]:,} trainable parameters) of `{metrics["base_model"]}`
on {shots} of `{source}`, seed {metrics["seed"]}, {metrics["steps_done"]} steps ({metrics["stopped"]}: {metrics["message"]})

{cards.table(["held-out metric", "value"], rows)}

```python
import hora.runs  # importing hora registers HoRA and DoRAN with PEFT
model, task, run = hora.runs.load_run({metrics["base_model"]!r}, "path/to/this/folder")
```

`metrics.json` holds the full configuration, the exact few-shot indices, the training history, timing and device.
"""
    return cards.render(front, body)


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``metrics.json`` of a run folder ({} for a bare adapter folder)."""
    return run_record(run_dir)


def load_run(base: str | os.PathLike | LoadedBase, run_dir: str | os.PathLike) -> tuple[nn.Module, Task, dict]:
    """Load a run folder onto its base: (model in eval mode, task, ``metrics.json``).

    Works for PEFT adapters (LoRA, DoRA, HoRA, DoRAN), ``head`` runs and ``full`` models, through
    ``hora.load_base`` / ``hora.load_adapter``. A bare PEFT adapter folder (no ``metrics.json``) is loaded for
    the base's own task and labels.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a folder.")
    run = read_run(run_dir)
    if not run:
        loaded = base if isinstance(base, LoadedBase) else load_base(base)
        model = load_adapter(loaded, run_dir)
        task = build_task(loaded, list(labels_of(loaded.model).values()) if loaded.kind == "image" else None)
        return model, task, run
    if not isinstance(run.get("preprocessing"), dict) or "method" not in run:
        raise ValueError(f"{run_dir.name}/{METRICS} is not a run record of hora's engine (no method or task).")
    method, task = run["method"], Task.from_dict(run["preprocessing"])
    if method == "full":
        loaded = load_base(run_dir, task=task.kind, id2label=task.id2label, dtype=torch.float32)
        task.tokenizer = loaded.processor if task.kind != "image" else None
        return loaded.model, task, run
    if isinstance(base, LoadedBase):
        base = base.path
    loaded = load_base(base, task=task.kind, id2label=task.id2label, dtype=torch.float32)
    task.tokenizer = loaded.processor if task.kind != "image" else None
    return load_adapter(loaded, run_dir), task, run


__all__ = ["load_run", "model_card", "read_run", "save_run"]
