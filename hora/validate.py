"""Check an adapter folder against its base before anything is built from it; the bounds every size obeys.

Adapters from uploads, local folders and the Hub are untrusted. ``check_adapter`` reads only JSON and safetensors
headers first (never a pickle) and refuses, naming the mismatch, when the method is unknown, a size is out of
bounds, a target module or saved tensor does not exist in the base, or a shape does not fit; then it reads the
tensors once to refuse NaN or infinite weights.

An untrusted ``adapter_config.json`` is data, not a program: PEFT treats a string ``target_modules`` (and
``exclude_modules``, the keys of ``rank_pattern`` ...) as a regular expression matched against every module name,
and a catastrophically backtracking pattern such as ``(.*.*)*X`` would hold the interpreter for minutes. Untrusted
configs may only name modules (``["q_proj", "v_proj"]``), and the check runs on the JSON before PEFT sees it;
``peft_config`` then builds PEFT's config object from the checked dict, so PEFT never reads the file itself.
Adapters of the project's own ``assets/`` and runs the caller vouches for (``trusted=True``) may use patterns.

The size bounds (``MAX_RANK``, ``MAX_HIDDEN`` ...) are the one place the library, the training config
(``hora.config``) and the model-size check (``hora.models``) take them from.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from hora.tuners.hora.layer import in_out_features


KNOWN_PEFT_TYPES = ("LORA", "HORA", "DORAN")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# Bounds on every size an adapter, a model config or a training config may declare (generous for real models:
# Llama-3-70B has hidden 8192, 80 layers, 64 heads, vocabulary 128k; ImageNet-21k has 21,843 classes).
MAX_RANK = 4096
MAX_HYPER_HIDDEN = 8192
MAX_HIDDEN = 65_536  # hidden_size, n_embd, head_dim
MAX_INTERMEDIATE = 262_144  # intermediate_size, n_inner
MAX_LAYERS = 512
MAX_HEADS = 1024
MAX_EXPERTS = 1024
MAX_VOCAB = 1 << 20
MAX_POSITIONS = 1 << 20  # max_position_embeddings, n_positions; also the training context and max_length
MAX_LABELS = 100_000
MAX_IMAGE_SIZE = 4096
MAX_CHANNELS = 16
MAX_NAMES = 1024  # entries of target_modules and similar lists
MAX_NAME_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_CONFIG_BYTES = 1 << 20  # adapter_config.json, metrics.json, head_config.json
MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit

_PREFIX = "base_model.model."
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_NAME_FIELDS = ("target_modules", "exclude_modules", "modules_to_save", "target_parameters", "layers_pattern")
_SAFE_USE_FLAGS = {"use_dora", "use_rslora", "use_generator"}
_SAFE_LORA_INITS = (True, False, "gaussian")
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip


class AdapterError(ValueError):
    """An adapter folder that cannot be used with this base; the message names the mismatch."""


class UntrustedPatternError(AdapterError):
    """An untrusted config that gives a regular expression where hora accepts only module names."""


def is_plain_name(text: Any) -> bool:
    """A module name such as ``q_proj`` or ``model.layers.0.mlp``: no regular-expression syntax, not too long."""
    return isinstance(text, str) and len(text) <= MAX_NAME_CHARS and _PLAIN_NAME.fullmatch(text) is not None


def check_int(value: Any, name: str, low: int, high: int, where: str = "adapter_config.json") -> int:
    """``value`` as an int in [low, high], else an ``AdapterError`` naming the field and the bounds."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AdapterError(f"{where}: `{name}` = {_short(value)} is not an integer between {low} and {high:,}.")
    return value


