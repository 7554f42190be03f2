"""``python -m hora bench step-size``: how far an optimiser step moves each method's update, at the same learning
rate, side by side on the same model and batches.

The setting is SmolLM2's attention at small scale: a 2-layer Llama with hidden size 576, 9 query and 3 key-value
heads of 64, query and value adapted at r = 8, α = 16; AdamW without weight decay on random tokens. After 1 and 5
steps the report gives ‖ΔW‖ (Frobenius, over every adapted projection; the low-rank part s·B·A for DoRA and DoRAN)
of HoRA and DoRAN, with their generators' output scale (``generator_scale="unit_step"``, the default) and without
it (``1.0``), as ratios to LoRA's and DoRA's.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from typing import Any

import torch


def _model() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=2,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def _low_rank_norm(model: torch.nn.Module) -> float:
    """‖s·B·A‖ over every adapted module: the update's low-rank part (all of it for LoRA and HoRA)."""
    from peft.tuners.lora import LoraLayer

    from hora.tuners.hora.layer import GeneratedFactorsLayer

    total = 0.0
    for module in model.modules():
        if isinstance(module, GeneratedFactorsLayer):
            total += float(module._generated_weight("default").detach().pow(2).sum())
        elif isinstance(module, LoraLayer):
            A, B = module.lora_A["default"].weight, module.lora_B["default"].weight
            total += float(((B @ A) * module.scaling["default"]).detach().pow(2).sum())
    return math.sqrt(total)


def _configs() -> dict[str, Any]:
    import peft

    import hora

    targets = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    return {
        "LoRA": peft.LoraConfig(**targets),
        "HoRA": hora.HoraConfig(**targets),
        "HoRA, unscaled generator": hora.HoraConfig(**targets, generator_scale=1.0),
        "DoRA": peft.LoraConfig(**targets, use_dora=True),
        "DoRAN": hora.DoranConfig(**targets),
        "DoRAN, unscaled generator": hora.DoranConfig(**targets, generator_scale=1.0),
    }


REFERENCE = {
    "HoRA": "LoRA",
    "HoRA, unscaled generator": "LoRA",
    "DoRA": "LoRA",
    "DoRAN": "DoRA",
    "DoRAN, unscaled generator": "DoRA",
}


def step_size(lrs: Sequence[float] = (1e-3, 3e-3), checkpoints: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """‖ΔW‖ of every method after each checkpoint step at each rate, and the ratios of ``REFERENCE``."""
    import peft

    tokens = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(1))
    norms: dict[str, dict[str, dict[str, float]]] = {}
    for name, config in _configs().items():
        for lr in lrs:
            model = peft.get_peft_model(_model(), config)
            torch.manual_seed(1)
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
            for step in range(1, max(checkpoints) + 1):
                model(input_ids=tokens, labels=tokens).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if step in checkpoints:
                    norms.setdefault(name, {}).setdefault(f"{lr:g}", {})[str(step)] = _low_rank_norm(model)
    ratios = {
        name: {
            lr: {step: value / norms[reference][lr][step] for step, value in steps.items()}
            for lr, steps in norms[name].items()
        }
        for name, reference in REFERENCE.items()
    }
    return {
        "benchmark": "step_size",
        "setting": __doc__.split("\n\n")[1].replace("\n", " "),
        "lrs": list(lrs),
        "steps": list(checkpoints),
        "norms": norms,
        "reference": REFERENCE,
        "ratios": ratios,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }


def step_size_table(report: dict[str, Any]) -> str:
    """One row per method: ‖ΔW‖ as a multiple of its reference's after each step count, at each rate."""
    from hora import cards

    columns = [(lr, step) for lr in map(lambda x: f"{x:g}", report["lrs"]) for step in map(str, report["steps"])]
    header = [
        "method",
        "against",
        *[f"lr {lr}, after {step} step{'s' if step != '1' else ''}" for lr, step in columns],
    ]
    rows = [
        [name, reference, *[f"{report['ratios'][name][lr][step]:.2f}×" for lr, step in columns]]
        for name, reference in report["reference"].items()
    ]
    return cards.table(header, rows)


__all__ = ["REFERENCE", "step_size", "step_size_table"]
