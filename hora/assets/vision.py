"""The vision base: a tiny ViT pretrained on handwritten digits 0-4, fed through its own image processor, and the
build stage that makes it, its held-out data and its adapters.

Pretraining uses the engine's schedule (``hora.optim.cosine_schedule``) but not its loop: it trains every weight
from random initialisation with augmentation, which is not the engine's few-shot fine-tuning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from hora.assets import adapters as adapter_stage
from hora.assets import cards, samples
from hora.assets.common import DIGITS_EVAL, SEED, VISION_BASE, mkparent, param_count, write_metadata
from hora.assets.data import digit_image, load_digit_splits
from hora.optim import cosine_schedule


if TYPE_CHECKING:
    from hora.data import ImageClassificationData


IMAGE_SIZE = 32
MEAN = [0.5, 0.5, 0.5]
STD = [0.5, 0.5, 0.5]
LABELS = [str(d) for d in range(10)]
PRETRAIN_LABELS = LABELS[:5]  # the base classifies digits 0-4; adapters get a fresh 10-way head


def fewshot_pool_data(splits) -> ImageClassificationData:
    """The few-shot pool of the digits (``DigitSplits.fewshot_pool``) as the engine's ``ImageClassificationData``."""
    from hora.data import ImageClassificationData

    pool = splits.fewshot_pool
    return ImageClassificationData(
        images=[digit_image(splits.images[i]) for i in pool],
        labels=[int(splits.labels[i]) for i in pool],
        classes=LABELS,
        names=[f"digits-{i}" for i in pool],
    )


def image_processor():
    """The base's processor: any image -> RGB, bilinear resize to 32x32, scale to [-1, 1] (PIL backend)."""
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        do_normalize=True,
        image_mean=MEAN,
        image_std=STD,
    )


def pixel_values(processor, images: np.ndarray) -> torch.Tensor:
    """Model inputs (n, 3, 32, 32) for 8x8 digits, through the same processor the app uses."""
    pil = [digit_image(x).convert("RGB") for x in images]
    return processor(images=pil, return_tensors="pt")["pixel_values"]


def vit_config():
    """4 layers, width 96, 4 heads of 24, patches of 4 on 32x32: about 0.3M parameters; five outputs (0-4)."""
    from transformers import ViTConfig

    return ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        num_channels=3,
        hidden_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=192,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
        num_labels=len(PRETRAIN_LABELS),
        id2label=dict(enumerate(PRETRAIN_LABELS)),
        label2id={label: i for i, label in enumerate(PRETRAIN_LABELS)},
        architectures=["ViTForImageClassification"],
    )


def shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 3) -> torch.Tensor:
    """Random translations of up to ``max_shift`` pixels, filled with the background value."""
    n, _, h, w = x.shape
    pad = nn.functional.pad(x, (max_shift,) * 4, value=-1.0)  # -1 is black after normalisation
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).tolist()
    return torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def pretrain_vit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Full training of every weight with AdamW, a cosine schedule and random shifts."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = -(-len(x) // batch)
    total = epochs * steps_per_epoch
    model.train()
    start, step = time.perf_counter(), 0
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        running = 0.0
        for chunk in order.split(batch):
            for group in optimizer.param_groups:
                group["lr"] = cosine_schedule(step, total, lr, warmup=max(1, total // 20), floor=0.1)
            loss = model(pixel_values=shift(x[chunk], generator), labels=y[chunk]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(chunk)
            step += 1
        if epoch % 10 == 0 or epoch == epochs - 1:
            log(f"  vit epoch {epoch:3d}/{epochs}  loss {running / len(x):.3f}  {time.perf_counter() - start:.0f}s")
    model.eval()
    return {"epochs": epochs, "steps": total, "batch": batch, "lr": lr, "augmentation": "random shifts of up to 3 px"}


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Top-1 accuracy of ``model`` on (x, y), overall and per digit."""
    model.eval()
    predictions = torch.cat([model(pixel_values=chunk).logits.argmax(-1) for chunk in x.split(256)])
    correct = predictions == y
    per_class = {str(c): float(correct[y == c].float().mean()) for c in y.unique().tolist()}
    return {"accuracy": float(correct.float().mean()), "per_class": per_class, "n": len(y)}


# ------------------------------------------------------------------------------------------------ the stage


def build_vision(root: Path, settings: Any, log: Callable[[str], None]) -> dict:
    """The ViT base (digits 0-4), the held-out digits for tests, example images and the five adapters.

    ``settings`` is the builder's ``Settings`` (epochs of pretraining, the adapters' recipe).
    """
    from transformers import ViTForImageClassification

    splits = load_digit_splits()
    processor = image_processor()
    x, y = pixel_values(processor, splits.images), torch.from_numpy(splits.labels)
    held = torch.from_numpy(splits.heldout)
    pre = torch.from_numpy(splits.pretrain)
    folder = root / VISION_BASE
    log(f"vision: pretraining on {len(pre)} digits 0-4 ({settings.vit_epochs} epochs)")
    torch.manual_seed(SEED)
    model = ViTForImageClassification(vit_config())
    t0 = time.perf_counter()
    recipe = pretrain_vit(model, x[pre], y[pre], epochs=settings.vit_epochs, seed=SEED, log=log)
    seconds = time.perf_counter() - t0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    base_metrics = vision_metrics(model, x[held], y[held])
    log(
        f"vision base: held-out accuracy {base_metrics['accuracy']:.3f} (digits 0-4: {base_metrics['accuracy_0_4']:.3f})"
    )

    write_heldout_files(root, splits, y, held)

    split_record = {
        "heldout_indices": splits.heldout.tolist(),
        "pretrain_indices": splits.pretrain.tolist(),
        "fewshot_pool_indices": splits.fewshot_pool.tolist(),
    }
    base_info = {
        "name": VISION_BASE,
        "kind": "image",
        "data": {"source": "sklearn.datasets.load_digits()", **split_record},
        "eval_file": DIGITS_EVAL,
        "training": {**recipe, "seconds": round(seconds, 1), "seed": SEED},
        "parameters": param_count(model),
        "metrics": base_metrics,
    }
    write_metadata(folder, base_info)
    cards.write_vision_base_card(folder, base_info, splits)

    data = fewshot_pool_data(splits)
    adapters = {}
    for method in adapter_stage.VISION_METHODS:
        adapters[method] = adapter_stage.run_adapter(
            root,
            VISION_BASE,
            method,
            data,
            settings.vision,
            "scikit-learn digits, few-shot pool",
            log,
            evaluate=lambda m: vision_metrics(m, x[held], y[held]),
            train_indices=lambda split: [int(splits.fewshot_pool[i]) for i in split["train"]],
        )
    for method, info in adapters.items():
        cards.write_adapter_card(root / VISION_BASE / "adapters" / method, info, base_info, adapters)
    return {"base": base_info, "adapters": adapters}


def write_heldout_files(root: Path, splits: Any, y: torch.Tensor, held: torch.Tensor) -> None:
    """The held-out digits for the tests, one held-out example image per digit, and the Fine-tune tab's sample."""
    from safetensors.torch import save_file

    save_file(
        {
            "images": torch.from_numpy(splits.images[splits.heldout]).contiguous(),
            "labels": y[held].contiguous(),
            "indices": held.contiguous(),
        },
        os.fspath(mkparent(root / DIGITS_EVAL)),
        metadata={"source": "sklearn.datasets.load_digits()", "values": "0-16, 8x8"},
    )
    examples = root / "examples"
    examples.mkdir(exist_ok=True)
    for digit in range(10):  # one held-out image per digit, at the 32x32 the model sees (same pixels)
        index = int(splits.heldout[splits.labels[splits.heldout] == digit][0])
        image = digit_image(splits.images[index]).resize((32, 32), resample=2)
        image.save(examples / f"digit-{digit}-heldout-{index:04d}.png")
    samples.write_digit_sample(root, splits)


def vision_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Held-out accuracy overall, per digit, and on the base's digits (0-4) and the new ones (5-9)."""
    result = accuracy(model, x, y)
    old = y < 5
    result["accuracy_0_4"] = float(np.mean([result["per_class"][str(c)] for c in range(5)]))
    result["accuracy_5_9"] = float(np.mean([result["per_class"][str(c)] for c in range(5, 10)]))
    result["n_0_4"], result["n_5_9"] = int(old.sum()), int((~old).sum())
    return result
