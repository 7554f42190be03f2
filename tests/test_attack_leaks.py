"""Attack: read the server's file system out of what it shows and what a visitor downloads.

A trained adapter recorded the server's absolute asset path as its ``base_model_name_or_path``, the offline Hub
error named the server's cache folder, and load errors quoted full paths. Loaded bases now call themselves by name
(embedded, packaged and Hub bases; a local folder inside the assets or a Hub snapshot too), messages in public mode
name no server folder, and library errors are redacted before they are shown.
"""

from __future__ import annotations

import json

import pytest
from helpers import char_tokenizer, hub_cache_repo, save_gpt2, save_vit, write_image_folder

from hora import hub
from hora.hub import HubError
from hora.loaders import load_base


needs_assets = pytest.mark.skipif(not hub.embedded_assets(), reason="no embedded assets")


@needs_assets
def test_an_embedded_base_calls_itself_by_name_even_when_given_as_a_path():
    import peft

    for given in ("vit-digits", hub.assets_dir() / "vit-digits", f"{hub.assets_dir()}/./vit-digits/"):
        model = load_base(given).model
        assert model.name_or_path == model.config._name_or_path == "vit-digits", given
        adapted = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
        assert adapted.peft_config["default"].base_model_name_or_path == "vit-digits"


@needs_assets
def test_a_trained_adapter_records_no_server_path(tmp_path):
    from hora.config import TrainConfig
    from hora.train import train

    data = write_image_folder(tmp_path / "data", per_class=3)
    config = TrainConfig(method="lora", shots=2, steps=2, batch_size=4, eval_every=None, r=2)
    train(str(hub.assets_dir() / "vit-digits"), data, config, out_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "vit-digits"
    assert str(hub.assets_dir()) not in (tmp_path / "run" / "adapter_config.json").read_text()


def test_a_hub_base_is_its_repo_id_even_by_its_snapshot_path(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    snapshot = hub_cache_repo(cache, "someone/tiny-vit", save_vit(tmp_path / "src"))
    assert load_base("someone/tiny-vit").model.name_or_path == "someone/tiny-vit"
    assert load_base(snapshot).model.name_or_path == "someone/tiny-vit"
    assert hub.display_name(tmp_path / "src") is None


def test_the_offline_hub_error_names_no_cache_folder_in_public_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "secret-cache"))
    monkeypatch.delenv("HORA_PUBLIC", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/hora")
    with pytest.raises(HubError) as info:
        load_base("nobody/nothing")
    assert "HF_HUB_OFFLINE" in str(info.value) and "secret-cache" not in str(info.value)
    with pytest.raises(HubError) as info:
        load_base("nobody/nothing", allow_local=False)
    assert "secret-cache" not in str(info.value)


def test_load_errors_quote_no_server_path(tmp_path):
    vit = save_vit(tmp_path / "srv" / "vit")
    (vit / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(HubError) as info:
        load_base(vit)
    assert str(tmp_path) not in str(info.value) and "preprocessor_config.json" in str(info.value)
    lm = save_gpt2(tmp_path / "srv" / "lm")
    char_tokenizer()  # the folder has its tokenizer; spoil it
    (lm / "tokenizer.json").write_text("{not json")
    with pytest.raises(HubError) as info:
        load_base(lm)
    assert str(tmp_path) not in str(info.value)
    assert hub.redact(f"{lm}/x.json and {tmp_path}", lm) == f"<…>/x.json and {tmp_path}"


def test_push_refusals_name_no_server_folder(tmp_path):
    from hora.push import PushError, push_plan

    folder = tmp_path / "server" / "session" / "adapter"
    folder.mkdir(parents=True)
    with pytest.raises(PushError) as info:
        push_plan(folder, "me/x")
    assert str(folder.parent) not in str(info.value)
