"""PEFT's own test suite, re-run for HoRA and DoRAN with LoRA as the control.

The sdist of every peft release on the package index ships PEFT's ``tests/`` folder. Its
``test_custom_models.py`` checks hundreds of behaviours of a PEFT method (save/load, ``from_pretrained``,
merging, disabling, named adapters, dtypes, trainability) over case lists such as ``TEST_CASES``
(``(name, model_id, config_cls, config_kwargs)``), ``MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES`` and
``ALL_PEFT_CONFIG_CLASSES``. This module

1. downloads that folder for the *installed* peft version (``pip download --no-deps --no-binary :all:
   peft==<version>``) into a cache (env ``HORA_PEFT_TESTS_CACHE``, default ``~/.cache/hora/peft-tests/<version>``);
2. runs PEFT's test functions, unchanged, in pytest subprocesses whose plugin (``ConformancePlugin`` below)
   replaces the contents of those case lists by LoRA's MLP cases (the control) and HoRA and DoRAN cases that
   mirror them, and adds HoRA and DoRAN to the config lists that tests spell out in their own ``parametrize``;
3. compares, for every (test function, parameters) pair, each HoRA / DoRAN outcome with its LoRA control: a test
   that passes for LoRA must pass for HoRA and DoRAN unless it is in ``NOT_APPLICABLE`` with a reason.

``tests/test_peft_conformance.py`` does all that on every ``pytest`` run. From the command line::

    python -m tests.peft_conformance            # run and print the comparison
    python -m tests.peft_conformance --table    # run and print the markdown table
    python -m tests.peft_conformance --summary assets/bench/peft_conformance.json   # what the docs render

It always tests the *installed* peft: to try another release, install it in a fresh venv (``pip install
peft==X.Y.Z``) and run the same command; ``HORA_PEFT_TESTS_SOURCE=/path/to/peft`` takes the tests from a PEFT
checkout instead (with that checkout installed, ``pip install -e``).

Nothing from PEFT's tests is copied into this repository: they are fetched and run as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft import LoraConfig

import hora


REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "peft_tests"  # PEFT's tests/ folder is imported under this name (it uses relative imports)
TEST_FILE = "test_custom_models.py"
# PEFT's test classes that take their cases from the lists replaced below; the others hard-code LoRA, IA3, ...
TEST_CLASSES = (
    "TestPeftCustomModel",
    "TestMultipleActiveAdapters",
    "TestRequiresGrad",
    "TestPeftFsdpStateDict",
    "TestMixedAdapterBatches",
)
CASE_PARAMS = {
    "config",
    "config0",
    "config1",
    "test_name",
    "model_id",
    "config_cls",
    "config_kwargs",
    "tuner_method",
    "config_kwargs_1",
    "config_kwargs_2",
}
METHODS = ("LoRA", "HoRA", "DoRAN")


class PeftTestsUnavailableError(RuntimeError):
    """PEFT's tests could not be obtained because the package index could not be reached."""


# ---------------------------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------------------------

# PEFT's MLP is lin0: Linear(10, 20) -> ReLU -> lin1: Linear(20, 2); hora needs to know how rows form heads
MLP_HEADS = {"lin0": 5, "lin1": 2}


@dataclass(frozen=True)
class Case:
    """One row of ``TEST_CASES`` (``kwargs_2`` set: of ``MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES``).

    ``control`` names the LoRA case this one mirrors; LoRA's own cases have none. For the multiple-adapter matrix
    ``model_id`` holds PEFT's ``tuner_method`` column.
    """

    name: str
    method: str
    model_id: str
    config_cls: type
    kwargs: dict[str, Any]
    control: str | None = None
    kwargs_2: dict[str, Any] | None = None

    def row(self) -> tuple:
        if self.kwargs_2 is None:
            return (self.name, self.model_id, self.config_cls, self.kwargs)
        return (self.name, self.model_id, self.config_cls, self.kwargs, self.kwargs_2)


@dataclass
class HoraConfig(hora.HoraConfig):
    """``hora.HoraConfig`` with PEFT's test models' head sizes as default, for PEFT's tests that only get a class.

    Those tests build ``config_cls(target_modules=[...])`` on ``DeepMLP``, ``MLP`` and similar models, whose ``lin*``
    layers have 2, 10, 20 or 256 output rows. Saved adapters are plain ``HORA`` adapters (``head_layout`` is in
    ``adapter_config.json``) and load as ``hora.HoraConfig``.
    """

    head_layout: dict[str, int] | None = field(
        default_factory=lambda: {"lin0": 2, "lin1": 2, "lin2": 2, "lin3": 2, "conv1d": 1}
    )


@dataclass
class DoranConfig(hora.DoranConfig):
    """``hora.DoranConfig`` with PEFT's test models' head sizes as default (see [`HoraConfig`])."""

    head_layout: dict[str, int] | None = field(
        default_factory=lambda: {"lin0": 2, "lin1": 2, "lin2": 2, "lin3": 2, "conv1d": 1}
    )


# PEFT's own LoRA rows, looked up by name in its TEST_CASES so that the control is exactly what PEFT tests
LORA_CONTROLS = (
    "Vanilla MLP 1 LoRA",
    "Vanilla MLP 2 LoRA",
    "Vanilla MLP 3 LoRA",
    "Vanilla MLP 4 LoRA",
    "Vanilla MLP 5 LoRA",
    "Vanilla MLP 6 LoRA",
    "Vanilla MLP 8 LoRA with DoRA",
    "Vanilla MLP 9 LoRA with DoRA",
    "Embedding + transformers Conv1D 1 LoRA",
    "Embedding + transformers Conv1D 1 DoRA",
)
MULTI_CONTROLS = ("LoRA Same", "LoRA Different")
# PEFT's mixed adapter batch rows (``adapter_names=``, ``TestMixedAdapterBatches``) that HoRA and DoRAN mirror: those
# on its MLPs. The others adapt an Embedding, a Conv2d or a MultiheadAttention, which hora does not adapt.
MIXED_CONTROLS = (
    "LoRA mixed adapter",
    "LoRA mixed adapter with different target layers",
    "LoRA mixed adapter with modules to save",
    "LoRA mixed adapter with unsupported layer",
    "LoRA mixed adapter with overlapping layers",
    "LoRA mixed batch wrong adapter name",
)


def _mirrors(method: str, config_cls: type) -> list[Case]:
    """The cases of LoRA's MLP rows 1-6 for ``method``: same targets, ``modules_to_save``, α and dropout."""
    heads = {"head_layout": MLP_HEADS}
    rows = [
        ({"target_modules": "lin0"}, "Vanilla MLP 1 LoRA"),
        ({"target_modules": ["lin0"]}, "Vanilla MLP 2 LoRA"),
        ({"target_modules": ["lin1"]}, "Vanilla MLP 3 LoRA"),
        ({"target_modules": ["lin0", "lin1"]}, "Vanilla MLP 4 LoRA"),
        ({"target_modules": ["lin0"], "modules_to_save": ["lin1"]}, "Vanilla MLP 5 LoRA"),
        ({"target_modules": ["lin0"], "lora_alpha": 4, "dropout": 0.1}, "Vanilla MLP 6 LoRA"),
    ]
    return [
        Case(f"Vanilla MLP {i} {method}", method, "MLP", config_cls, {**kwargs, **heads}, control)
        for i, (kwargs, control) in enumerate(rows, start=1)
    ]


