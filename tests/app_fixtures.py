"""A ModelStore of tiny models (from configs) so the app's tests do not depend on the embedded assets."""

from __future__ import annotations

import peft
from tiny_models import char_tokenizer, tiny_llama, tiny_vit
from transformers import ViTImageProcessor

import hora
from app.store import ModelStore, Variant


def tiny_store() -> ModelStore:
    store = ModelStore()
    vit = tiny_vit()
    vit.config.id2label = {0: "zero", 1: "one", 2: "two"}
    store.add_base("tiny-vit", "image", vit, ViTImageProcessor(size={"height": 16, "width": 16}), "config")
    store.add_base("tiny-llama", "lm", tiny_llama(), char_tokenizer(), "config")
    for base_name in ("tiny-vit", "tiny-llama"):
        base = store.bases[base_name]
        for method, config in (
            ("lora", peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)),
            ("hora", hora.HoraConfig(r=4, hyper_hidden=8, init_weights=False)),
        ):
            model = peft.get_peft_model(base.fresh_copy(), config).eval()
            store.add_variant(
                base_name, Variant(method.upper() if method == "lora" else "HoRA", method, model, "test")
            )
    return store
