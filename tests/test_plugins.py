"""Plugin discovery and the plugin contract: built-ins, in-process objects, recipe-local files and packages
installed with pip (wheel and editable), code hashes in fingerprints, name clashes and explicit
replacement, SAKURA_LOAD_PLUGINS, declared registries, and one line for a plugin's internal error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
from conftest import run_sakura
from pydantic import BaseModel

from sakura_core import hookimpl, hookspec
from sakura_core.errors import OptionError, PluginError, RecipeError
from sakura_core.options import Options
from sakura_core.plugins import BUILTIN_PLUGINS, Plugins
from sakura_core.recipe import load_recipe
from sakura_core.registry import RegistrySpec
from sakura_core.stage import StageKind

PACKAGES = Path(__file__).parent / "plugin_packages"
TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"


class Twin(StageKind):
    Options = Options


def test_builtins_register_through_the_public_hooks():
    plugins = Plugins(entry_points=False)
    assert set(BUILTIN_PLUGINS) <= set(plugins.infos)
    assert "tiny" in plugins.model_sources and "local" in plugins.model_sources
    merge = plugins.infos["sakura_merge.plugin"]
    assert merge.distribution == "sakura-recipes" and merge.version == f"0.1.0+{merge.code_hash[:8]}"


def test_in_process_plugin_object():
    class MyPlugin:
        @hookimpl
        def sakura_register_stage_kinds(self, register):
            register("twin", Twin())

    plugins = Plugins(entry_points=False)
    plugins.register_object(MyPlugin(), "mine", version="9")
    entry = plugins.stage_kinds.entry("twin")
    assert entry.plugin.name == "mine"
    assert entry.plugin.version == f"9+{entry.plugin.code_hash[:8]}"  # its code: this test file
    assert entry.plugin.code_paths == (Path(__file__),)


def test_duplicate_name_is_an_error_naming_both_plugins(write_recipe):
    path = write_recipe(
        'plugins = ["echo_plugin.py", "duplicate_plugin.py"]\n[stages.a]\nkind = "echo"\n',
        plugin_files=("echo_plugin.py", "duplicate_plugin.py"),
    )
    with pytest.raises(PluginError) as info:
        load_recipe(path)
    assert str(info.value).startswith(
        f"stage kind 'echo' is registered by both plugin echo_plugin (file {path.parent / 'echo_plugin.py'}) and "
        f"plugin duplicate_plugin (file {path.parent / 'duplicate_plugin.py'}) (without replace=True): uninstall one"
    )
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


def test_entries_must_follow_their_registry_contract():
    """A function registered as a merge method, or an options model that is not a sakura one, is refused
    with the plugin named, when the registry fills."""

    def mean(call):
        return sum(call.tensors) / len(call.tensors)

    class NotSakura(BaseModel):
        x: int = 1

    from sakura_merge import MergeMethod

    class Loose(MergeMethod):
        Options = NotSakura

    for impl, expected in (
        (mean, "plugin bad (in-process) registered merge method 'mean' as a function: it must be an instance of "
               "sakura_merge.contract.MergeMethod"),
        (MergeMethod, "as the class MergeMethod: it must be an instance of"),
        (Loose(), "with Options = <class"),
    ):
        class Bad:
            @hookimpl
            def sakura_register_merge_methods(self, register, _impl=impl):
                register("mean", _impl)

        plugins = Plugins(entry_points=False)
        plugins.register_object(Bad(), "bad")
        with pytest.raises(PluginError) as info:
            plugins.merge_methods
        assert expected in str(info.value)
        assert "slerp" not in str(info.value)
        assert "tiny" in plugins.model_sources  # the other registries are unaffected


def test_a_plugin_declares_a_registry_and_others_fill_it():
    """The way the eval stage brings its evaluators: a hook of its own, a contract, docs, discovered."""

    from sakura_core.registry import Implementation

    class Scorer(Implementation):
        """What a scorer is (the contract)."""

    @hookspec
    def sakura_register_scorers(register):
        """Register scorers."""

    spec = RegistrySpec(attr="scorers", what="scorer", hookspec=sakura_register_scorers, contract=Scorer,
                        title="Scorers", named_by="`scorer` in a score stage")

    class Declaring:
        @hookimpl
        def sakura_declare_registries(self, declare):
            declare(spec)

    class Accuracy(Scorer):
        """Counts right answers."""

    class Filling:
        @hookimpl
        def sakura_register_scorers(self, register):
            register("accuracy", Accuracy())

    plugins = Plugins(entry_points=False)
    plugins.register_object(Declaring(), "declaring")
    plugins.register_object(Filling(), "filling")
    assert plugins.scorers.names() == ["accuracy"]
    assert plugins.declared_by["scorers"] == "declaring"
    from sakura_core import reference

    assert "## Scorers\n" in reference.build(plugins).markdown

    class Again:
        @hookimpl
        def sakura_declare_registries(self, declare):
            declare(spec)

    with pytest.raises(PluginError, match="declares registry 'scorers', which declaring already declares"):
        plugins.register_object(Again(), "again")


def test_method_checks_and_integer_gradients_run_at_validate(write_recipe):
    """A merge method's own check (k at most the number of models) and an int parameter given as a gradient
    fail `validate`, before any work."""
    from pydantic import Field

    from sakura_merge import MergeMethod

    class TopKOptions(Options):
        k: int = Field(1, ge=1)

    class TopK(MergeMethod):
        """Per entry, the mean of the k largest values."""

        Options = TopKOptions

        def check(self, options, env):
            too_big = [k for k in options.parameter_values("k") if isinstance(k, int) and k > options.model_count()]
            if too_big:
                raise OptionError("parameters.k", f"k = {too_big[0]} is more than the {options.model_count()} models merged")

        def run(self, call):  # pragma: no cover - validation only
            raise AssertionError

    class Plugin:
        @hookimpl
        def sakura_register_merge_methods(self, register):
            register("topk", TopK())

    def validate(parameters: str) -> str:
        plugins = Plugins(entry_points=False)
        plugins.register_object(Plugin(), "topk-plugin")
        path = write_recipe(f"""
            [models]
            a = "{TINY}&seed=1"
            b = "{TINY}&seed=2"
            [stages.merge]
            kind = "merge"
            merge_method = "topk"
            models = [{{ model = "a" }}, {{ model = "b" }}]
            parameters = {parameters}
        """, plugin_files=())
        with pytest.raises(RecipeError) as info:
            load_recipe(path, plugins=plugins)
        return str(info.value)

    assert validate("{ k = 3 }") == "r.toml: stages.merge.parameters.k: k = 3 is more than the 2 models merged"
    assert validate("{ k = [1, 2] }") == (
        "r.toml: stages.merge.parameters.k: k takes one value, not a gradient: a gradient interpolates over the "
        "layers and gives fractions (got [1, 2])"
    )


def test_slerp_without_a_base_model_is_one_line(write_recipe, sakura):
    path = write_recipe(f"""
        [models]
        a = "{TINY}&seed=1"
        b = "{TINY}&seed=2"
        [stages.merge]
        kind = "merge"
        merge_method = "slerp"
        models = [{{ model = "a" }}, {{ model = "b" }}]
        parameters = {{ t = 0.5 }}
    """, plugin_files=())
    result = sakura("validate", path, check=2)
    assert result.stderr.strip() == "r.toml: stages.merge.base_model: slerp needs a base_model"


def test_an_internal_error_in_a_plugin_is_one_line_naming_it(write_recipe, sakura, tmp_path):
    """A bug in a plugin's check (not an OptionError) at validate: the plugin, the error, the log; exit 1."""
    (tmp_path / "buggy.py").write_text(textwrap.dedent('''
        from sakura_core import hookimpl
        from sakura_core.options import Options
        from sakura_core.stage import StageKind

        class Buggy(StageKind):
            Options = Options

            def check(self, options, env):
                return {}["missing"]

        @hookimpl
        def sakura_register_stage_kinds(register):
            register("buggy", Buggy())
    '''))
    path = write_recipe('plugins = ["buggy.py"]\n[stages.a]\nkind = "buggy"\n', plugin_files=())
    result = sakura("validate", path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, check=1)
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"internal error in plugin buggy (file {tmp_path / 'buggy.py'}): KeyError: 'missing' (traceback in ")
    log = Path(line.split("(traceback in ")[1].rstrip(")"))
    assert "buggy.py" in log.read_text() and log.is_relative_to(tmp_path / "cache")


