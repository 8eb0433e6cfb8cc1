"""Shared fixtures: tiny models generated once per session, a fresh plugin manager per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# huggingface_hub reads these at import time: keep every test offline unless a test starts its own server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """``tiny_model_factory(seed=1, layers=4, ...)`` -> directory of a generated tiny model (cached per options)."""
    from sakura_models.tiny import TinyOptions, generate_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    made: dict[str, Path] = {}

    def make(**options) -> Path:
        opts = TinyOptions(**options)
        key = "-".join(f"{k}{v}" for k, v in sorted(options.items())) or "default"
        if key not in made:
            out = root / key
            generate_tiny_model(opts, out)
            made[key] = out
        return made[key]

    return make


@pytest.fixture
def tiny_model(tiny_model_factory):
    return tiny_model_factory(seed=1)


@pytest.fixture
def copy_tree(tmp_path):
    def copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or src.name)
        shutil.copytree(src, dst)
        return dst

    return copy


CORE_PLUGINS = REPO / "tests" / "core_plugins"


@pytest.fixture
def write_recipe(tmp_path):
    """``write_recipe(text, name="r.toml", plugin_files=("echo_plugin.py",))`` -> path of the recipe in tmp_path."""
    import textwrap

    def write(text: str, name: str = "r.toml", plugin_files=("echo_plugin.py",)) -> Path:
        for plugin_file in plugin_files:
            shutil.copy(CORE_PLUGINS / plugin_file, tmp_path / plugin_file)
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


class RunsCode:
    """Pickled, it runs a shell command when loaded without weights_only: what a malicious .bin holds."""

    def __reduce__(self):
        return (os.system, ("echo this pickle ran code",))


def run_sakura(*args, cwd=None, env=None, timeout=600, check=None):
    """Run the real ``sakura`` CLI in a subprocess; returns CompletedProcess (text)."""
    import subprocess
    import sys

    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "sakura_core", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
    if check is not None:
        assert result.returncode == check, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture
def sakura():
    return run_sakura