def build_cases() -> list[Case]:
    """HoRA's and DoRAN's rows for ``TEST_CASES``, each with the LoRA row it mirrors."""
    heads = {"head_layout": MLP_HEADS}
    both = {"target_modules": ["lin0", "lin1"], **heads}
    conv1d = {"target_modules": ["conv1d"], "head_layout": {"conv1d": 1}}  # transformers' Conv1D(1, 5), as GPT-2's
    hora_cases = [
        *_mirrors("HoRA", hora.HoraConfig),
        Case(  # HoRA's default generates only B; this is the other reading
            "Vanilla MLP 7 HoRA generated A",
            "HoRA",
            "MLP",
            hora.HoraConfig,
            {**both, "generate_a": True, "share_qv": False},
            "Vanilla MLP 4 LoRA",
        ),
        Case(
            "Embedding + transformers Conv1D 1 HoRA",
            "HoRA",
            "EmbConv1D",
            hora.HoraConfig,
            conv1d,
            "Embedding + transformers Conv1D 1 LoRA",
        ),
    ]
    dora = "Vanilla MLP 8 LoRA with DoRA"  # DoRA on lin0 and lin1: the control of DoRAN's variants
    doran_cases = [
        *_mirrors("DoRAN", hora.DoranConfig),
        Case("Vanilla MLP 7 DoRAN", "DoRAN", "MLP", hora.DoranConfig,
             {"target_modules": "lin1", "lora_alpha": 32, **heads}, "Vanilla MLP 9 LoRA with DoRA"),
        Case("Vanilla MLP 8 DoRAN channel tau", "DoRAN", "MLP", hora.DoranConfig,
             {**both, "tau_granularity": "channel"}, dora),
        Case("Vanilla MLP 9 DoRAN static", "DoRAN", "MLP", hora.DoranConfig, {**both, "use_generator": False}, dora),
        Case("Vanilla MLP 10 DoRAN detached norm", "DoRAN", "MLP", hora.DoranConfig, {**both, "detach_norm": True},
             dora),
        Case("Vanilla MLP 11 DoRAN static A", "DoRAN", "MLP", hora.DoranConfig,
             {**both, "generate_a": False, "share_qv": False}, dora),
        Case("Embedding + transformers Conv1D 1 DoRAN", "DoRAN", "EmbConv1D", hora.DoranConfig, conv1d,
             "Embedding + transformers Conv1D 1 DoRA"),
    ]  # fmt: skip
    return hora_cases + doran_cases


def build_multi_cases() -> list[Case]:
    """HoRA's and DoRAN's rows for ``MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES`` (two adapters on PEFT's MLP)."""
    base = {"target_modules": ["lin0"], "init_weights": False, "head_layout": MLP_HEADS}
    cases = []
    for method, cls in (("HoRA", hora.HoraConfig), ("DoRAN", hora.DoranConfig)):
        tuner = method.lower()
        for where, second in (("Same", "lin0"), ("Different", "lin1")):
            cases.append(Case(f"{method} {where}", method, tuner, cls, {**base}, f"LoRA {where}",
                              {**base, "target_modules": [second]}))  # fmt: skip
        # two differently built adapters on one module: plain A + shared first layers, generated A + unshared
        cases.append(Case(f"{method} Same static A + unshared", method, tuner, cls, {**base, "generate_a": False},
                          "LoRA Same", {**base, "generate_a": True, "share_qv": False}))  # fmt: skip
    cases.append(Case("DoRAN Same static + channel tau", "DoRAN", "doran", hora.DoranConfig,
                      {**base, "use_generator": False}, "LoRA Same", {**base, "tau_granularity": "channel"}))  # fmt: skip
    return cases


def mixed_mirror(row: tuple, method: str, config_cls: type) -> tuple:
    """A row of PEFT's mixed-batch tests, ``(name, LoraConfig, ...)``, for HoRA or DoRAN: same targets, rank and
    ``modules_to_save``, random initialisation (as ``init_lora_weights=False``)."""
    name, *configs = row
    mirrored = [
        config_cls(
            target_modules=sorted(config.target_modules),
            modules_to_save=config.modules_to_save,
            r=config.r,
            init_weights=False,
        )
        for config in configs
    ]
    return (name.replace("LoRA", method, 1), *mirrored)


# tests that only get a config class: the control is LoraConfig itself
CLASS_CASES = {LoraConfig: ("LoraConfig", "LoRA", None), HoraConfig: ("HoraConfig", "HoRA", "LoraConfig"),
               DoranConfig: ("DoranConfig", "DoRAN", "LoraConfig")}  # fmt: skip

