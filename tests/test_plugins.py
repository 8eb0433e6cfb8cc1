"""Plugin discovery: built-ins, in-process objects, recipe-local files and pip-installed entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sakura_core import hookimpl
from sakura_core.errors import PluginError
from sakura_core.plugins import BUILTIN_PLUGINS, Plugins
from sakura_core.recipe import load_recipe
from sakura_core.stage import Options, StageKind

PACKAGES = Path(__file__).parent / "plugin_packages"


class Twin(StageKind):
    Options = Options


def test_builtins_register_through_the_public_hooks():
    plugins = Plugins(entry_points=False)
    assert set(BUILTIN_PLUGINS) <= set(plugins.infos)
    assert "tiny" in plugins.model_sources and "local" in plugins.model_sources


def test_in_process_plugin_object():
    class MyPlugin:
        @hookimpl
        def sakura_register_stage_kinds(self, register):
            register("twin", Twin())

    plugins = Plugins(entry_points=False)
    plugins.register_object(MyPlugin(), "mine", version="9")
    entry = plugins.stage_kinds.entry("twin")
    assert entry.plugin.name == "mine" and entry.plugin.version == "9"


def test_duplicate_name_is_an_error_naming_both_plugins(write_recipe):
    path = write_recipe(
        'plugins = ["echo_plugin.py", "duplicate_plugin.py"]\n[stages.a]\nkind = "echo"\n',
        plugin_files=("echo_plugin.py", "duplicate_plugin.py"),
    )
    with pytest.raises(PluginError) as info:
        load_recipe(path)
    assert str(info.value) == "stage kind 'echo' is registered by both plugin echo_plugin and plugin duplicate_plugin"
    assert info.value.exit_code == 2


def test_misspelt_hook_is_caught():
    class Typo:
        @hookimpl
        def sakura_register_stage_kind(self, register):  # missing "s"
            pass

    plugins = Plugins(entry_points=False)
    with pytest.raises(PluginError, match="unknown hook 'sakura_register_stage_kind'"):
        plugins.register_object(Typo(), "typo")


def test_unknown_registry_entry_suggests_a_name():
    plugins = Plugins(entry_points=False)
    with pytest.raises(PluginError, match=r"unknown model source 'tinyy' \(did you mean tiny\?\)"):
        plugins.model_sources.get("tinyy")


def _pip_install(package: str, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(PACKAGES / package)],
        check=True, capture_output=True,
    )


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """sakura-hello and sakura-broken, really installed with pip into their own site directories."""
    good = tmp_path_factory.mktemp("site-good")
    bad = tmp_path_factory.mktemp("site-bad")
    _pip_install("sakura-hello", good)
    _pip_install("sakura-broken", bad)
    return good, bad


def test_installed_entry_point_plugin_is_discovered_and_runs(installed_plugins, sakura, tmp_path):
    good, _ = installed_plugins
    env = {"PYTHONPATH": str(good)}
    listing = json.loads(sakura("plugins", "--json", env=env, check=0).stdout)
    hello = next(p for p in listing if p["name"] == "hello")
    assert hello["version"] == "1.2.3"
    assert hello["origin"] == "entry point of sakura-hello"
    assert hello["registers"] == {"stage_kinds": ["hello"]}
    assert "sakura_register_stage_kinds" in hello["hooks"]

    recipe = tmp_path / "hello.toml"
    recipe.write_text('[stages.greet]\nkind = "hello"\ngreeting = "konnichiwa"\n')
    result = json.loads(sakura("run", recipe, "--json", env=env, check=0).stdout)
    artifact = Path(result["stages"][0]["artifact"])
    assert (artifact / "greeting.txt").read_text() == "konnichiwa"


def test_plugin_that_fails_to_import_is_named_and_nothing_runs(installed_plugins, sakura, tmp_path):
    _, bad = installed_plugins
    recipe = tmp_path / "r.toml"
    recipe.write_text('[models]\nm = "tiny:llama"\n[stages.a]\nkind = "publish"\nmodel = "m"\n')
    for args in (("plugins",), ("run", recipe)):
        result = sakura(*args, env={"PYTHONPATH": str(bad)}, check=2)
        assert result.stderr.strip() == (
            "plugin broken (from package sakura-broken) failed to load: ImportError: this plugin is broken on purpose"
        )
    assert not (tmp_path / ".sakura").exists()
