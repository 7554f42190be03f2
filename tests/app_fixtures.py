"""A ModelStore of tiny models (from configs) so the app's tests do not depend on the embedded assets."""

from __future__ import annotations

import zipfile
from pathlib import Path

import peft
from PIL import Image
from tiny_models import char_tokenizer, tiny_llama, tiny_vit
from transformers import ViTImageProcessor

import hora
from app.store import ModelStore, Variant


def tiny_store(folder: Path | None = None) -> ModelStore:
    """Two tiny bases with LoRA and HoRA adapters; saved under ``folder`` (if given) so they can be fine-tuned."""
    store = ModelStore()
    vit = tiny_vit()
    vit.config.id2label = {0: "zero", 1: "one", 2: "two"}
    vit.config.label2id = {v: k for k, v in vit.config.id2label.items()}
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    llama, tokenizer = tiny_llama(), char_tokenizer()
    locations = {}
    if folder is not None:
        for name, model, extra in (("tiny-vit", vit, processor), ("tiny-llama", llama, tokenizer)):
            model.save_pretrained(folder / name)
            extra.save_pretrained(folder / name)
            locations[name] = str(folder / name)
    store.add_base("tiny-vit", "image", vit, processor, "config", locations.get("tiny-vit"))
    store.add_base("tiny-llama", "lm", llama, tokenizer, "config", locations.get("tiny-llama"))
    for base_name in ("tiny-vit", "tiny-llama"):
        base = store.bases[base_name]
        for method, config in (
            ("lora", peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)),
            ("hora", hora.HoraConfig(r=4, hyper_hidden=8, init_weights=False)),
        ):
            model = peft.get_peft_model(base.fresh_copy(), config).eval()
            store.add_variant(
                base_name, Variant(method.upper() if method == "lora" else "HoRA", method, model, "test")
            )
    return store


def tiny_samples(folder: Path) -> dict[str, str]:
    """A 3-class image zip (coloured squares with noise-free shapes) and a short text file."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "shapes.zip"
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    with zipfile.ZipFile(archive, "w") as zf:
        for label, colour in colours.items():
            for i in range(12):
                image = Image.new("RGB", (12 + i, 12 + i), colour)
                path = folder / f"{label}-{i}.png"
                image.save(path)
                zf.write(path, f"{label}/{i:03d}.png")
    text = folder / "verse.txt"
    text.write_text(("to be or not to be that is the question\n" * 40) + ("whether tis nobler in the mind\n" * 40))
    return {"shapes.zip": str(archive), "verse.txt": str(text)}
