"""The README's first screen and .ci/run stay in step: CI runs exactly what a new user is told to run."""

from __future__ import annotations

import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    return [line for line in first_block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_first_screen_has_exactly_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("```bash") < 2500, "the set-up commands must be on the first screen"
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert all(c.startswith("python3 -m venv .venv") and "pip install torch==2.13.0 &&" in c for c in commands)
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_commands()[1] in ci.splitlines()


def test_requirements_pin_torch_and_minor_versions():
    requirements = (ROOT / "requirements.txt").read_text()
    assert "torch==2.13.0" in requirements
    for package in ("transformers", "peft", "gradio", "plotly", "huggingface-hub", "safetensors", "accelerate"):
        assert re.search(rf"^{package}==\d+\.\d+\.\*$", requirements, re.M), package


def test_python_examples_run_as_written(tmp_path, monkeypatch):
    """The README's Python blocks, in order, with the embedded assets and two training steps instead of 200."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)[:2]
    code = "\n".join(blocks).replace('"assets/', f'"{ROOT}/assets/').replace("steps=200", "steps=2")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "runs" / "my-lora" / "adapter_config.json").is_file()
    assert scope["deltas"].shape[0] == scope["sim"].shape[0] == scope["sim"].shape[1]
