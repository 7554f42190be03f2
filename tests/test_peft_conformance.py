"""PEFT's own test suite passes for HoRA and DoRAN wherever it passes for LoRA.

The first test fetches PEFT's ``tests/`` for the installed peft from the package index (cached), runs its
``test_custom_models.py`` with HoRA, DoRAN and LoRA cases (see ``tests/peft_conformance.py``) and compares each
HoRA / DoRAN outcome with its LoRA control. It takes a few minutes. Without the index it skips, unless
``HORA_REQUIRE_PEFT_TESTS=1`` (CI), which makes that a failure. The other tests check the harness itself, offline.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections import OrderedDict
from types import SimpleNamespace

import peft
import peft_conformance as conformance
import pytest
import torch
from peft import LoraConfig

import hora


def peft_tests_or_skip():
    """PEFT's tests for the installed version, or a skip (a failure under HORA_REQUIRE_PEFT_TESTS=1) without index."""
    try:
        return conformance.fetch_peft_tests()
    except conformance.PeftTestsUnavailableError as err:
        message = (
            f"PEFT's test suite for peft {conformance.installed_peft_version()} could not be downloaded, so the "
            f"PEFT conformance run did not happen: {err}"
        )
        if os.environ.get("HORA_REQUIRE_PEFT_TESTS") == "1":
            pytest.fail(message + "\n(HORA_REQUIRE_PEFT_TESTS=1 makes this a failure)")
        pytest.skip(message)


@pytest.mark.slow
def test_peft_suite_passes_for_hora_and_doran_where_it_passes_for_lora():
    run = conformance.run_conformance(peft_tests_or_skip())
    comparison = conformance.compare(run)
    report = conformance.format_report(run, comparison)
    assert not comparison.problems, report
    assert not comparison.regressions, report
    lora = comparison.counts["LoRA"]
    # the control must itself be a real run: LoRA passes PEFT's own tests
    assert lora["run"] > 300 and lora["failed"] == 0 and lora["not run"] == 0, report
    for method in ("HoRA", "DoRAN"):
        counts = comparison.counts[method]
        assert counts["compared"] > 300 and counts["not run"] == 0, report
    # every case we mirror reached PEFT's tests, the mixed adapter batches (`adapter_names=`) included
    cases = {record["case"] for record in run.records.values()}
    expected = {case.name for case in conformance.build_cases() + conformance.build_multi_cases()}
    expected |= {name.replace("LoRA", method) for name in conformance.MIXED_CONTROLS for method in ("HoRA", "DoRAN")}
    assert expected <= cases, sorted(expected - cases)
    # every reason on the not-applicable list is still about a test PEFT has
    functions = {record["function"] for record in run.records.values()}
    assert set(conformance.NOT_APPLICABLE) <= functions, sorted(set(conformance.NOT_APPLICABLE) - functions)


# --- the harness itself ---


def test_cases_mirror_lora_and_build_valid_configs():
    cases = conformance.build_cases()
    multi = conformance.build_multi_cases()
    names = [case.name for case in cases + multi]
    assert len(names) == len(set(names))
    for case in cases:
        assert case.method in ("HoRA", "DoRAN") and case.control in conformance.LORA_CONTROLS, case
        assert isinstance(case.config_cls(**case.kwargs), (hora.HoraConfig, hora.DoranConfig))
    for case in multi:
        assert case.control in conformance.MULTI_CONTROLS, case
        case.config_cls(**case.kwargs), case.config_cls(**case.kwargs_2)
    # the variants the issue asks for are all there
    settings = [(case.method, key, value) for case in cases for key, value in case.kwargs.items()]
    for wanted in [
        ("HoRA", "generate_a", True),  # the default is False
        ("HoRA", "share_qv", False),
        ("DoRAN", "generate_a", False),
        ("DoRAN", "tau_granularity", "channel"),
        ("DoRAN", "use_generator", False),
        ("DoRAN", "detach_norm", True),
    ]:
        assert wanted in settings, wanted
    assert {case.control for case in multi} == set(conformance.MULTI_CONTROLS)