# PEFT test functions that cannot say anything about HoRA or DoRAN, with the reason. They still run, and their
# outcomes are reported, but they are not compared with LoRA.
NOT_APPLICABLE: dict[str, str] = {
    "test_add_weighted_adapter_cat_with_rank_pattern": "builds two `LoraConfig`s whatever `config_cls` it is given",
    "test_adding_multiple_adapters_with_bias_raises": (
        "about LoRA's `bias` option, which hora's configs do not have (PEFT skips it for such methods)"
    ),
    "test_save_load_roundtrip_fsdp_wrapped_learnable_bias": (
        "trains the PEFT method's `bias`, an option hora's configs do not have (PEFT skips it for such methods)"
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# fetching PEFT's tests
# ---------------------------------------------------------------------------------------------------------------------


def installed_peft_version() -> str:
    return importlib.metadata.version("peft")


def cache_dir(version: str) -> Path:
    """Where PEFT's tests for ``version`` are kept between runs."""
    root = os.environ.get("HORA_PEFT_TESTS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "hora" / "peft-tests"
    return base / version


# pip's words for "the index could not be reached" (as opposed to "the index says no")
_UNREACHABLE = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeout",
    "ReadTimeout",
    "ProxyError",
    "SSLError",
    "from versions: none",
)


def fetch_peft_tests(version: str | None = None, cache: Path | None = None) -> Path:
    """Return a folder holding PEFT's ``tests/`` for ``version`` as an importable package, downloading it once.

    With env ``HORA_PEFT_TESTS_SOURCE`` (a PEFT source tree or sdist, e.g. a checkout of PEFT's main branch) the
    tests are taken from there instead, afresh each time. Raises [`PeftTestsUnavailableError`] when the package index
    cannot be reached and ``RuntimeError`` for anything else (a version the index does not have, no tests).
    """
    source = os.environ.get("HORA_PEFT_TESTS_SOURCE")
    if source:
        return _tests_from_source(Path(source).expanduser(), cache or cache_dir("local"))
    version = version or installed_peft_version()
    cache = cache or cache_dir(version)
    if (cache / PACKAGE / TEST_FILE).is_file():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--retries", "1",
                   "--timeout", "20", "--disable-pip-version-check", "-d", tmp, f"peft=={version}"]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as err:
            raise PeftTestsUnavailableError(f"`pip download peft=={version}` did not finish in 10 minutes") from err
        if done.returncode != 0:
            output = done.stdout + done.stderr
            tail = "\n".join(output.strip().splitlines()[-5:])
            if any(marker in output for marker in _UNREACHABLE):
                raise PeftTestsUnavailableError(f"the package index could not be reached for peft=={version}:\n{tail}")
            raise RuntimeError(f"`{' '.join(command)}` failed:\n{tail}")
        sdists = list(Path(tmp).glob("peft-*.tar.gz"))
        if not sdists:
            raise RuntimeError(f"pip downloaded no peft sdist for {version}: {sorted(os.listdir(tmp))}")
        staging = _extract_tests(sdists[0], Path(tmp) / PACKAGE)
        try:
            staging.rename(cache / PACKAGE)  # last and atomic: a folder with the test file is always complete
        except OSError:
            if not (cache / PACKAGE / TEST_FILE).is_file():
                raise
            # another run (another pytest on this machine) was first; it may be using that folder, so keep it
    return cache


def _extract_tests(sdist: Path, destination: Path) -> Path:
    """Unpack ``peft-X/tests/`` of a sdist into ``destination``, as a package."""
    destination.mkdir(parents=True)
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.split("/")[1:2] == ["tests"]]
        if not any(m.name.endswith("/tests/" + TEST_FILE) for m in members):
            raise RuntimeError(f"{sdist.name} has no tests/{TEST_FILE}")
        for member in members:
            member.name = "/".join(member.name.split("/")[2:])  # peft-X/tests/a/b.py -> a/b.py
            archive.extract(member, destination, **_tar_filter())
    # PEFT's tests import each other relatively (`from .testing_common import ...`): a package
    (destination / "__init__.py").touch()
    return destination


