"""Attack: make the server build a model far larger than it can hold.

A folder with only a ``config.json`` declaring a larger ViT and a 76-byte weights file made ``load_base`` build a
randomly initialised 202 M-parameter model; repeating it under other spellings of the same folder grew the server by
gigabytes. Now the parameter count is computed from the config on the meta device before anything is built and
refused above a cap (giving both numbers), size fields are bounded, weights that cover only a sliver of the config
are refused (the rest would be random), a Hub repo is sized before it is downloaded, and one folder has one name.
"""

from __future__ import annotations

import os
import resource
import time

import pytest
import torch
from helpers import tiny_gpt2, tiny_llama, tiny_vit
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification

from hora.hub import HubError
from hora.loaders import load_base


VIT_LARGE = {  # 202,931,210 parameters once built
    "architectures": ["ViTForImageClassification"],
    "model_type": "vit",
    "hidden_size": 1024,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "image_size": 384,
    "patch_size": 16,
    "num_channels": 3,
    "id2label": {str(i): str(i) for i in range(10)},
}


@pytest.fixture
def config_only_folder(tmp_path):
    """config.json of a 202 M-parameter ViT and a weights file of a few bytes."""
    folder = tmp_path / "big-vit"
    ViTConfig(**{k: v for k, v in VIT_LARGE.items() if k != "model_type"}).save_pretrained(folder)
    save_file({"x": torch.zeros(1)}, folder / "model.safetensors")
    assert (folder / "model.safetensors").stat().st_size < 100
    return folder


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_config_with_almost_no_weights_is_refused_without_building_it(config_only_folder):
    before, start = _rss_mib(), time.perf_counter()
    with pytest.raises(HubError) as info:
        load_base(config_only_folder)
    message = str(info.value)
    assert "202,931,210 parameters" in message and "hold 1 values" in message and "random" in message
    assert time.perf_counter() - start < 5 and _rss_mib() - before < 200  # nothing of 800 MB was allocated


def test_a_model_above_the_cap_is_refused_with_both_numbers(tmp_path, monkeypatch):
    folder = tmp_path / "vit"
    tiny_vit().save_pretrained(folder)
    count = sum(p.numel() for p in tiny_vit().parameters())
    monkeypatch.setenv("HORA_MAX_BASE_PARAMS", str(count - 1))
    with pytest.raises(HubError, match=f"{count:,} parameters; this server builds at most {count - 1:,}"):
        load_base(folder)
    monkeypatch.setenv("HORA_MAX_BASE_PARAMS", str(count))
    assert load_base(folder).model.num_parameters() == count
    with pytest.raises(HubError, match="builds at most 10"):
        load_base(folder, max_params=10)


def test_the_cap_defaults_to_twice_over_what_memory_holds(monkeypatch):
    from hora.models import max_base_params, memory_bytes

    monkeypatch.delenv("HORA_MAX_BASE_PARAMS", raising=False)
    assert max_base_params() == memory_bytes() // 8 > 10**8  # float32, twice over
    for text, value in (("2e8", 200_000_000), ("200M", 200_000_000), ("1.5B", 1_500_000_000), ("12345", 12345)):
        monkeypatch.setenv("HORA_MAX_BASE_PARAMS", text)
        assert max_base_params() == value
    monkeypatch.setenv("HORA_MAX_BASE_PARAMS", "lots")
    with pytest.raises(ValueError, match="HORA_MAX_BASE_PARAMS='lots'"):
        max_base_params()


@pytest.mark.parametrize("factory,task", [(tiny_vit, "image"), (tiny_llama, "lm"), (tiny_gpt2, "lm")])
def test_the_count_on_the_meta_device_is_exact(factory, task):
    from hora.models import parameter_count

    model = factory()
    assert parameter_count(model.config, task) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_hidden_layers", 600),
        ("hidden_size", 10**6),
        ("intermediate_size", 10**7),
        ("image_size", 10**5),
        ("patch_size", 0),
        ("num_attention_heads", 10**5),
    ],
)
def test_size_fields_are_bounded_before_the_config_is_parsed(tmp_path, field, value):
    folder = tmp_path / "m"
    config = ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, image_size=8)
    ViTForImageClassification(config).save_pretrained(folder)
    raw = (folder / "config.json").read_text().replace(f'"{field}": {getattr(config, field)}', f'"{field}": {value}')
    (folder / "config.json").write_text(raw)
    start = time.perf_counter()
    with pytest.raises(HubError, match=f"`{field}` = {value} is not an integer between"):
        load_base(folder)
    assert time.perf_counter() - start < 2


def test_nested_configs_and_label_sets_are_bounded():
    from hora.models import check_config_sizes
    from hora.validate import AdapterError

    with pytest.raises(AdapterError, match="text_config.vocab_size"):
        check_config_sizes({"text_config": {"vocab_size": 10**9}})
    with pytest.raises(AdapterError, match="id2label"):
        check_config_sizes({"id2label": {str(i): "x" for i in range(100_001)}})
    check_config_sizes({**VIT_LARGE, "patch_size": [16, 16]})  # real configs pass


def test_one_folder_has_one_name(config_only_folder, tmp_path, monkeypatch):
    from hora.hub import canonical_name

    monkeypatch.chdir(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(config_only_folder)
    spellings = [
        str(config_only_folder),
        str(config_only_folder) + "/",
        str(config_only_folder.parent / "." / config_only_folder.name),
        f"{config_only_folder.parent}/../{config_only_folder.parent.name}/{config_only_folder.name}",
        "big-vit",
        str(link),
    ]
    assert {canonical_name(s) for s in spellings} == {os.path.realpath(config_only_folder)}
    assert canonical_name(" someone/model ") == "someone/model"


def test_a_hub_repo_is_sized_before_anything_is_downloaded(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.file_download import DryRunFileInfo

    if constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was set when huggingface_hub was imported")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    calls = []

    def fake_snapshot_download(repo_id, dry_run=False, **kw):
        calls.append(dry_run)
        if not dry_run:
            raise AssertionError("downloaded before the size was checked")
        return [DryRunFileInfo("0" * 40, 400 * 2**30, "model.safetensors", "", False, True)]

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HORA_MAX_BASE_PARAMS", "1e9")
    with pytest.raises(HubError, match=r"holds 400.00 GiB .* at most 3.9"):
        load_base("someone/huge-model")
    assert calls == [True]
