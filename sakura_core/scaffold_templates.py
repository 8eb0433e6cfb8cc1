"""The texts ``sakura new-plugin`` writes (``string.Template``: ``$module``, ``$registered``, ...).

One package layout for every kind: ``pyproject.toml``, a README, the package with the implementation in
its own module and a cheap ``plugin.py`` holding the hooks (the entry point: sakura imports it on every
start, so it imports the implementation only when a registry is filled), and tests that run it through
sakura's engine on tiny generated models. What differs per kind (the implementation, its tests, the usage)
is a ``ScaffoldKind`` that the plugin declaring the registry provides (``RegistrySpec.scaffold``).
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import Any

# -- every kind ------------------------------------------------------------------------------------
TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"  # a generated model: seconds on a CPU

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
# Part of the fingerprint of every stage that uses the plugin: bump it when the output changes.
version = "0.1.0"
description = "$description"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["sakura-recipes"]

# sakura finds plugins through this entry-point group; the value is the module holding the hooks.
[project.entry-points.sakura]
$entry = "$module.plugin"

[project.optional-dependencies]
test = ["pytest>=8"]

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

GITIGNORE = '''\
__pycache__/
*.egg-info/
build/
dist/
.sakura/
.pytest_cache/
'''

CONFTEST = '''\
"""Let the tests import the package from its source tree when it is not pip-installed; keep them offline."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests generate their tiny models: nothing to download
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
'''

TEST_HEAD = '''\
"""$title through sakura's real engine, on tiny generated models."""

from __future__ import annotations

import json
${extra_imports}import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import $module.plugin
from sakura_core.engine import Engine
from sakura_core.errors import RecipeError
from sakura_core.plugins import Plugins
from sakura_core.recipe import load_recipe
${constants}

def plugins_with_this_package() -> Plugins:
    """sakura's built-in plugins plus this package's module, whether it is installed or not."""
    plugins = Plugins(entry_points=False)
    plugins.register_object($module.plugin, "$entry")
    return plugins


def run_recipe(tmp_path: Path, text: str):
    """Validate and run a recipe written into ``tmp_path`` (its store is ``tmp_path/.sakura``)."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(textwrap.dedent(text))
    return Engine(load_recipe(recipe, plugins=plugins_with_this_package())).run()
'''

TEST_TAIL = '''

def test_sakura_lists_this_plugin_when_installed():
    """After ``pip install -e .``, ``sakura plugins`` lists the plugin and what it registers."""
    # Asked in a fresh interpreter: this one also sees the source tree (conftest.py), which sakura does not.
    probe = [sys.executable, "-c", "import importlib.metadata as m; m.distribution('$dist')"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("$dist is not installed (pip install -e .)")
    out = subprocess.run([sys.executable, "-m", "sakura_core", "plugins", "--json"], capture_output=True, text=True, check=True)
    plugin = next(p for p in json.loads(out.stdout)["plugins"] if p["name"] == "$entry")
    assert plugin["registers"] == {"$registry": ["$registered"]}
'''

README = '''\
# $dist

$title for sakura, written by `sakura new-plugin $dist --kind $kind`.

$about

The package exposes its module through the entry-point group `sakura` (see `pyproject.toml`):

```toml
[project.entry-points.sakura]
$entry = "$module.plugin"
```

## Try it

```bash
pip install -e ".[test]"
sakura plugins            # lists $entry with $registry: $registered, and its options
```

In a recipe:

```toml
$usage
```

## Test

```bash
pytest
```

$tests

## Make it yours

Edit `$module/$implementation`. `$module/plugin.py` holds the hooks and is what sakura imports on every
start (`sakura --help` included): keep it cheap, importing the implementation only inside the hook, and
import torch and friends inside the functions that use them. The package's code is part of the
fingerprint of every stage that uses it (its version plus a hash of its files, editable install or not):
edit it and sakura re-runs exactly those stages. Everything an implementation receives and may use is in
sakura's `docs/hooks.md`, with an example per hook. Your package's own reference page:
`sakura plugins --reference --plugin $entry > REFERENCE.md`.
'''



@dataclass(frozen=True)
class ScaffoldKind:
    """What ``sakura new-plugin --kind KIND`` writes for one registry (provided by the plugin declaring it)."""

    title: str  # "A merge method"
    description: str  # the package's one-line description
    implementation: str  # the module file holding it, e.g. "method.py"
    module: str  # its text
    plugin: str  # plugin.py: the hook registering it
    test: str  # the tests after TEST_HEAD
    usage: str  # a recipe snippet for the README
    about: str  # a paragraph for the README
    tests: str  # what the tests check, for the README
    data: str | None = None  # tests/data/pairs.jsonl, when the tests need data
    tiny: bool = False  # the tests use the TINY model constant


PLUGIN_HEAD = '''\
"""The hooks sakura calls (the entry point): kept cheap, the implementation is imported inside the hook."""

from sakura_core import hookimpl
'''

INIT = '''\
"""$title for sakura. The implementation is in ``$module.$implementation_module``; the hooks in ``$module.plugin``."""
'''


def render(scaffold: ScaffoldKind, kind: str, registry: str, names: Any) -> dict[str, str]:
    """Every file of the package: relative path -> text."""
    values = {
        "dist": names.dist, "module": names.module, "entry": names.entry, "registered": names.registered,
        "camel": names.camel, "kind": kind, "registry": registry,
        "title": f"{scaffold.title} ({names.registered})", "description": scaffold.description,
        "implementation": scaffold.implementation, "implementation_module": scaffold.implementation.removesuffix(".py"),
    }

    def fill(text: str) -> str:
        return Template(text).substitute(values)

    for key in ("usage", "about", "tests"):
        values[key] = fill(getattr(scaffold, key))
    data = scaffold.data is not None
    values["extra_imports"] = "import shutil\n" if data else ""
    constants = ['DATA = Path(__file__).parent / "data"'] if data else []
    if scaffold.tiny:
        constants.append(f'TINY = "{TINY}"')
    values["constants"] = "".join(f"\n{line}" for line in constants) + ("\n" if constants else "")
    files = {
        "pyproject.toml": fill(PYPROJECT),
        ".gitignore": GITIGNORE,
        "README.md": fill(README),
        f"{names.module}/__init__.py": fill(INIT),
        f"{names.module}/{scaffold.implementation}": fill(scaffold.module),
        f"{names.module}/plugin.py": fill(PLUGIN_HEAD + scaffold.plugin),
        "tests/conftest.py": CONFTEST,
        f"tests/test_{names.module}.py": fill(TEST_HEAD + scaffold.test + TEST_TAIL),
    }
    if scaffold.data is not None:
        files["tests/data/pairs.jsonl"] = scaffold.data
    return files
