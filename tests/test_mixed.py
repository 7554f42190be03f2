"""Mixed-variant batches (hora.mixed): one forward pass serves LoRA, DoRA, HoRA, DoRAN and the base over one copy of
the base weights, and each row gives what its variant gives alone (logits, greedy and sampled generations, next-token
distributions, perplexities, top-k classes), on tiny ViT, GPT-2 (fused c_attn Conv1D) and Llama (GQA) models."""

from __future__ import annotations

import copy
import itertools
import json
import threading

import peft
import pytest
import torch
from helpers import BUILDERS, char_tokenizer, example_inputs
from PIL import Image
from transformers import ViTImageProcessor

import hora
from hora import infer
from hora.geometry import DEFAULT_TARGET_MODULES
from hora.mixed import MixedModel, RoutedLayer
from hora.models import new_head
from hora.variants import shared_copy


pytestmark = pytest.mark.usefixtures("one_thread")
METHODS = ("lora", "dora", "hora", "doran")


def _config(kind: str, method: str) -> peft.PeftConfig:
    targets, heads = DEFAULT_TARGET_MODULES[kind], ["classifier"] if kind == "vit" else None
    if method in ("lora", "dora"):
        return peft.LoraConfig(
            r=4,
            lora_alpha=12,  # s = 3: not a power of two, so the order of the products shows
            target_modules=targets,
            init_lora_weights=False,  # random B: not the identity
            use_dora=method == "dora",
            fan_in_fan_out=kind == "gpt2",
            modules_to_save=heads,
        )
    config = hora.HoraConfig if method == "hora" else hora.DoranConfig
    return config(r=4, lora_alpha=12, hyper_hidden=8, init_weights=False, modules_to_save=heads)


def adapted(base: torch.nn.Module, kind: str, method: str) -> peft.PeftModel:
    """``method`` on a shared copy of ``base``, far from the identity: random B (or generator outputs), magnitudes
    off their initial values, and (ViT) a classifier of its own."""
    model = peft.get_peft_model(shared_copy(base), _config(kind, method)).eval()
    g = torch.Generator().manual_seed(len(method))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "magnitude" in name:
                param.mul_(1.0 + 0.2 * torch.rand(param.shape, generator=g))
            elif "modules_to_save" in name:
                param.add_(0.5 * torch.randn(param.shape, generator=g))
    return model


def served(kind: str) -> tuple[torch.nn.Module, dict[str, torch.nn.Module], MixedModel]:
    """A tiny base, its four adapters and a MixedModel serving them and the base."""
    base = BUILDERS[kind]()
    models = {"base": base, **{m: adapted(base, kind, m) for m in METHODS}}
    mixed = MixedModel(base)
    for method in METHODS:
        mixed.register(method, models[method])
    return base, models, mixed


def logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def rows(inputs: dict, n: int) -> dict:
    return {k: v.expand(n, *v.shape[1:]) for k, v in inputs.items()}


@pytest.mark.parametrize("kind", ["vit", "gpt2", "llama"])
def test_each_row_gives_its_variants_logits(kind):
    _, models, mixed = served(kind)
    inputs = example_inputs(kind, batch=1)
    alone = {n: logits(m, inputs)[0] for n, m in models.items()}
    for method in METHODS:  # every adapter changes what the base does, so a row served by the wrong one shows
        assert (alone[method] - alone["base"]).abs().max() > 1e-2, method
    names = ["hora", "base", "dora", "hora", "lora", "doran", "base"]  # interleaved, repeated names
    batched = mixed(names, **rows(inputs, len(names))).logits
    for i, name in enumerate(names):
        torch.testing.assert_close(batched[i], alone[name], atol=1e-5, rtol=0, msg=f"row {i} ({name})")


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generations_equal_separate_calls(kind, temperature):
    _, models, mixed = served(kind)
    tokenizer, names = char_tokenizer(), list(models)
    settings = dict(max_new_tokens=10, temperature=temperature, top_k=20, seed=3)
    alone = {n: list(infer.generate_stream(models[n], tokenizer, "to be", **settings)) for n in names}
    finals = {n: ([""] + streams)[-1] for n, streams in alone.items()}
    assert len(set(finals.values())) > 1  # the variants write different texts
    steps = list(infer.generate_stream_many(mixed, tokenizer, "to be", names, **settings))
    assert len(steps) == max(len(streams) for streams in alone.values())
    for name in names:
        assert [step[name] for step in steps[: len(alone[name])]] == alone[name], name
        assert all(step[name] == finals[name] for step in steps[len(alone[name]) :])  # an ended row keeps its text


