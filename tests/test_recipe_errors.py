"""Every kind of recipe mistake is one line naming the file and key path, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from sakura_core.errors import RecipeError
from sakura_core.recipe import load_recipe

GOOD = """
plugins = ["echo_plugin.py"]
[models]
base = "tiny:llama?layers=2"
[stages.a]
kind = "echo"
reads = ["base"]
[stages.b]
kind = "echo"
reads = ["a"]
"""

CASES = [
    # (what, recipe text, override list, expected message)
    ("unknown top-level key", 'nmae = "x"\n' + GOOD, [], "r.toml: nmae: unknown key (did you mean name?)"),
    ("invalid TOML", "[stages.a\nkind = 1", [], "r.toml: invalid TOML: "),
    ("no stages", 'name = "x"\n', [], "r.toml: stages: the recipe has no stages"),
    ("missing kind", 'plugins = ["echo_plugin.py"]\n[stages.a]\ntext = "x"\n', [], "r.toml: stages.a: missing 'kind'"),
    ("unknown kind", 'plugins = ["echo_plugin.py"]\n[stages.a]\nkind = "ecko"\n', [],
     "r.toml: stages.a.kind: unknown stage kind 'ecko' (did you mean echo?)"),
    ("unknown option", GOOD.replace('reads = ["a"]', 'reads = ["a"]\ntexx = "hi"'), [],
     "r.toml: stages.b.texx: unknown option (did you mean text?)"),
    ("wrong type", GOOD.replace('reads = ["a"]', 'reads = ["a"]\nrepeat = "many"'), [],
     "r.toml: stages.b.repeat: input should be a valid integer"),
    ("out of range", GOOD.replace('reads = ["a"]', 'reads = ["a"]\nrepeat = 0'), [],
     "r.toml: stages.b.repeat: input should be greater than or equal to 1 (got 0)"),
    ("plugin's own check", GOOD.replace('reads = ["a"]', 'reads = ["a"]\ncolour = "gren"'), [],
     "r.toml: stages.b.colour: unknown colour 'gren' (did you mean green?)"),
    ("unknown reference", GOOD.replace('reads = ["a"]', 'reads = ["aa"]'), [],
     "r.toml: stages.b.reads[0]: no stage or model named 'aa' (did you mean a?)"),
    ("self reference", GOOD.replace('reads = ["a"]', 'reads = ["b"]'), [],
     "r.toml: stages.b.reads[0]: a stage cannot read its own output"),
    ("cycle", GOOD.replace('reads = ["base"]', 'reads = ["b"]'), [], "r.toml: stages.a.reads[0]: cycle: a -> b -> a"),
    ("unknown model source", GOOD.replace('"tiny:llama?layers=2"', '{ source = "tinny" }'), [],
     "r.toml: models.base.source: unknown model source 'tinny' (did you mean tiny?)"),
    ("bad model option", GOOD.replace("layers=2", "layers=zero"), [],
     "r.toml: models.base.layers: input should be a valid integer"),
    ("stage named like a model", GOOD.replace("[stages.a]", "[stages.base]"), [],
     "r.toml: stages.base: stage 'base' has the same name as a model"),
    ("override: unknown option", GOOD, ["stages.b.txet=1"], "r.toml: stages.b.txet: unknown option (did you mean text?)"),
    ("override: wrong type", GOOD, ["stages.b.repeat=[1]"], "r.toml: stages.b.repeat: input should be a valid integer"),
    ("override: not KEY=VALUE", GOOD, ["stages.b.repeat"], "r.toml: override 'stages.b.repeat' is not KEY=VALUE"),
    ("override into a value", GOOD, ["stages.b.kind.x=1"], "r.toml: stages.b.kind: cannot set a key inside a non-table value"),
    ("plugin file fails to import", GOOD.replace('["echo_plugin.py"]', '["echo_plugin.py", "broken_plugin.py"]'), [],
     "r.toml: plugins[1]: plugin file "),
    ("plugin file missing", GOOD.replace('["echo_plugin.py"]', '["nope.py"]'), [], "r.toml: plugins[0]: plugin file "),
]


@pytest.mark.parametrize("what,text,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_recipe_error_is_one_line_naming_file_and_key(write_recipe, what, text, overrides, expected):
    path = write_recipe(text, plugin_files=("echo_plugin.py", "broken_plugin.py"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_good_recipe_and_override_are_validated_the_same_way(write_recipe):
    path = write_recipe(GOOD)
    recipe = load_recipe(path, ["stages.b.repeat=3", 'stages.b.text="bye"'])
    assert recipe.stages["b"].options.repeat == 3
    assert recipe.stages["b"].options.text == "bye"
    assert recipe.stages["b"].depends_on == ["a"]


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_cli_prints_one_line_and_exits_2_without_traceback(write_recipe, sakura):
    path = write_recipe(GOOD.replace('reads = ["a"]', 'reads = ["a"]\ntexx = "hi"'))
    for command in ("validate", "run", "plan"):
        result = sakura(command, path, check=2)
        assert result.stderr.strip() == "r.toml: stages.b.texx: unknown option (did you mean text?)"
        assert "Traceback" not in result.stderr + result.stdout
    assert not (path.parent / ".sakura").exists()  # nothing was started, nothing written


def test_missing_local_model_is_a_recipe_error(write_recipe, sakura):
    path = write_recipe('[models]\nbase = "./no-such-model"\n[stages.p]\nkind = "publish"\npublisher = "local"\nmodel = "base"\npath = "out"\n', plugin_files=())
    for command in ("validate", "run"):
        result = sakura(command, path, check=2)
        assert result.stderr.strip() == f"r.toml: models.base: model directory {path.parent / 'no-such-model'} does not exist"


def test_a_bare_model_directory_means_beside_the_recipe(tmp_path, tiny_model, monkeypatch):
    """``m = "mymodel"`` is the directory next to the recipe, whatever the working directory is."""
    import shutil

    from sakura_core.recipe import load_recipe

    recipe_dir = tmp_path / "project"
    recipe_dir.mkdir()
    shutil.copytree(tiny_model, recipe_dir / "mymodel")
    path = recipe_dir / "r.toml"
    stage = '[stages.p]\nkind = "publish"\npublisher = "local"\nmodel = "m"\npath = "out"\n'
    path.write_text('[models]\nm = "mymodel"\n' + stage)
    monkeypatch.chdir(tmp_path)  # not the recipe's directory
    assert load_recipe(path).models["m"].source_name == "local"
    monkeypatch.chdir(recipe_dir.parent.parent)
    (recipe_dir / "r2.toml").write_text('[models]\nm = "someorg/mymodel"\n' + stage)
    assert load_recipe(recipe_dir / "r2.toml").models["m"].source_name == "hub"