def _tests_from_source(source: Path, cache: Path) -> Path:
    """PEFT's tests from a local source tree (``<source>/tests``) or sdist, copied afresh into ``cache``."""
    if (cache / PACKAGE).exists():
        shutil.rmtree(cache / PACKAGE)
    cache.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        _extract_tests(source, cache / PACKAGE)
    elif (source / "tests" / TEST_FILE).is_file():
        shutil.copytree(source / "tests", cache / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
        (cache / PACKAGE / "__init__.py").touch()
    else:
        raise RuntimeError(
            f"HORA_PEFT_TESTS_SOURCE={source} is neither a PEFT sdist nor a tree with tests/{TEST_FILE}"
        )
    return cache


def _tar_filter() -> dict[str, Any]:
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


# ---------------------------------------------------------------------------------------------------------------------
# the pytest plugin that runs inside the subprocess
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stub_unused_imports() -> Iterator[None]:
    """Let PEFT's test helpers import ``diffusers`` and ``datasets`` when they are not installed.

    ``testing_common`` / ``testing_utils`` import ``StableDiffusionPipeline`` and ``load_dataset`` at the top, for
    Stable Diffusion tests and hub data sets that none of the selected tests use. Rather than installing two large
    packages, a stand-in is put in ``sys.modules`` only while PEFT's test module is imported (so library code that
    asks later whether these packages exist still hears no); anything that really uses a stand-in raises.
    """

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("stand-in for a package the PEFT conformance run does not install")

    class StableDiffusionPipeline:  # only ever used in isinstance checks by the selected tests
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            unavailable()

        from_pretrained = staticmethod(unavailable)

    stubs = {
        "diffusers": {"StableDiffusionPipeline": StableDiffusionPipeline},
        "datasets": {"load_dataset": unavailable},
    }
    added = []
    for name, attributes in stubs.items():
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            continue
        module = types.ModuleType(name, "stand-in for PEFT's test imports (hora's conformance run)")
        module.__dict__.update(attributes)
        sys.modules[name] = module
        added.append(name)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _case_list(module: types.ModuleType, name: str) -> list:
    cases = getattr(module, name, None)
    if not isinstance(cases, list):
        raise RuntimeError(
            f"PEFT's {TEST_FILE} has no list {name}: this peft release reorganised its tests and "
            "tests/peft_conformance.py needs updating."
        )
    return cases


class ConformancePlugin:
    """pytest plugin: swap the case lists of PEFT's ``test_custom_models`` and record every outcome as JSON."""

    def __init__(self, report: Path, shard: tuple[int, int] = (0, 1)) -> None:
        self.report = report
        self.shard = shard
        self.cases: dict[str, Case] = {}
        self.instances: dict[int, tuple[str, str, str | None]] = {}  # id(config) -> (case, method, control)
        self.records: dict[str, dict[str, Any]] = {}

    def install(self, module: types.ModuleType) -> None:
        """Replace the contents of PEFT's case lists, in place: ``parametrize`` marks hold these very lists."""
        test_cases = _case_list(module, "TEST_CASES")
        by_name = {row[0]: row for row in test_cases}
        missing = [name for name in LORA_CONTROLS if name not in by_name]
        if missing:
            raise RuntimeError(f"PEFT's TEST_CASES no longer has the LoRA control rows {missing}")
        controls = [by_name[name] for name in LORA_CONTROLS]
        ours = build_cases()
        test_cases[:] = controls + [case.row() for case in ours]

        multi = _case_list(module, "MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES")
        multi_by_name = {row[0]: row for row in multi}
        missing = [name for name in MULTI_CONTROLS if name not in multi_by_name]
        if missing:
            raise RuntimeError(f"PEFT's MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES no longer has the rows {missing}")
        multi_ours = build_multi_cases()
        multi[:] = [multi_by_name[name] for name in MULTI_CONTROLS] + [case.row() for case in multi_ours]

        _case_list(module, "ALL_PEFT_CONFIG_CLASSES")[:] = list(CLASS_CASES)

        for row in controls:
            self.cases[row[0]] = Case(row[0], "LoRA", row[1], row[2], row[3])
        for name in MULTI_CONTROLS:
            row = multi_by_name[name]
            self.cases[name] = Case(name, "LoRA", row[1], row[2], row[3], None, row[4])
        for case in ours + multi_ours:
            self.cases[case.name] = case
        self._extend_literal_parametrizations(module)

    def _extend_literal_parametrizations(self, module: types.ModuleType) -> None:
        """Add HoRA and DoRAN to the config lists that some tests spell out in their own ``parametrize`` mark.

        ``parametrize("config_cls", [IA3Config, ..., LoraConfig, ...])`` gets the two classes of ``CLASS_CASES``;
        ``parametrize("config0", [LoraConfig(target_modules=...), ...])`` gets a HoRA and a DoRAN config with the
        LoRA config's targets, which is then their control; ``parametrize("test_name, config0, config1", [...])``
        (mixed adapter batches) gets a HoRA and a DoRAN row for every LoRA row of ``MIXED_CONTROLS``.
        """
        extended: set[int] = set()  # a list shared by several marks (MIXED_ADAPTER_TEST_CASES) grows once
        for class_name in TEST_CLASSES:
            for function in vars(getattr(module, class_name, object)).values():
                for mark in getattr(function, "pytestmark", []):
                    if mark.name != "parametrize" or len(mark.args) < 2 or not isinstance(mark.args[1], list):
                        continue
                    argnames, values = mark.args[0], mark.args[1]
                    if str(argnames).startswith("test_name, config") and id(values) not in extended:
                        extended.add(id(values))
                        self._extend_mixed_rows(values)
                    elif argnames == "config_cls" and LoraConfig in values:
                        values.extend(cls for cls in CLASS_CASES if cls not in values)
                    elif argnames == "config0":
                        lora = next((v for v in values if type(v) is LoraConfig), None)
                        if lora is None or any(id(v) in self.instances for v in values):
                            continue
                        self.instances[id(lora)] = ("LoraConfig instance", "LoRA", None)
                        targets = sorted(lora.target_modules)
                        for config_cls, (_, method, _) in CLASS_CASES.items():
                            if method == "LoRA":
                                continue
                            mirror = config_cls(target_modules=targets, init_weights=False)
                            self.instances[id(mirror)] = (
                                f"{config_cls.__name__} instance",
                                method,
                                "LoraConfig instance",
                            )
                            values.append(mirror)

    def _extend_mixed_rows(self, values: list) -> None:
        """Mirror the ``MIXED_CONTROLS`` rows of a mixed-batch test's list for HoRA and DoRAN, in place."""
        for row in list(values):
            if not isinstance(row, tuple) or row[0] not in MIXED_CONTROLS:
                continue
            self.cases[row[0]] = Case(row[0], "LoRA", "MLP", LoraConfig, {})
            for config_cls, (_, method, _) in CLASS_CASES.items():
                if method == "LoRA":
                    continue
                mirror = mixed_mirror(row, method, config_cls)
                self.cases[mirror[0]] = Case(mirror[0], method, "MLP", config_cls, {}, row[0])
                values.append(mirror)

    def pytest_collectstart(self, collector: Any) -> None:
        import pytest

        if isinstance(collector, pytest.Module) and collector.path.name == TEST_FILE:
            with _stub_unused_imports():
                module = collector.obj  # pytest imports the module here, a moment before it would anyway
            self.install(module)

    def _classify(self, item: Any) -> dict[str, Any] | None:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            return None
        params = callspec.params
        if "test_name" in params:
            case = self.cases.get(params["test_name"])
            if case is None:
                return None
            name, method, control = case.name, case.method, case.control
        elif params.get("config_cls") in CLASS_CASES:
            name, method, control = CLASS_CASES[params["config_cls"]]
        elif id(params.get("config0")) in self.instances:
            name, method, control = self.instances[id(params["config0"])]
        else:
            return None
        variant = ",".join(f"{k}={_label(v)}" for k, v in sorted(params.items()) if k not in CASE_PARAMS)
        return {
            "cls": item.cls.__name__ if item.cls else "",
            "function": item.originalname,
            "case": name,
            "method": method,
            "control": control,
            "variant": variant,
            "outcome": None,
            "message": "",
            "seconds": 0.0,
        }

    def pytest_collection_modifyitems(self, session: Any, config: Any, items: list) -> None:
        classified = [(item, self._classify(item)) for item in items]
        # a LoRA test is only a control where HoRA or DoRAN run the same function
        mirrored = {(r["cls"], r["function"]) for _, r in classified if r is not None and r["method"] != "LoRA"}
        selected, deselected = [], []
        index, count = self.shard
        for item, record in classified:
            if record is None or (record["cls"], record["function"]) not in mirrored:
                deselected.append(item)  # hard-codes its PEFT method: nothing to compare
            elif (len(selected) + len(deselected)) % count != index:
                deselected.append(item)  # another shard's
            else:
                self.records[item.nodeid] = record
                selected.append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = selected

    def pytest_runtest_logreport(self, report: Any) -> None:
        record = self.records.get(report.nodeid)
        if record is None:
            return
        record["seconds"] += report.duration
        if hasattr(report, "wasxfail"):
            record["outcome"] = "xfailed" if report.skipped else "xpassed"
            record["message"] = str(report.wasxfail)[:300]
        elif report.failed:
            if record["outcome"] != "failed":
                record["outcome"] = "failed"
                record["message"] = _failure_message(report)
        elif report.skipped:
            record["outcome"] = "skipped"
            longrepr = report.longrepr
            record["message"] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)[:300]
        elif report.when == "call" and record["outcome"] is None:
            record["outcome"] = "passed"

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        for record in self.records.values():
            if record["outcome"] is None:
                record["outcome"] = "not run"
        self.report.write_text(json.dumps({"peft": installed_peft_version(), "records": self.records}, indent=1))