def test_a_variant_that_ends_stops_while_the_others_go_on():
    _, models, mixed = served("llama")
    tokenizer, names = char_tokenizer(), list(models)
    greedy = dict(max_new_tokens=6, temperature=0.0)
    texts = {n: list(infer.generate_stream(models[n], tokenizer, "ab", **greedy))[-1] for n in names}
    # a character that one variant writes third (and not before) and another variant never writes becomes EOS
    ender, other, stop = next(
        (a, b, texts[a][2])
        for a, b in itertools.permutations(names, 2)
        if len(texts[a]) > 2 and texts[a][2] not in texts[a][:2] and len(texts[b]) == 6 and texts[a][2] not in texts[b]
    )
    tokenizer.eos_token = stop
    alone = {n: list(infer.generate_stream(models[n], tokenizer, "ab", **greedy)) for n in names}
    assert len(alone[ender]) == 2 and len(alone[other]) == 6
    steps = list(infer.generate_stream_many(mixed, tokenizer, "ab", names, **greedy))
    assert len(steps) == max(len(s) for s in alone.values())
    for name in names:
        seen = [step[name] for step in steps]
        assert seen[: len(alone[name])] == alone[name]
        assert set(seen[len(alone[name]) :]) <= {alone[name][-1]}  # an ended row keeps its text


def test_next_tokens_and_perplexities_equal_separate_calls(monkeypatch):
    _, models, mixed = served("llama")
    tokenizer, names = char_tokenizer(), list(models)
    many = infer.next_token_topk_many(mixed, tokenizer, "the quick", names, k=6)
    for name in names:
        alone = infer.next_token_topk(models[name], tokenizer, "the quick", k=6)
        assert many[name].tokens == alone.tokens
        torch.testing.assert_close(many[name].probabilities, alone.probabilities, atol=1e-5, rtol=0)
    passage = "the quick brown fox jumps over the lazy dog and the dog sleeps"  # 62 tokens: two 32-token windows
    monkeypatch.setattr(infer, "MAX_LOGITS", 2 * 32 * 64)  # two variants per forward pass: groups of rows
    scores = infer.perplexity_many(mixed, tokenizer, passage, names)
    for name in names:
        alone = infer.perplexity(models[name], tokenizer, passage)
        assert scores[name].tokens == alone.tokens == len(passage) - 1
        assert scores[name].loss == pytest.approx(alone.loss, abs=1e-5)
    assert len({round(s.loss, 4) for s in scores.values()}) == len(names)