def _short(value: Any, chars: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= chars else text[: chars - 3] + "..."


def _check_names(config: dict, key: str, trusted: bool) -> None:
    value = config.get(key)
    if value is None:
        return
    if isinstance(value, str):
        if trusted:
            return
        if is_plain_name(value) and key == "layers_pattern":
            return  # a single layer-list name, e.g. "layers"
        raise UntrustedPatternError(
            f"adapter_config.json gives `{key}` as the string {_short(value)}, which PEFT matches as a regular "
            f"expression against every module name; from an untrusted source hora accepts only a list of module "
            f'names, e.g. ["q_proj", "v_proj"]. Save the adapter with a list of names.'
        )
    if not isinstance(value, (list, tuple)) or len(value) > MAX_NAMES:
        raise AdapterError(f"adapter_config.json: `{key}` must be a list of at most {MAX_NAMES} module names.")
    bad = [v for v in value if not is_plain_name(v)]
    if bad and not (trusted and all(isinstance(v, str) and len(v) <= MAX_NAME_CHARS for v in bad)):
        raise UntrustedPatternError(
            f"adapter_config.json: `{key}` holds {_short(bad[0])}, which is not a plain module name (letters, digits, "
            "'_', '-' and '.' only); hora accepts only module names from an untrusted source, never patterns."
        )


def _check_patterns(config: dict, trusted: bool) -> None:
    """``rank_pattern`` / ``alpha_pattern`` (PEFT matches their keys as regular expressions) and ``head_layout``."""
    for key, bound in (("rank_pattern", MAX_RANK), ("alpha_pattern", None), ("head_layout", MAX_HIDDEN)):
        value = config.get(key)
        if value in (None, {}):
            continue
        if not isinstance(value, dict) or len(value) > MAX_NAMES:
            raise AdapterError(f"adapter_config.json: `{key}` must map at most {MAX_NAMES} module names to sizes.")
        for name, size in value.items():
            if not trusted and not is_plain_name(name):
                raise UntrustedPatternError(
                    f"adapter_config.json: `{key}` has the key {_short(name)}, which PEFT matches as a regular "
                    "expression; hora accepts only plain module names from an untrusted source."
                )
            if bound is None:
                _check_number(size, f"{key}[{name!r}]")
            else:
                check_int(size, f"{key}[{name!r}]", 1, bound)


def _check_number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdapterError(f"adapter_config.json: `{name}` = {_short(value)} is not a finite number.")


def _check_features(config: dict) -> None:
    """Untrusted configs may not switch on PEFT features that run extra code or initialisation at load time."""
    for key, value in config.items():
        if key.endswith("_config") and value not in (None, {}, False):
            raise AdapterError(
                f"adapter_config.json sets `{key}`; hora loads plain {config['peft_type']} adapters only and "
                "does not run that feature from an untrusted source."
            )
        if key.startswith("use_") and key not in _SAFE_USE_FLAGS and value not in (None, False):
            raise AdapterError(f"adapter_config.json sets `{key}`, which hora does not load from an untrusted source.")
    if config.get("layer_replication") not in (None, []):
        raise AdapterError(
            "adapter_config.json sets `layer_replication`, which hora does not load from untrusted sources."
        )
    if config.get("megatron_core") not in (None, "megatron.core"):
        raise AdapterError("adapter_config.json names a `megatron_core` module to import; hora never imports it.")
    if config.get("trainable_token_indices") is not None:
        raise AdapterError("adapter_config.json sets `trainable_token_indices`, which hora does not load.")
    if "init_lora_weights" in config and config["init_lora_weights"] not in _SAFE_LORA_INITS:
        raise AdapterError(
            f"adapter_config.json: init_lora_weights={_short(config['init_lora_weights'])} changes the base weights "
            "or runs a data-driven initialisation when loaded; hora loads adapters with true, false or 'gaussian'."
        )


def check_adapter_values(config: dict, trusted: bool = False) -> dict:
    """Bounds on every size field of an adapter config and, for an untrusted one, names instead of patterns.

    Runs on the parsed JSON before PEFT sees it; raises ``AdapterError`` (``UntrustedPatternError`` for a pattern).
    """
    check_int(config.get("r"), "r", 1, MAX_RANK)
    for key in ("lora_alpha", "tau_init", "seed_std"):
        if key in config and config[key] is not None:
            _check_number(config[key], key)
    for key in ("dropout", "lora_dropout"):
        if key in config and config[key] is not None:
            _check_number(config[key], key)
            if not 0 <= config[key] < 1:
                raise AdapterError(f"adapter_config.json: `{key}` = {config[key]} is not in [0, 1).")
    if config.get("hyper_hidden") is not None:
        check_int(config["hyper_hidden"], "hyper_hidden", 1, MAX_HYPER_HIDDEN)
    layers = config.get("layers_to_transform")
    if layers is not None:
        for index in layers if isinstance(layers, list) else [layers]:
            check_int(index, "layers_to_transform", 0, MAX_LAYERS - 1)
        if isinstance(layers, list) and len(layers) > MAX_LAYERS:
            raise AdapterError(f"adapter_config.json: `layers_to_transform` lists more than {MAX_LAYERS} layers.")
    for key in _NAME_FIELDS:
        _check_names(config, key, trusted)
    _check_patterns(config, trusted)
    if not trusted:
        _check_features(config)
    return config


def _read_json(path: Path, what: str) -> Any:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise AdapterError(f"{what} is larger than {MAX_CONFIG_BYTES >> 20} MB; that is not what hora writes there.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise AdapterError(f"{what} is not valid JSON: {err}") from err


def read_adapter_config(folder: str | os.PathLike, trusted: bool = False) -> dict:
    """The adapter's config after the checks that need no base model: files, JSON, method, sizes, patterns."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"{folder.name} is not a folder.")
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
    config = _read_json(config_file, "adapter_config.json")
    if not isinstance(config, dict):
        raise AdapterError("adapter_config.json must hold a JSON object.")
    peft_type = str(config.get("peft_type", ""))
    if peft_type not in KNOWN_PEFT_TYPES:
        raise AdapterError(
            f"Unsupported adapter type {_short(peft_type)}; hora loads {', '.join(KNOWN_PEFT_TYPES)} adapters."
        )
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= MAX_RANK:
        raise AdapterError(f"Adapter rank r={_short(rank)} is not an integer between 1 and {MAX_RANK}.")
    return check_adapter_values(config, trusted)


def peft_config(config: dict) -> Any:
    """PEFT's config object built from a checked ``adapter_config.json`` dict (PEFT never reads the file)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    values = {k: v for k, v in config.items() if k != "auto_mapping"}  # names a module to import: not needed
    try:
        config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[config["peft_type"]]
        # as PEFT's from_pretrained does: a config class may fill in what files saved before a field existed meant
        return config_cls.from_peft_type(**config_cls.check_kwargs(**values))
    except (TypeError, ValueError, KeyError) as err:
        raise AdapterError(
            f"adapter_config.json does not describe a valid {config['peft_type']} adapter: {err}"
        ) from err


def read_safetensors_header(path: str | os.PathLike, what: str | None = None) -> dict[str, tuple[str, tuple]]:
    """``{tensor name: (dtype, shape)}`` of a safetensors file, after checking its layout against its size.

    A pickle renamed ``.safetensors``, a header that claims more bytes than the file holds (10 GB in a 1 KB file)
    or offsets outside the file are refused with an ``AdapterError`` before the safetensors library parses it.
    """
    path = Path(path)
    what = what or path.name
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= length <= min(size - 8, MAX_SAFETENSORS_HEADER):
            raise AdapterError(
                f"{what} is not a safetensors file: its header claims {max(length, 0):,} bytes but the file holds "
                f"{size:,} (a renamed pickle, or a damaged or truncated download). Save it again with safetensors."
            )
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise AdapterError(f"{what} is not a safetensors file: its header is not valid JSON ({err}).") from err
    if not isinstance(header, dict):
        raise AdapterError(f"{what} is not a safetensors file: its header is not a JSON object.")
    data_bytes, found = size - 8 - length, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            ok = dtype in _DTYPE_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
            ok = ok and isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_bytes
            ok = ok and end - start == math.prod(shape) * _DTYPE_BYTES[dtype]
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise AdapterError(f"{what} is damaged: tensor {_short(name)} has an invalid entry in the header.")
        found[name] = (dtype, shape)
    return found


def check_finite(path: str | os.PathLike, what: str | None = None) -> None:
    """Refuse a safetensors file whose floating-point tensors hold NaN or infinity (a diverged training)."""
    import torch
    from safetensors import safe_open

    what = what or Path(path).name
    bad = []
    with safe_open(os.fspath(path), framework="pt") as tensors:
        for key in tensors.keys():
            tensor = tensors.get_tensor(key)
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad.append(key)
    if bad:
        raise AdapterError(
            f"{what} holds NaN or infinite values in {len(bad)} tensor(s), e.g. {bad[0]}: the adapter is broken "
            "(its training diverged?) and would make every prediction NaN. Train it again."
        )


def check_labels(labels: Any, where: str) -> dict[int, str]:
    """An ``id2label`` map of a run record: ``{"0": name, ...}`` with indices 0..n-1 and short names."""
    if not isinstance(labels, dict) or not 1 <= len(labels) <= MAX_LABELS:
        raise AdapterError(f"{where}: id2label must map class indices to names (1 to {MAX_LABELS:,} classes).")
    out = {}
    for key, value in labels.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(labels) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise AdapterError(f"{where}: id2label entry {_short(key)}: {_short(value)} is not index: name.")
        if len(str(value)) > MAX_LABEL_CHARS:
            raise AdapterError(f"{where}: the label of class {index} is longer than {MAX_LABEL_CHARS} characters.")
        out[index] = str(value)
    if len(out) != len(labels):
        raise AdapterError(f"{where}: id2label repeats a class index.")
    return dict(sorted(out.items()))


def _base_view(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, tuple]]:
    """Modules and parameter shapes of the base model, seen through any PEFT layers already inserted."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    modules, params = {}, {}

    def visit(module: nn.Module, prefix: str) -> None:
        for attr in ("base_layer", "original_module"):  # a PEFT layer, a ModulesToSaveWrapper
            inner = getattr(module, attr, None)
            if isinstance(inner, nn.Module):
                module = inner
                break
        modules[prefix] = module
        for name, param in module.named_parameters(recurse=False):
            params[f"{prefix}.{name}" if prefix else name] = tuple(param.shape)
        for name, child in module.named_children():
            visit(child, f"{prefix}.{name}" if prefix else name)

    visit(model, "")
    return modules, params


def _recorded_base(config: dict) -> str:
    """The base an adapter says it was trained on, as a name (a path recorded on another machine: its last part)."""
    recorded = config.get("base_model_name_or_path")
    if not isinstance(recorded, str) or not recorded:
        return "an unnamed base"
    return repr(Path(recorded).name if recorded.startswith(("/", "~", ".")) or "\\" in recorded else recorded)


def _fits(name: str, shape: tuple, modules: dict, config: dict) -> str | None:
    """Why an adapter tensor does not fit the module it adapts, or None."""
    kind = next((t for t in _SHAPES if name.endswith("." + t)), None)
    owner = name[: -len(kind) - 1] if kind else name
    if kind is None or owner not in modules:
        return f"{_PREFIX}{name} is neither a tensor of the base nor an adapter tensor of one of its modules"
    try:
        in_features, out_features = in_out_features(modules[owner])
    except TypeError as err:  # not a Linear / Conv1D
        return f"{owner!r}: {err}"
    expected = _SHAPES[kind](in_features, out_features, int(config["r"]))
    if kind == "doran_tau_raw" and shape == (out_features,):
        expected = shape  # τ per output channel
    if shape != expected:
        return f"{name} is {list(shape)} but {type(modules[owner]).__name__} {owner!r} needs {list(expected)}"
    return None


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


def _shape_problems(header: dict, modules: dict, params: dict, config: dict) -> list[str]:
    problems = []
    for key, (_, shape) in header.items():
        if not key.startswith(_PREFIX):  # the generator (base_model.<method>_generator...)
            hidden = config.get("hyper_hidden")
            if len(shape) == 2 and "_generator." in key and hidden is not None and hidden not in shape:
                problems.append(f"{key} is {list(shape)}, which does not fit hyper_hidden={hidden}")
            continue
        path = key[len(_PREFIX) :]
        if path in params:  # modules_to_save, e.g. a classifier for a new label set
            if shape != params[path]:
                problems.append(f"{path} is {list(shape)} in the adapter but {list(params[path])} in the base")
        elif (problem := _fits(path, shape, modules, config)) is not None:
            problems.append(problem)
        if len(problems) >= 5:
            break
    return problems


def check_adapter(base_model: nn.Module, folder: str | os.PathLike, trusted: bool = False) -> dict:
    """Validate ``folder`` against ``base_model`` (a transformers model, or a PeftModel of one) and return its config.

    ``trusted`` allows regular expressions in the config (the project's own adapters, the caller's own runs).
    Raises ``AdapterError`` naming the first mismatches found, and the base the adapter was made for.
    """
    from peft.tuners.tuners_utils import check_target_module_exists

    folder = Path(folder)
    config = read_adapter_config(folder, trusted)
    header = read_safetensors_header(folder / "adapter_model.safetensors")
    modules, params = _base_view(base_model)
    recorded, here = _recorded_base(config), type(modules[""]).__name__
    checked = peft_config(config)  # built only now: patterns and sizes are checked
    if not any(name and check_target_module_exists(checked, name) for name in modules):
        raise AdapterError(
            f"The adapter targets {sorted(checked.target_modules or [])}, which match no module of {here}: it was "
            f"made for another architecture (it records {recorded} as its base)."
        )
    problems = _shape_problems(header, modules, params, config)
    if problems:
        raise AdapterError(f"This adapter is for {recorded}, not for this {here}: " + "; ".join(problems) + ".")
    check_finite(folder / "adapter_model.safetensors")
    return config


__all__ = [
    "MAX_HIDDEN",
    "MAX_LABELS",
    "MAX_RANK",
    "AdapterError",
    "UntrustedPatternError",
    "check_adapter",
    "check_adapter_values",
    "check_finite",
    "check_int",
    "check_labels",
    "is_plain_name",
    "peft_config",
    "read_adapter_config",
    "read_safetensors_header",
]
