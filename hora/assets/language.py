"""The language base: a byte-level BPE tokenizer and a tiny Llama pretrained on modern-spelling Shakespeare."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn


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


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


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
            group["lr"] = cosine_lr(step, steps, lr, warmup=max(1, steps // 20))
        ids = random_windows(stream, batch, CONTEXT, generator)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