def _label(value: Any) -> str:
    return getattr(value, "__name__", None) or str(value)


def _failure_message(report: Any) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1:]
    return (f"[{report.when}] " + str(text)).replace("\n", " ")[:300]


def _pytest_main(argv: list[str]) -> int:
    """Entry point of the subprocess: ``--report FILE --shard I/N PATH::Class ...``."""
    import pytest
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--shard", default="0/1")
    args, rest = parser.parse_known_args(argv)
    index, count = (int(x) for x in args.shard.split("/"))
    torch.set_num_threads(1)  # tiny models: threads only contend with the other shards
    plugin = ConformancePlugin(args.report, (index, count))
    return pytest.main(rest, plugins=[plugin])


# ---------------------------------------------------------------------------------------------------------------------
# running and comparing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Records of one conformance run: nodeid -> {cls, function, case, method, control, variant, outcome, message}."""

    peft: str
    records: dict[str, dict[str, Any]]
    seconds: float
    log: str = ""


def run_conformance(tests_root: Path, workers: int | None = None, timeout: float = 1800) -> Run:
    """Run the selected PEFT test classes in ``workers`` pytest subprocesses and merge their records."""
    workers = workers or int(os.environ.get("HORA_PEFT_TESTS_WORKERS", 0)) or min(2, os.cpu_count() or 1)
    targets = [f"{PACKAGE}/{TEST_FILE}::{name}" for name in TEST_CLASSES]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), str(Path(__file__).parent), str(tests_root), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
        "HF_HUB_OFFLINE": "1",  # PEFT's custom-model tests need nothing from the Hub
        "OMP_NUM_THREADS": "1",
    }
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        # an empty ini in tmp: PEFT's pytest settings (coverage, warnings as errors) and ours stay out of the way
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n")
        procs = []
        for index in range(workers):
            report = Path(tmp) / f"report-{index}.json"
            log = open(Path(tmp) / f"log-{index}.txt", "w")  # closed once its process has ended
            command = [sys.executable, __file__, "--inner", "--report", str(report), "--shard", f"{index}/{workers}",
                       "-c", str(ini), "--rootdir", str(tests_root), "-p", "no:cacheprovider", "-q",
                       "-W", "ignore::DeprecationWarning", "-W", "ignore::FutureWarning", *targets]  # fmt: skip
            procs.append((subprocess.Popen(command, cwd=tests_root, env=env, stdout=log, stderr=subprocess.STDOUT),
                          report, log))  # fmt: skip
        records: dict[str, dict[str, Any]] = {}
        logs = []
        peft = installed_peft_version()
        for proc, report, log in procs:
            try:
                proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            text = Path(log.name).read_text(errors="replace")
            logs.append(text)
            if not report.is_file():
                raise RuntimeError(f"a PEFT test shard wrote no report (exit {proc.returncode}):\n{text[-3000:]}")
            data = json.loads(report.read_text())
            peft = data["peft"]
            records.update(data["records"])
    return Run(peft, records, time.monotonic() - start, "\n".join(logs))


@dataclass
class Comparison:
    """Per method counts and the HoRA / DoRAN tests that fail where LoRA passes."""

    counts: dict[str, Counter]
    regressions: list[str] = field(default_factory=list)
    not_applicable: dict[str, Counter] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def compare(run: Run) -> Comparison:
    """Compare each HoRA / DoRAN record with the LoRA record of the same test function, parameters and control."""
    index = {(r["cls"], r["function"], r["case"], r["variant"]): r for r in run.records.values()}
    counts = {method: Counter() for method in METHODS}
    result = Comparison(counts, not_applicable={method: Counter() for method in METHODS})
    for nodeid, record in sorted(run.records.items()):
        method = record["method"]
        counts[method]["run"] += 1
        counts[method][record["outcome"]] += 1
        if method == "LoRA":
            continue
        if record["function"] in NOT_APPLICABLE:
            counts[method]["not applicable"] += 1
            result.not_applicable[method][record["function"]] += 1
            continue
        control = index.get((record["cls"], record["function"], record["control"], record["variant"]))
        if control is None:
            result.problems.append(f"{nodeid}: no LoRA control {record['control']!r} was run")
            continue
        if control["outcome"] != "passed":
            counts[method]["not compared"] += 1  # LoRA itself skips or fails it: nothing to hold HoRA/DoRAN to
            continue
        counts[method]["compared"] += 1
        if record["outcome"] != "passed":
            counts[method]["regressions"] += 1
            result.regressions.append(f"{nodeid}: {record['outcome']}: {record['message']}")
    for method in METHODS:
        if counts[method]["run"] == 0:
            result.problems.append(f"no {method} test was collected: the case lists were not installed")
    return result