def test_classify_many_with_a_head_only_variant_for_other_labels():
    base, models, mixed = served("vit")
    head = shared_copy(base)  # what a head-only run is: the base with a classifier of its own
    new_head(head, {0: "cat", 1: "dog", 2: "owl"})
    mixed.register("probe", head)
    assert mixed.variant("probe").method == "modules" and mixed.labels("probe")[2] == "owl"
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    image = Image.fromarray((torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    names = ["probe", *METHODS]
    many = infer.classify_many(mixed, processor, image, names, top_k=3)
    for name, model in {"probe": head, **{m: models[m] for m in METHODS}}.items():
        alone = infer.classify(model, processor, image, top_k=3)
        assert many[name].labels == alone.labels, name
        torch.testing.assert_close(many[name].probabilities, alone.probabilities, atol=1e-5, rtol=0)
    wider = shared_copy(base)
    new_head(wider, {0: "cat", 1: "dog", 2: "owl", 3: "bee"})
    mixed.register("wider", wider)
    assert infer.classify_many(mixed, processor, image, ["wider"])["wider"].labels[0] in {"cat", "dog", "owl", "bee"}
    with pytest.raises(ValueError, match="different shapes"):  # 4 labels and 3 cannot share a batch
        infer.classify_many(mixed, processor, image, ["wider", "base"])


def test_one_copy_of_the_base_and_only_factors_per_variant():
    base, models, mixed = served("llama")
    before = {k: (v.data_ptr(), v.clone()) for k, v in base.state_dict().items()}
    mixed(list(models), **rows(example_inputs("llama", batch=1), len(models)))
    mine = {t.data_ptr() for t in itertools.chain(mixed.model.parameters(), mixed.model.buffers())}
    assert mine <= {t.data_ptr() for t in itertools.chain(base.parameters(), base.buffers())}  # no weight copied
    for key, (pointer, value) in before.items():  # ... and none written
        assert base.state_dict()[key].data_ptr() == pointer and torch.equal(base.state_dict()[key], value)
    assert not any(isinstance(m, RoutedLayer) for m in base.modules())  # the served base's own tree is untouched
    layers, width, rank = 2, 32, 4  # q_proj (32 -> 32) and v_proj (32 -> 16, two KV heads) in each layer
    factors = layers * rank * (width + 32 + width + 16) * 4  # A (r, in) and B (out, r), float32
    assert mixed.nbytes("base") == 0
    assert mixed.nbytes("lora") == mixed.nbytes("hora") == factors
    assert mixed.nbytes("dora") == mixed.nbytes("doran") == factors + layers * (32 + 16) * 4  # and c (out,)


def test_rows_go_only_to_the_variants_asked_for():
    base, models, mixed = served("llama")
    inputs = example_inputs("llama", batch=1)
    with pytest.raises(ValueError, match="No variant 'visitor-1/lora'"):
        mixed(["base", "visitor-1/lora"], **rows(inputs, 2))
    mixed.register("visitor-1/lora", adapted(base, "llama", "lora"))
    with pytest.raises(ValueError, match="registered already"):
        mixed.register("visitor-1/lora", models["hora"])
    mixed.register("visitor-1/lora", models["hora"], replace=True)
    torch.testing.assert_close(mixed(["visitor-1/lora"], **inputs).logits[0], logits(models["hora"], inputs)[0])
    mixed.unregister("visitor-1/lora")
    with pytest.raises(ValueError, match="No variant"):
        mixed(["visitor-1/lora"], **inputs)
    mixed.register("visitor-2/a", models["lora"])
    mixed.register("visitor-2/b", models["dora"])
    with mixed.route(["visitor-2/b"]), torch.no_grad():  # a call running when its variant goes finishes with it
        assert mixed.unregister_prefix("visitor-2/") == ["visitor-2/a", "visitor-2/b"]
        torch.testing.assert_close(mixed.model(**inputs).logits[0], logits(models["dora"], inputs)[0])
    assert mixed.names == ["base", *METHODS]
    with pytest.raises(ValueError, match="rows"):
        mixed(["base", "lora"], **inputs)  # one row for two names
    with pytest.raises(RuntimeError, match="outside a call"):
        with torch.no_grad():
            mixed.model(**inputs)  # the routed layers refuse to guess
    with pytest.raises(ValueError, match="cannot be removed"):
        mixed.unregister("base")


def test_variants_it_cannot_serve_are_refused():
    base, models, mixed = served("llama")
    with pytest.raises(ValueError, match="served base's weights"):
        mixed.register("other", adapted(BUILDERS["llama"](seed=1), "llama", "lora"))  # another base's weights
    copy_ = copy.deepcopy(models["lora"])  # equal tensors (not the same ones) are the same base: accepted
    assert mixed.register("copy", copy_).terms.keys() == mixed.variant("lora").terms.keys()
    merging = adapted(copy.deepcopy(base), "llama", "lora")
    merging.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        mixed.register("merged", merging)
    ia3 = peft.get_peft_model(shared_copy(base), peft.IA3Config(target_modules=["k_proj", "v_proj"]))
    with pytest.raises(ValueError, match="IA3"):
        mixed.register("ia3", ia3)
    with pytest.raises(ValueError, match="not a variant"):
        mixed.register("vit", BUILDERS["vit"]())


def test_threads_each_get_their_own_rows_while_variants_come_and_go():
    base, models, mixed = served("llama")
    inputs = example_inputs("llama", batch=1)
    alone = {n: logits(m, inputs)[0] for n, m in models.items()}
    # two routings overlap without nesting: A enters, B enters, A computes and leaves, then B computes
    a_entered, b_entered, a_left = threading.Event(), threading.Event(), threading.Event()
    got: dict[str, torch.Tensor] = {}

    def a() -> None:
        try:
            with mixed.route(["lora"]), torch.no_grad():
                a_entered.set()
                b_entered.wait(10)
                got["lora"] = mixed.model(**inputs).logits[0]
        finally:
            a_left.set()

    def b() -> None:
        a_entered.wait(10)
        with mixed.route(["doran"]), torch.no_grad():
            b_entered.set()
            a_left.wait(10)
            got["doran"] = mixed.model(**inputs).logits[0]

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("lora", "doran"):
        torch.testing.assert_close(got[name], alone[name], atol=1e-5, rtol=0)
    # callers in several threads while a session's variant is registered and removed again and again
    errors: list[str] = []
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            mixed.register("session/x", models["dora"], replace=True)
            mixed.unregister("session/x")

    def caller(names: list[str]) -> None:
        for _ in range(15):
            out = mixed(names, **rows(inputs, len(names))).logits
            errors.extend(n for i, n in enumerate(names) if not torch.allclose(out[i], alone[n], atol=1e-5))

    churner = threading.Thread(target=churn)
    callers = [threading.Thread(target=caller, args=(n,)) for n in (["base", "lora"], ["hora", "doran", "dora"])]
    churner.start()
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    stop.set()
    churner.join()
    assert errors == []


def test_side_by_side_bench_reports_every_way_on_tiny_models(tmp_path):
    from hora import cli
    from hora.bench import side_by_side

    base, models, _ = served("llama")
    report = side_by_side.generate_case(base, char_tokenizer(), models, "to be", max_new_tokens=4, repeats=1, warmup=0)
    assert report["case"] == "generate" and report["variants"] == list(models)
    assert set(report["seconds"]) == {"batched", "alone", "separate"} and report["outputs_identical"] is True
    assert report["variant_bytes"]["base"] == 0 < report["variant_bytes"]["hora"] < report["base_bytes"]
    vit, heads, _ = served("vit")
    image = Image.new("RGB", (16, 16), (200, 30, 30))
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    classify = side_by_side.classify_case(vit, processor, heads, image, repeats=1, warmup=0)
    assert classify["outputs_identical"] is True and set(classify["top_class"]) == set(heads)
    whole = side_by_side.write({"cases": [classify, report], "machine": side_by_side.machine()}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["cases"][1]["new_tokens"] == report["new_tokens"]
    assert {"cpus", "torch", "torch_threads"} <= set(whole["machine"])
    lines = side_by_side.table(whole).splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["classify", "generate"]
    args = cli._parser().parse_args(["bench", "side-by-side", "--out", str(tmp_path / "r.json")])
    assert (args.bench, args.repeats, args.max_new_tokens) == ("side-by-side", 3, 48)


@pytest.mark.slow
def test_smollm2_and_its_embedded_adapters_in_one_batch():
    from hora import hub
    from hora.packaged import PackageMissingError, source_file

    name = "smollm2-135m-instruct"
    if not all(f"{name}/{m}" in hub.embedded_assets() for m in METHODS):
        pytest.skip(f"no embedded {name} adapters")
    try:
        source_file(name)
    except PackageMissingError as error:
        pytest.skip(str(error))
    loaded = hora.load_base(name, dtype=torch.float32)
    models = {
        "base": loaded.model,
        **{m: hora.load_adapter(shared_copy(loaded.model), f"{name}/{m}") for m in METHODS},
    }
    mixed = MixedModel(loaded.model)
    for method in METHODS:
        mixed.register(method, models[method])
    names, tokenizer = list(models), loaded.processor
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    batched = mixed(names, input_ids=ids.expand(len(names), -1)).logits
    for i, name in enumerate(names):
        torch.testing.assert_close(batched[i], logits(models[name], {"input_ids": ids})[0], atol=1e-5, rtol=0)
    for settings in (dict(temperature=0.0), dict(temperature=0.8, seed=5)):
        steps = list(
            infer.generate_stream_many(mixed, tokenizer, "Name a colour.", names, max_new_tokens=8, **settings)
        )
        for name in names:
            alone = list(
                infer.generate_stream(models[name], tokenizer, "Name a colour.", max_new_tokens=8, **settings)
            )
            assert [step[name] for step in steps[: len(alone)]] == alone, (name, settings)
