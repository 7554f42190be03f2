"""Check an adapter folder against its base before anything is built from it.

Adapters from uploads and the Hub are untrusted. ``check_adapter`` reads only JSON and safetensors headers
(no tensor data, never a pickle) and refuses, naming the mismatch, when the method is unknown, a target
module or saved tensor does not exist in the base, or a shape does not fit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.tuners.tuners_utils import check_target_module_exists
from safetensors import safe_open
from torch import nn

from hora.tuners.hora.layer import in_out_features


KNOWN_PEFT_TYPES = ("LORA", "HORA", "DORAN")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 1 << 20
MAX_RANK = 4096
_PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter folder that cannot be used with this base; the message names the mismatch."""


def read_adapter_config(folder: str | os.PathLike) -> dict:
    """The adapter's config after the checks that need no base model: files, JSON, method, rank."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"{folder} is not a folder.")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise AdapterError(
                f"{folder.name} only has pickled weights ({', '.join(pickles)}). hora never unpickles files (they can "
                "run code); convert the adapter to adapter_model.safetensors."
            )
        raise AdapterError(f"{folder.name} has no adapter_model.safetensors.")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterError(f"{folder.name} has no adapter_config.json.")
    if config_file.stat().st_size > MAX_CONFIG_BYTES:
        raise AdapterError("adapter_config.json is larger than 1 MB; that is not an adapter config.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterError(f"adapter_config.json is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise AdapterError("adapter_config.json must hold a JSON object.")
    peft_type = str(config.get("peft_type", ""))
    if peft_type not in KNOWN_PEFT_TYPES:
        raise AdapterError(
            f"Unsupported adapter type {peft_type!r}; hora loads {', '.join(KNOWN_PEFT_TYPES)} adapters."
        )
    rank = config.get("r")
    if not isinstance(rank, int) or not 1 <= rank <= MAX_RANK:
        raise AdapterError(f"Adapter rank r={rank!r} is not an integer between 1 and {MAX_RANK}.")
    return config


# adapter tensor name -> its shape, from (in_features, out_features, rank) of the module it adapts
_SHAPES = {
    "lora_A.weight": lambda i, o, r: (r, i),
    "lora_B.weight": lambda i, o, r: (o, r),
    "lora_magnitude_vector": lambda i, o, r: (o,),
    "hora_A_seed": lambda i, o, r: (r, i),
    "hora_B_seed": lambda i, o, r: (o, r),
    "doran_A_seed": lambda i, o, r: (r, i),
    "doran_B_seed": lambda i, o, r: (o, r),
    "doran_magnitude": lambda i, o, r: (o,),
    "doran_tau_raw": lambda i, o, r: (1,),  # per matrix; per channel it is (o,)
}


def check_adapter(base_model: nn.Module, folder: str | os.PathLike) -> dict:
    """Validate ``folder`` against ``base_model`` (a transformers model, not yet wrapped) and return its config.

    Raises ``AdapterError`` naming the first mismatches found.
    """
    folder = Path(folder)
    config = read_adapter_config(folder)
    try:
        peft_config = PEFT_TYPE_TO_CONFIG_MAPPING[config["peft_type"]].from_pretrained(str(folder))
    except (TypeError, ValueError) as err:
        raise AdapterError(
            f"adapter_config.json does not describe a valid {config['peft_type']} adapter: {err}"
        ) from err

    modules = dict(base_model.named_modules())
    targeted = [name for name in modules if name and check_target_module_exists(peft_config, name)]
    if not targeted:
        raise AdapterError(
            f"The adapter targets {sorted(peft_config.target_modules or [])}, which match no module of "
            f"{type(base_model).__name__}: it was made for another architecture."
        )
    params = dict(base_model.named_parameters())
    problems = []
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as tensors:
        for key in tensors.keys():
            shape = tuple(tensors.get_slice(key).get_shape())
            if not key.startswith(_PREFIX):
                continue  # the generator (base_model.<method>_generator...): checked when it is loaded
            path = key[len(_PREFIX) :]
            if path in params:  # modules_to_save, e.g. a classifier for a new label set
                if shape != tuple(params[path].shape):
                    problems.append(
                        f"{path} is {list(shape)} in the adapter but {list(params[path].shape)} in the base"
                    )
                continue
            name = next((t for t in _SHAPES if path.endswith("." + t)), None)
            owner = path[: -len(name) - 1] if name else path
            if name is None or owner not in modules:
                problems.append(f"{key} is neither a tensor of the base nor an adapter tensor of one of its modules")
                continue
            try:
                in_features, out_features = in_out_features(modules[owner])
            except TypeError as err:  # not a Linear / Conv1D
                problems.append(f"{owner!r}: {err}")
                continue
            expected = _SHAPES[name](in_features, out_features, int(config["r"]))
            if name == "doran_tau_raw" and shape == (out_features,):
                expected = shape  # τ per output channel
            if shape != expected:
                problems.append(
                    f"{path} is {list(shape)} but {type(modules[owner]).__name__} {owner!r} needs {list(expected)}"
                )
            if len(problems) >= 5:
                break
    if problems:
        raise AdapterError("The adapter does not fit this base model: " + "; ".join(problems) + ".")
    return config
