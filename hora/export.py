"""Export trained HoRA adapters as plain PEFT LoRA adapters (and DoRAN as DoRA).

Once trained, HoRA's generator only ever sees its learned seeds, so its factors are fixed: a HoRA
adapter *is* a rank-r LoRA with A = G_A(Ā) and B = [G_B(B̄_1); …; G_B(B̄_H)]. Exporting writes that
LoRA, which loads in stock PEFT with no hora import, wherever LoRA is served.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from hora.generator import BlockGenerator
from hora.geometry import projection_key
from hora.io import atomic_dir
from hora.tuners.doran.config import DoranConfig
from hora.tuners.hora.config import GeneratedFactorsConfig, HoraConfig


_MODEL_PREFIX = "base_model.model."


def _config(config_dict: dict) -> GeneratedFactorsConfig:
    """The HoRA / DoRAN config object of a saved ``adapter_config.json`` (its block keys are the tuner's own)."""
    method = str(config_dict.get("peft_type", "")).upper()
    classes = {"HORA": HoraConfig, "DORAN": DoranConfig}
    if method not in classes:
        raise ValueError(f"Expected a HORA or DORAN adapter, got peft_type {config_dict.get('peft_type')!r}.")
    names = {f.name for f in dataclasses.fields(classes[method])}
    fields = classes[method].check_kwargs(**{k: v for k, v in config_dict.items() if k in names and k != "peft_type"})
    return classes[method](**fields)


def _read_adapter(model_or_dir: PeftModel | str | os.PathLike, adapter: str) -> tuple[dict, dict]:
    """(config as a dict, checkpoint-format state dict) of a live PeftModel or a saved adapter folder."""
    if isinstance(model_or_dir, PeftModel):
        if adapter not in model_or_dir.peft_config:
            raise ValueError(f"Adapter {adapter!r} not found; the model has {list(model_or_dir.peft_config)}.")
        config = model_or_dir.peft_config[adapter].to_dict()
        state = get_peft_model_state_dict(model_or_dir, adapter_name=adapter)
        return config, {k: v.detach().cpu() for k, v in state.items()}
    folder = Path(model_or_dir)
    if not (folder / "adapter_config.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
        raise ValueError(
            f"{folder} is not a saved adapter: it needs adapter_config.json and adapter_model.safetensors."
        )
    config = json.loads((folder / "adapter_config.json").read_text())
    return config, load_file(folder / "adapter_model.safetensors")


def generated_factors(config: dict, state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module path (checkpoint prefix) -> generated (A, B), from a HoRA or DoRAN checkpoint's tensors.

    The generators are rebuilt from the checkpoint and asked for the factors exactly as the tuner's layers ask
    (``BlockGenerator.factors``), each module served by the block the tuner assigns (``config.block_key``).
    """
    tuner_config = _config(config)
    prefix = {"HORA": "hora_", "DORAN": "doran_"}[str(config["peft_type"]).upper()]
    gen_prefix = f"base_model.{prefix}generator.blocks."
    by_block: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(gen_prefix):
            block, rest = key[len(gen_prefix) :].split(".", 1)
            by_block.setdefault(block, {})[rest] = value
    generators = {
        block: BlockGenerator.from_state_dict(
            tensors, tuner_config.hyper_hidden, tuner_config.share_qv, tuner_config.output_scale()
        )
        for block, tensors in by_block.items()
    }
    factors = {}
    with torch.no_grad():
        for key in state:
            if not key.endswith(f".{prefix}A_seed"):
                continue
            module = key[: -len(f".{prefix}A_seed")]
            path = module.removeprefix(_MODEL_PREFIX)
            generator = generators[tuner_config.block_key(path)]
            projection = projection_key(path)
            a_seed, b_seed = state[key].float(), state[f"{module}.{prefix}B_seed"].float()
            A, B = generator.factors(projection, a_seed, b_seed, generator.head_dim(projection))
            factors[module] = (A.contiguous(), B.contiguous())
    return factors


def _passthrough(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries that are not the method's own (modules_to_save, trainable biases): copied as they are."""
    return {k: v for k, v in state.items() if prefix not in k.rsplit(".", 1)[-1] and f".{prefix}" not in k}


def lora_config_from(config: dict, **extra) -> LoraConfig:
    """The LoraConfig equivalent to a HoRA / DoRAN config."""
    return LoraConfig(
        r=config["r"],
        lora_alpha=config["lora_alpha"],
        lora_dropout=config.get("dropout", 0.0),
        target_modules=config["target_modules"],
        exclude_modules=config.get("exclude_modules"),
        fan_in_fan_out=config.get("fan_in_fan_out", False),
        modules_to_save=config.get("modules_to_save"),
        layers_to_transform=config.get("layers_to_transform"),
        layers_pattern=config.get("layers_pattern"),
        base_model_name_or_path=config.get("base_model_name_or_path"),
        revision=config.get("revision"),
        task_type=config.get("task_type"),
        **extra,
    )


def _write(out_dir: str | os.PathLike, lora_config: LoraConfig, tensors: dict[str, torch.Tensor]) -> Path:
    with atomic_dir(out_dir) as tmp:
        lora_config.save_pretrained(tmp)
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            tmp / "adapter_model.safetensors",
            metadata={"format": "pt"},
        )
    return Path(out_dir)


def export_lora(
    model_or_dir: PeftModel | str | os.PathLike, out_dir: str | os.PathLike, adapter: str = "default"
) -> Path:
    """Write a trained HoRA adapter as a standard PEFT LoRA adapter in ``out_dir``.

    ``model_or_dir`` is a ``PeftModel`` holding the HoRA adapter ``adapter`` or a saved HoRA adapter
    folder (no base model needed: the factors depend only on the adapter's own tensors). The result
    loads with ``peft.PeftModel.from_pretrained`` alone and gives the same outputs (to float precision).
    """
    config, state = _read_adapter(model_or_dir, adapter)
    if str(config.get("peft_type")).upper() != "HORA":
        raise ValueError(
            f"export_lora expects a HORA adapter, got {config.get('peft_type')!r}; use export_dora for DORAN."
        )
    tensors = _passthrough(state, "hora_")
    for module, (A, B) in generated_factors(config, state).items():
        tensors[f"{module}.lora_A.weight"] = A
        tensors[f"{module}.lora_B.weight"] = B
    return _write(out_dir, lora_config_from(config), tensors)


def export_dora(
    model_or_dir: PeftModel | str | os.PathLike,
    out_dir: str | os.PathLike,
    adapter: str = "default",
    base_model: torch.nn.Module | None = None,
) -> Path:
    """Write a trained DoRAN adapter as a standard PEFT DoRA adapter in ``out_dir``.

    DoRAN's W' = m ⊙ V / (‖V‖_c + τ) with V = W0 + s·BA is exactly DoRA's m' ⊙ V / ‖V‖_c with
    m' = m·‖V‖_c / (‖V‖_c + τ). That needs W0, so a saved folder also needs ``base_model`` (a copy of it is
    adapted; the model passed in is left as it is).
    """
    from hora.tuners.doran.layer import DoranLayer

    if not isinstance(model_or_dir, PeftModel):
        if base_model is None:
            raise ValueError("Exporting a saved DoRAN folder to DoRA needs `base_model`: m' depends on W0.")
        config, _ = _read_adapter(model_or_dir, adapter)
        if str(config.get("peft_type")).upper() != "DORAN":
            raise ValueError(f"export_dora expects a DORAN adapter, got {config.get('peft_type')!r}.")
        model_or_dir = PeftModel.from_pretrained(copy.deepcopy(base_model), str(model_or_dir), adapter_name=adapter)
    model = model_or_dir
    config, state = _read_adapter(model, adapter)
    if str(config.get("peft_type")).upper() != "DORAN":
        raise ValueError(
            f"export_dora expects a DORAN adapter, got {config.get('peft_type')!r}; use export_lora for HORA."
        )
    tensors = _passthrough(state, "doran_")
    with torch.no_grad():
        for path, module in model.named_modules():
            if not isinstance(module, DoranLayer) or adapter not in module.doran_A_seed:
                continue
            if module.merged:
                raise ValueError("Unmerge the adapter (model.unmerge_adapter()) before exporting it.")
            A, B = module.factors(adapter)
            tensors[f"{path}.lora_A.weight"] = A.detach().float().cpu()
            tensors[f"{path}.lora_B.weight"] = B.detach().float().cpu()
            tensors[f"{path}.lora_magnitude_vector"] = module.effective_magnitude(adapter).detach().float().cpu()
    return _write(out_dir, lora_config_from(config, use_dora=True), tensors)