def test_mixed_batch_rows_mirror_loras_targets_rank_and_modules_to_save():
    lora = (
        "LoRA mixed adapter with modules to save",
        LoraConfig(target_modules=["lin0"], modules_to_save=["lin1"], init_lora_weights=False),
        LoraConfig(target_modules=["lin0", "lin1"], r=16, init_lora_weights=False),
    )
    for config_cls, (_, method, _) in conformance.CLASS_CASES.items():
        if method == "LoRA":
            continue
        name, first, second = conformance.mixed_mirror(lora, method, config_cls)
        assert name == f"{method} mixed adapter with modules to save" and type(first) is type(second) is config_cls
        assert (set(first.target_modules), first.modules_to_save, first.r) == ({"lin0"}, ["lin1"], 8)
        assert (set(second.target_modules), second.modules_to_save, second.r) == ({"lin0", "lin1"}, None, 16)
        assert first.init_weights is False and second.init_weights is False


def test_class_cases_work_on_peft_test_models():
    """The config classes handed to PEFT's class-only tests know the head sizes of PEFT's lin* layers."""
    for config_cls, (_, method, control) in conformance.CLASS_CASES.items():
        if method == "LoRA":
            assert config_cls is LoraConfig and control is None
            continue
        model = torch.nn.Sequential(OrderedDict(lin0=torch.nn.Linear(10, 256), lin1=torch.nn.Linear(256, 2)))
        peft_model = peft.get_peft_model(model, config_cls(target_modules=["lin0", "lin1"]))
        assert peft_model(torch.randn(2, 10)).shape == (2, 2)
        assert isinstance(peft_model.peft_config["default"], (hora.HoraConfig, hora.DoranConfig))


def record(method, case, outcome, control=None, function="test_x", variant=""):
    return {
        "cls": "TestPeftCustomModel",
        "function": function,
        "case": case,
        "method": method,
        "control": control,
        "variant": variant,
        "outcome": outcome,
        "message": "boom" if outcome == "failed" else "",
        "seconds": 0.0,
    }


def test_compare_flags_only_what_fails_where_lora_passes():
    na = next(iter(conformance.NOT_APPLICABLE))
    run = conformance.Run(
        "0",
        {
            "lora-pass": record("LoRA", "L1", "passed"),
            "lora-skip": record("LoRA", "L2", "skipped"),
            "lora-pass-v": record("LoRA", "L1", "passed", variant="dtype=float16"),
            "lora-na": record("LoRA", "L1", "passed", function=na),
            "hora-regression": record("HoRA", "H1", "failed", control="L1"),
            "hora-skip-regression": record("HoRA", "H1", "skipped", control="L1", variant="dtype=float16"),
            "hora-not-compared": record("HoRA", "H2", "failed", control="L2"),
            "doran-pass": record("DoRAN", "D1", "passed", control="L1"),
            "doran-na": record("DoRAN", "D1", "skipped", control="L1", function=na),
            "doran-orphan": record("DoRAN", "D9", "passed", control="nowhere"),
        },
        seconds=1.0,
    )
    comparison = conformance.compare(run)
    assert [line.split(":")[0] for line in comparison.regressions] == ["hora-regression", "hora-skip-regression"]
    assert comparison.counts["HoRA"]["not compared"] == 1 and comparison.counts["HoRA"]["compared"] == 2
    assert comparison.counts["DoRAN"]["not applicable"] == 1 and comparison.counts["DoRAN"]["compared"] == 1
    assert len(comparison.problems) == 1 and "doran-orphan" in comparison.problems[0]
    table = conformance.format_table(run, comparison)
    assert "| HoRA | 3 | 0 | 1 | 2 | 0 | 2 | 2 |" in table and na in table


