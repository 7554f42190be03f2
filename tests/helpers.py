"""What the tests share: tiny transformers models built from configs (no downloads), small datasets written to a
temporary folder, and a ModelStore of tiny models so the app's tests do not depend on the embedded assets."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)


def tiny_vit(seed: int = 0) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    return ViTForImageClassification(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=64,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """Llama with grouped-query attention: 4 query heads, 2 key/value heads."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


BUILDERS = {"vit": tiny_vit, "gpt2": tiny_gpt2, "llama": tiny_llama}


def example_inputs(kind: str, batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    ids = torch.randint(0, 64, (batch, 12), generator=g)
    return {"input_ids": ids}


def output_tensor(output) -> torch.Tensor:
    return output.logits


def char_tokenizer():
    """A character-level fast tokenizer over 64 symbols, matching the tiny LMs' vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = ["<eos>", "<unk>"] + list(" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?'-\n")
    vocab = {s: i for i, s in enumerate(symbols[:64])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", unk_token="<unk>")


# ---------------------------------------------------------------------------------------------------------------
# Small datasets and saved bases


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
TEXT = "the quick brown fox jumps over the lazy dog. a bird sings in the tall tree.\n"


def write_image_folder(root: Path, per_class: int = 8) -> Path:
    """Class folders of 16x16 PNGs: a coloured square on noise, one colour per class."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)
            pixels[4:12, 4:12] = colour
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def save_vit(folder: Path) -> Path:
    tiny_vit().save_pretrained(folder)
    return folder


def save_gpt2(folder: Path) -> Path:
    tiny_gpt2().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# The app over tiny models


def tiny_store(folder: Path | None = None):
    """Two tiny bases with LoRA and HoRA adapters; saved under ``folder`` (if given) so they can be fine-tuned."""
    import peft

    import hora
    from app.store import ModelStore, Variant

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


# ---------------------------------------------------------------------------------------------------------------
# A Hub cache built by hand (no network), and adapter folders to tamper with


HUB_SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_repo(cache: Path, repo_id: str, source: Path, commit: str = HUB_SHA, ref: str = "main") -> Path:
    """Copy ``source`` into ``cache`` in the Hub cache layout: blobs/ by sha256, snapshots/<commit>/ of relative
    symlinks, refs/<ref> holding the commit (as tests/test_hub.py does)."""
    import hashlib
    import os
    import shutil

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def saved_adapter(folder: Path, base_factory=tiny_llama, config=None, **changes) -> Path:
    """A PEFT adapter of ``base_factory()`` saved to ``folder``, its ``adapter_config.json`` then edited with
    ``changes`` (keys set to the given values)."""
    import json

    import peft

    import hora

    config = config or hora.HoraConfig(r=4, hyper_hidden=8)
    peft.get_peft_model(base_factory(), config).save_pretrained(folder)
    if changes:
        path = folder / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder
