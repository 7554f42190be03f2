"""The committed embedded assets: manifest, size budget, cards, loading, and the cards' numbers re-measured."""

from __future__ import annotations

import copy
import json

import numpy as np
import peft
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hora.assets.cards import MANIFEST, manifest_entries
from hora.assets.common import read_metadata
from hora.assets.language import eval_windows, windows_loss
from hora.cards import card_metrics
from hora.cards import read as read_card
from hora.hub import assets_dir, embedded_assets
from hora.loaders import load_adapter, load_base


ROOT = assets_dir()
BUDGET_BYTES = 25 * 2**20
ACCURACY_TOLERANCE = 1 / 500 + 1e-6  # one held-out image: argmax ties can flip with the thread count
LOSS_TOLERANCE = 2e-3  # nats per token; cards round to 4 decimals
BASES = ("vit-digits", "lm-shakespeare")
VISION_ADAPTERS = ("head", "lora", "hora", "dora", "doran")
LM_ADAPTERS = ("lora", "hora", "dora", "doran")


@pytest.fixture(scope="module")
def manifest() -> dict:
    path = ROOT / MANIFEST
    assert path.is_file(), f"No {path}: build the embedded assets with `python -m hora.assets build`."
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def bases() -> dict:
    return {name: load_base(name) for name in BASES}


def test_manifest_sha256_and_budget(manifest):
    assert not manifest["quick"], "assets/ holds a --quick smoke build, not the real assets"
    actual = manifest_entries(ROOT)
    assert sorted(actual) == sorted(manifest["files"]), "files added or removed since the build"
    changed = [path for path, entry in manifest["files"].items() if actual[path]["sha256"] != entry["sha256"]]
    assert not changed, f"files changed since the build: {changed}"
    total = sum(entry["bytes"] for entry in actual.values())
    assert total == manifest["total_bytes"] and total <= BUDGET_BYTES


def test_the_manifest_leaves_out_scratch_folders(tmp_path):
    # an interrupted benchmark keeps its finished variants in assets/.runs-bench-<base>/ (ignored by git): a clean
    # clone has no such folder, so the manifest must not list it
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "README.md").write_text("results")
    for scratch in (".runs-bench-x", ".tmp-adapter-1-abc", "bench/.old-x-1"):
        (tmp_path / scratch).mkdir(parents=True)
        (tmp_path / scratch / "run.json").write_text("{}")
    assert list(manifest_entries(tmp_path)) == ["bench/README.md"]


def tiny_assets() -> dict:
    """The tiny bases' assets (the real bases' are checked in tests/test_real_assets.py)."""
    return {n: f for n, f in embedded_assets().items() if n.split("/")[0] in BASES}


def test_every_asset_is_listed_with_a_card():
    assets = tiny_assets()
    expected = set(BASES) | {f"vit-digits/{m}" for m in VISION_ADAPTERS} | {f"lm-shakespeare/{m}" for m in LM_ADAPTERS}
    assert set(assets) == expected
    for name, folder in assets.items():
        card = read_card(folder)
        for key in ("license", "library_name", "tags", "metrics", "model-index", "datasets", "source"):
            assert card.get(key), f"{name}: the card's YAML has no {key!r}"
        assert card_metrics(card), f"{name}: no metric values in model-index"
        if "/" in name:
            assert card["base_model"] == name.split("/")[0]
        assert read_metadata(folder)["metrics"]


def test_loader_loads_every_embedded_asset(bases):
    assert bases["vit-digits"].kind == "image" and bases["lm-shakespeare"].kind == "lm"
    image = Image.open(sorted((ROOT / "examples").glob("digit-*.png"))[0])
    pixels = bases["vit-digits"].processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
    ids = bases["lm-shakespeare"].processor("Good morrow", return_tensors="pt")["input_ids"]
    for name in tiny_assets():
        if "/" not in name:
            continue
        base = bases[name.split("/")[0]]
        model = load_adapter(copy.deepcopy(base.model), name)
        if not name.endswith("/head"):
            assert isinstance(model, peft.PeftModel)
        with torch.no_grad():
            out = model(pixel_values=pixels) if base.kind == "image" else model(input_ids=ids)
        assert torch.isfinite(out.logits).all()
        if base.kind == "image":
            assert out.logits.shape[-1] == 10 and model.config.id2label[9] == "9"


def test_vision_card_reproduces(bases):
    """Re-measure vit-digits/hora on the held-out digits recorded in the base's metadata."""
    base = bases["vit-digits"]
    meta = read_metadata(base.path)
    held = load_file(ROOT / meta["eval_file"])
    assert held["indices"].tolist() == meta["data"]["heldout_indices"]
    try:  # the bundled images are load_digits()'s, when scikit-learn is there to say so
        from sklearn.datasets import load_digits

        assert np.array_equal(load_digits().images[held["indices"].numpy()], held["images"].numpy())
    except ImportError:
        pass
    images = [
        Image.fromarray(np.round(x.numpy() * (255 / 16)).astype(np.uint8), mode="L").convert("RGB")
        for x in held["images"]
    ]
    pixels = base.processor(images=images, return_tensors="pt")["pixel_values"]
    model = load_adapter(copy.deepcopy(base.model), "vit-digits/hora")
    with torch.no_grad():
        predictions = model(pixel_values=pixels).logits.argmax(-1)
    measured = float((predictions == held["labels"]).float().mean())
    card = card_metrics(read_card(base.path / "adapters" / "hora"))
    assert abs(measured - card["held-out accuracy, 10 digits"]) <= ACCURACY_TOLERANCE


def test_lm_card_reproduces(bases):
    """Re-measure lm-shakespeare/doran on the held-out sample of Macbeth and The Tempest."""
    base = bases["lm-shakespeare"]
    meta = read_metadata(base.path)
    files = meta["data"]["heldout_files"]["folio"]
    per_work, context = meta["data"]["eval_windows"]["per_work"], meta["data"]["eval_windows"]["context"]
    texts = [(ROOT / f).read_text(encoding="utf-8") for f in files]
    windows = eval_windows(base.processor, texts, per_text=per_work, context=context)
    model = load_adapter(copy.deepcopy(base.model), "lm-shakespeare/doran")
    measured = windows_loss(model, windows)["loss"]
    card = card_metrics(read_card(base.path / "adapters" / "doran"))
    assert abs(measured - card["held-out loss, First Folio spelling"]) <= LOSS_TOLERANCE


def test_cards_show_the_adapters_help():
    """What the cards claim: every vision adapter beats the head-only baseline; every LM adapter lowers the
    held-out Folio loss of the base."""
    vision = {m: card_metrics(read_card(ROOT / "vit-digits" / "adapters" / m)) for m in VISION_ADAPTERS}
    head = vision["head"]["held-out accuracy, 10 digits"]
    for method in VISION_ADAPTERS[1:]:
        assert vision[method]["held-out accuracy, 10 digits"] > head, method
    base_loss = card_metrics(read_card(ROOT / "lm-shakespeare"))["held-out loss, First Folio spelling"]
    for method in LM_ADAPTERS:
        card = card_metrics(read_card(ROOT / "lm-shakespeare" / "adapters" / method))
        assert card["held-out loss, First Folio spelling"] < base_loss, method


def test_examples_are_held_out():
    heldout = set(read_metadata(ROOT / "vit-digits")["data"]["heldout_indices"])
    digits = sorted((ROOT / "examples").glob("digit-*-heldout-*.png"))
    assert len(digits) == 10
    for path in digits:
        assert int(path.stem.rsplit("-", 1)[1]) in heldout
    assert sorted((ROOT / "examples").glob("*.txt"))[0].name.startswith("folio-")


def test_samples_load_as_the_fine_tune_tab_offers_them():
    """The bundled samples are real training data (the few-shot pool, a Folio play adapted on), never held-out."""
    from hora.data import ImageClassificationData, LanguageModelingData, load_data

    meta = read_metadata(ROOT / "vit-digits")["data"]
    digits = load_data(ROOT / "samples" / "digits-10-shot.zip")
    assert isinstance(digits, ImageClassificationData)
    assert sorted(digits.classes) == [str(d) for d in range(10)] and len(digits.labels) == 100
    indices = {int(name.rsplit("/", 1)[-1].split(".")[0]) for name in digits.names}
    assert indices <= set(meta["fewshot_pool_indices"]) and not indices & set(meta["heldout_indices"])

    (folio,) = sorted((ROOT / "samples").glob("folio-*.txt"))
    text = load_data(folio)
    assert isinstance(text, LanguageModelingData) and len(text.texts[0]) > 10_000
    lm = read_metadata(ROOT / "lm-shakespeare")["data"]
    play = folio.stem.removeprefix("folio-") + "_gut_f"
    assert play in lm["adapt_works"] and all(play not in stems for stems in lm["heldout_works"].values())