def test_plugins_command_with_a_recipe_lists_its_plugin_files(write_recipe, sakura):
    path = write_recipe('plugins = ["echo_plugin.py"]\n[stages.a]\nkind = "echo"\n')
    listing = json.loads(sakura("plugins", path, "--json", check=0).stdout)
    echo = next(p for p in listing["plugins"] if p["name"] == "echo_plugin")
    assert echo["origin"] == f"file {path.parent / 'echo_plugin.py'}" and echo["registers"] == {"stage_kinds": ["echo", "slow"]}
    kinds = {e["name"]: e for e in listing["registries"]["stage_kinds"]}
    assert {"key": "colour", "type": "string", "default": '`"red"`', "meaning": ""} in kinds["echo"]["options"]
    text = sakura("plugins", path, check=0).stdout
    assert f"echo_plugin  (file {path.parent / 'echo_plugin.py'}, code {echo['code'][:8]})" in text
    assert "\n    echo\n" in text and "      repeat (int ≥ 1, default 1)" in text


# -- installed packages ---------------------------------------------------------------------------------
def _pip_install(package: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(package)],
        check=True, capture_output=True,
    )


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Each test package really installed with pip (a wheel build) into its own site directory."""
    found = {}
    for name in ("sakura-hello", "sakura-broken", "sakura-karcher", "sakura-karcher-clash"):
        source = tmp_path_factory.mktemp("src") / name
        shutil.copytree(PACKAGES / name, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        site = tmp_path_factory.mktemp(f"site-{name}")
        _pip_install(source, site)
        found[name] = site
    return found


def env_with(*sites: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(map(str, sites)), **extra}


def test_installed_entry_point_plugin_is_discovered_and_runs(sites, sakura, tmp_path):
    env = env_with(sites["sakura-hello"])
    listing = json.loads(sakura("plugins", "--json", env=env, check=0).stdout)
    hello = next(p for p in listing["plugins"] if p["name"] == "hello")
    assert hello["release"] == "1.2.3" and hello["version"] == f"1.2.3+{hello['code'][:8]}"
    assert hello["origin"] == "entry point of sakura-hello" and hello["distribution"] == "sakura-hello"
    assert hello["registers"] == {"stage_kinds": ["hello"]}
    assert "sakura_register_stage_kinds" in hello["hooks"]

    recipe = tmp_path / "hello.toml"
    recipe.write_text('[stages.greet]\nkind = "hello"\ngreeting = "konnichiwa"\n')
    result = json.loads(sakura("run", recipe, "--json", env=env, check=0).stdout)
    artifact = Path(result["stages"][0]["artifact"])
    assert (artifact / "greeting.txt").read_text() == "konnichiwa"
    manifest = json.loads((artifact / "sakura-artifact.json").read_text())
    assert manifest["plugins"] == [{
        "name": "hello", "distribution": "sakura-hello", "version": "1.2.3", "code": hello["code"],
        "origin": "entry point of sakura-hello", "provides": ["stage kind hello"],
        "entries": [{"what": "stage kind", "name": "hello", "version": "1", "description": ""}],
    }]


def test_plugin_that_fails_to_import_is_named_and_nothing_runs(sites, sakura, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[models]\nm = "tiny:llama"\n[stages.a]\nkind = "publish"\nmodel = "m"\n')
    for args in (("plugins",), ("run", recipe)):
        result = sakura(*args, env=env_with(sites["sakura-broken"]), check=2)
        assert result.stderr.strip() == (
            "plugin broken (from package sakura-broken) failed to load: ImportError: this plugin is broken on purpose"
        )
    assert not (tmp_path / ".sakura").exists()


MERGE_RECIPE = f"""
[models]
a = "{TINY}&seed=1"
b = "{TINY}&seed=2"
c = "{TINY}&seed=3"

[stages.merge]
kind = "merge"
merge_method = "karcher"
models = [{{ model = "a" }}, {{ model = "b" }}, {{ model = "c" }}]
dtype = "float32"
"""


def test_a_name_clash_fails_only_what_needs_that_registry(sites, sakura, tmp_path):
    env = env_with(sites["sakura-karcher-clash"])
    listing = sakura("plugins", env=env, check=0)  # sakura plugins still lists everything, and the problem
    clash = (
        "merge method 'karcher' is registered by both plugin sakura_merge.plugin (sakura-recipes 0.1.0) and plugin "
        "karcher_clash (sakura-karcher-clash 0.1.0) (without replace=True): uninstall one, leave one out with "
        "SAKURA_LOAD_PLUGINS, or have one register it with replace=True to take the name over"
    )
    assert f"problem: {clash}" in listing.stderr
    assert "karcher_clash  sakura-karcher-clash 0.1.0  (entry point of sakura-karcher-clash, code " in listing.stdout
    other = tmp_path / "hello.toml"
    other.write_text(f'[models]\nm = "{TINY}"\n[stages.ship]\nkind = "publish"\npublisher = "local"\nmodel = "m"\npath = "out"\n')
    sakura("validate", other, env=env, check=0)  # no merge stage: the clash does not matter
    merge = tmp_path / "merge.toml"
    merge.write_text(MERGE_RECIPE)
    assert sakura("validate", merge, env=env, check=2).stderr.strip() == f"merge.toml: stages.merge: {clash}"
    # SAKURA_LOAD_PLUGINS chooses which installed plugins load: none, or the clashing one by either name.
    sakura("validate", merge, env={**env, "SAKURA_LOAD_PLUGINS": ""}, check=0)
    for name in ("karcher_clash", "sakura-karcher-clash", "sakura_karcher_clash"):
        assert sakura("validate", merge, env={**env, "SAKURA_LOAD_PLUGINS": name}, check=2).stderr.strip().endswith(clash)
    result = sakura("plugins", env={**env, "SAKURA_LOAD_PLUGINS": "karcher-clash,nope"}, check=2)
    assert result.stderr.strip() == (
        "SAKURA_LOAD_PLUGINS names karcher-clash, nope, which no installed plugin is called (installed: karcher_clash)"
    )


def load_merged(result_json: str):
    from safetensors.torch import load_file

    stage = next(s for s in json.loads(result_json)["stages"] if s["name"] == "merge")
    return stage, load_file(Path(stage["artifact"]) / "model.safetensors")


def test_a_native_method_takes_over_a_bridged_name_and_matches_mergekit(sites, sakura, tmp_path):
    import torch

    env = env_with(sites["sakura-karcher"])
    listing = json.loads(sakura("plugins", "--json", env=env, check=0).stdout)
    karcher = next(e for e in listing["registries"]["merge_methods"] if e["name"] == "karcher")
    assert karcher["plugin"] == "karcher" and karcher["replaces"] == "sakura_merge.plugin (sakura-recipes 0.1.0)"
    assert karcher["url"] == "https://arxiv.org/abs/2603.04972"
    (tmp_path / "native").mkdir()
    (tmp_path / "bridge").mkdir()
    for where in ("native", "bridge"):
        (tmp_path / where / "r.toml").write_text(MERGE_RECIPE)
    native, ours = load_merged(sakura("run", tmp_path / "native" / "r.toml", "--json", env=env, check=0).stdout)
    bridged, theirs = load_merged(sakura("run", tmp_path / "bridge" / "r.toml", "--json", env={**env, "SAKURA_LOAD_PLUGINS": ""},
                                         check=0).stdout)
    assert native["metrics"]["engine"] == "native" and bridged["metrics"]["engine"] == "mergekit"
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6) for k in ours)
    assert native["fingerprint"] != bridged["fingerprint"]  # another plugin made it


def test_editing_an_installed_plugin_reruns_the_stages_that_use_it(sites, sakura, tmp_path):
    """A wheel install: the code hash of the installed files, not only the distribution's version."""
    site = tmp_path / "site"
    shutil.copytree(sites["sakura-karcher"], site)
    recipe = tmp_path / "r.toml"
    recipe.write_text(MERGE_RECIPE)
    env = env_with(site)
    first, _ = load_merged(sakura("run", recipe, "--json", env=env, check=0).stdout)
    again, _ = load_merged(sakura("run", recipe, "--json", env=env, check=0).stdout)
    assert (first["status"], again["status"]) == ("ran", "cached")
    method = site / "sakura_karcher" / "method.py"
    method.write_text(method.read_text().replace("alphas = [1.0 / len(tensors)]", "alphas = [1.0 / len(tensors) ]"))
    edited, _ = load_merged(sakura("run", recipe, "--json", env=env, check=0).stdout)
    assert edited["status"] == "ran" and edited["fingerprint"] != first["fingerprint"]


