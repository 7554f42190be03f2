"""The vision base: a tiny ViT pretrained on handwritten digits 0-4, fed through its own image processor."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn


if TYPE_CHECKING:
    from hora.data import ImageClassificationData


IMAGE_SIZE = 32
MEAN = [0.5, 0.5, 0.5]
STD = [0.5, 0.5, 0.5]
LABELS = [str(d) for d in range(10)]
PRETRAIN_LABELS = LABELS[:5]  # the base classifies digits 0-4; adapters get a fresh 10-way head


def digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0-16, ink high) as a grayscale PIL image, ink white on black as in the data."""
    return Image.fromarray(np.round(pixels.astype(np.float32) * (255 / 16)).astype(np.uint8), mode="L")


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
    from hora.assets.language import cosine_lr

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
                group["lr"] = cosine_lr(step, total, lr, warmup=max(1, total // 20))
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