def test_an_empty_run_is_a_problem_not_a_pass():
    comparison = conformance.compare(conformance.Run("0", {}, seconds=0.0))
    assert len(comparison.problems) == 3 and not comparison.regressions


@pytest.mark.parametrize(
    "output,unreachable",
    [
        (
            "WARNING: Retrying ... NewConnectionError(...)\nERROR: No matching distribution found for peft==0.21.2",
            True,
        ),
        ("ERROR: Could not find a version that satisfies the requirement peft==9.9 (from versions: none)", True),
        ("ERROR: Could not find a version that satisfies the requirement peft==9.9 (from versions: 0.1.0)", False),
    ],
)
def test_an_unreachable_index_is_told_apart_from_other_download_errors(monkeypatch, tmp_path, output, unreachable):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return SimpleNamespace(returncode=1, stdout="", stderr=output)

    monkeypatch.setattr(subprocess, "run", fake_run)
    error = conformance.PeftTestsUnavailableError if unreachable else RuntimeError
    with pytest.raises(error) as raised:
        conformance.fetch_peft_tests("9.9", tmp_path)
    assert isinstance(raised.value, conformance.PeftTestsUnavailableError) == unreachable
    assert calls and calls[0][-1] == "peft==9.9" and "--no-binary" in calls[0]


def test_a_cached_download_is_reused(monkeypatch, tmp_path):
    package = tmp_path / conformance.PACKAGE
    package.mkdir()
    (package / conformance.TEST_FILE).write_text("")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("downloaded although cached"))
    assert conformance.fetch_peft_tests("9.9", tmp_path) == tmp_path
    monkeypatch.setenv("HORA_PEFT_TESTS_CACHE", str(tmp_path / "elsewhere"))
    assert conformance.cache_dir("9.9") == tmp_path / "elsewhere" / "9.9"


def test_skip_becomes_a_failure_when_peft_tests_are_required(monkeypatch):
    def unavailable(*args, **kwargs):
        raise conformance.PeftTestsUnavailableError("index unreachable")

    monkeypatch.setattr(conformance, "fetch_peft_tests", unavailable)
    monkeypatch.delenv("HORA_REQUIRE_PEFT_TESTS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="could not be downloaded"):
        peft_tests_or_skip()
    monkeypatch.setenv("HORA_REQUIRE_PEFT_TESTS", "1")
    with pytest.raises(pytest.fail.Exception, match="HORA_REQUIRE_PEFT_TESTS=1"):
        peft_tests_or_skip()


def test_tests_can_come_from_a_peft_checkout_or_sdist(monkeypatch, tmp_path):
    """HORA_PEFT_TESTS_SOURCE: a PEFT source tree (e.g. main) or a sdist; only tests/ is taken, as a package."""
    tree = tmp_path / "peft-9.9"
    (tree / "tests").mkdir(parents=True)
    (tree / "tests" / conformance.TEST_FILE).write_text("from .testing_common import X\n")
    (tree / "tests" / "testing_common.py").write_text("X = 1\n")
    (tree / "pyproject.toml").write_text("[tool.pytest]\naddopts = ['--cov']\n")
    sdist = tmp_path / "peft-9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(tree, arcname="peft-9.9")
    monkeypatch.setenv("HORA_PEFT_TESTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nothing is downloaded from a local source"))
    for source in (tree, sdist):
        monkeypatch.setenv("HORA_PEFT_TESTS_SOURCE", str(source))
        root = conformance.fetch_peft_tests()
        package = root / conformance.PACKAGE
        assert sorted(p.name for p in package.iterdir()) == ["__init__.py", conformance.TEST_FILE, "testing_common.py"]
        assert not (root / "pyproject.toml").exists()  # PEFT's pytest settings (coverage) stay out
    monkeypatch.setenv("HORA_PEFT_TESTS_SOURCE", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="neither a PEFT sdist nor a tree"):
        conformance.fetch_peft_tests()