@pytest.mark.slow
def test_editing_an_editable_install_reruns_the_stages_that_use_it(tmp_path):
    """``pip install -e``: the distribution's version never changes, the code hash does."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    source = tmp_path / "sakura-karcher"
    shutil.copytree(PACKAGES / "sakura-karcher", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-build-isolation", "-e", str(source)], check=True, capture_output=True)
    recipe = tmp_path / "r.toml"
    recipe.write_text(MERGE_RECIPE)

    def run() -> dict:
        out = subprocess.run([str(python), "-m", "sakura_core", "run", str(recipe), "--json"], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": ""}, timeout=600)
        assert out.returncode == 0, out.stderr
        return next(s for s in json.loads(out.stdout)["stages"] if s["name"] == "merge")

    first = run()
    assert first["status"] == "ran" and first["metrics"]["engine"] == "native"
    assert run()["status"] == "cached"
    method = source / "sakura_karcher" / "method.py"
    method.write_text(method.read_text() + "\n# an edit\n")
    edited = run()
    assert edited["status"] == "ran" and edited["fingerprint"] != first["fingerprint"]


def test_a_plugin_calling_sys_exit_is_one_line(tmp_path):
    """At import or while its stage runs, a plugin's sys.exit ends in one line naming it, not a silent exit."""
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "r.toml").write_text('name = "x"\nplugins = ["exits.py"]\n\n[stages.q]\nkind = "quits"\n')
    done = run_sakura("validate", "r.toml", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"r.toml: plugins[0]: plugin file {tmp_path / 'exits.py'} failed to load: it called sys.exit(3) while being imported")

    (tmp_path / "kind.py").write_text(
        "import sys\nfrom sakura_core import hookimpl\nfrom sakura_core.stage import StageKind\n\n\n"
        "class Quits(StageKind):\n    def run(self, ctx):\n        sys.exit(3)\n\n\n"
        "@hookimpl\ndef sakura_register_stage_kinds(register):\n    register('quits', Quits())\n")
    (tmp_path / "r2.toml").write_text('name = "x"\nplugins = ["kind.py"]\n\n[stages.q]\nkind = "quits"\n')
    done = run_sakura("run", "r2.toml", "-q", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("stage q failed in plugin kind (file ") and "it called sys.exit(3)" in lines[0]