def format_table(run: Run, comparison: Comparison) -> str:
    """Markdown table of a run, for the README."""
    lines = [
        f"PEFT {run.peft}, `tests/{TEST_FILE}` ({', '.join(f'`{c}`' for c in TEST_CLASSES)}), "
        f"run {time.strftime('%Y-%m-%d')} in {run.seconds:.0f} s:",
        "",
        "| method | tests run | passed | skipped | failed | not applicable | held to LoRA | fail where LoRA passes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method in METHODS:
        c = comparison.counts[method]
        skipped = c["skipped"] + c["xfailed"]
        if method == "LoRA":
            lines.append(f"| LoRA (control) | {c['run']} | {c['passed']} | {skipped} | {c['failed']} | — | — | — |")
            continue
        lines.append(
            f"| {method} | {c['run']} | {c['passed']} | {skipped} | {c['failed']} | {c['not applicable']} | "
            f"{c['compared']} | {c['regressions']} |"
        )
    if NOT_APPLICABLE:
        lines += ["", "Not applicable (run, but not compared with LoRA):", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in sorted(NOT_APPLICABLE.items())]
    return "\n".join(lines)


def summary(run: Run, comparison: Comparison) -> dict[str, Any]:
    """What the docs' conformance table is rendered from (``python -m hora docs``): the counts per method."""
    return {
        "benchmark": "peft_conformance",
        "peft": run.peft,
        "test_file": f"tests/{TEST_FILE}",
        "test_classes": list(TEST_CLASSES),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(run.seconds),
        "counts": {method: dict(comparison.counts[method]) for method in METHODS},
        "not_applicable": dict(sorted(NOT_APPLICABLE.items())),
        "regressions": len(comparison.regressions),
        "problems": len(comparison.problems),
    }


def format_report(run: Run, comparison: Comparison, limit: int = 60) -> str:
    """Plain-text summary: the table, then every regression and harness problem."""
    text = [format_table(run, comparison)]
    if comparison.problems:
        text += ["", "Harness problems:", *comparison.problems[:limit]]
    if comparison.regressions:
        text += ["", f"Fail for HoRA/DoRAN where LoRA passes ({len(comparison.regressions)}):"]
        text += comparison.regressions[:limit]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.peft_conformance [--table] [--workers N]``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inner"]:
        return _pytest_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="print only the markdown table for the README")
    parser.add_argument("--workers", type=int, default=None, help="pytest subprocesses (default: 2 or fewer)")
    parser.add_argument("--json", type=Path, default=None, help="also write every test's record to this file")
    parser.add_argument("--summary", type=Path, default=None, help="write the counts the docs' table shows (JSON)")
    args = parser.parse_args(argv)
    run = run_conformance(fetch_peft_tests(), workers=args.workers)
    comparison = compare(run)
    if args.json:
        args.json.write_text(json.dumps({"peft": run.peft, "seconds": run.seconds, "records": run.records}, indent=1))
    if args.summary:
        args.summary.write_text(json.dumps(summary(run, comparison), indent=1) + "\n")
    print(format_table(run, comparison) if args.table else format_report(run, comparison))
    return 1 if comparison.regressions or comparison.problems else 0


if __name__ == "__main__":
    # run as `python -m tests.peft_conformance` or as a script (the pytest subprocesses): either way, the plugin and
    # the config classes above must come from one module named `peft_conformance`, so import it under that name
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO_ROOT)]
    import peft_conformance

    sys.exit(peft_conformance.main())
