"""docs/hooks.md cannot drift: every hook has a heading, and every example there runs."""

from __future__ import annotations

import re
import types
from pathlib import Path

import click
from click.testing import CliRunner
import pytest

from sakura_core import hookspecs
from sakura_core.plugins import REGISTRIES, Plugins

DOC = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("sakura_"))


def sections() -> dict[str, str]:
    text = DOC.read_text()
    parts = re.split(r"^## (\S+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_hook_has_a_section_and_nothing_else_does():
    assert sorted(sections()) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_example_runs(hook, write_recipe, tiny_model_factory):
    blocks = re.findall(r"```python\n(.*?)```", sections()[hook], flags=re.S)
    assert blocks, f"{hook} has no python example"
    module = types.ModuleType(f"doc_example_{hook}")
    exec(compile(blocks[0], f"docs/hooks.md#{hook}", "exec"), module.__dict__)
    plugins = Plugins(entry_points=False)
    plugins.register_object(module, f"example-{hook}")
    assert hook in [c.name for c in plugins.pm.get_hookcallers(module)]
    registry = next((attr for attr, (name, _) in REGISTRIES.items() if name == hook), None)
    if registry is not None:
        assert [e for e in plugins.registries[registry].entries.values() if e.plugin.name == f"example-{hook}"]
    if hook == "sakura_register_commands":
        group = click.Group()
        plugins.pm.hook.sakura_register_commands(cli=group)
        model = tiny_model_factory(seed=1)
        result = CliRunner().invoke(group, ["size", str(model)])
        assert result.exit_code == 0 and result.output.endswith("MiB\n")
    if hook == "sakura_register_stage_kinds":
        from sakura_core.engine import Engine
        from sakura_core.recipe import load_recipe

        path = write_recipe('[models]\nm = "tiny:llama?layers=1"\n[stages.size]\nkind = "count-params"\nmodel = "m"\n', plugin_files=())
        result = Engine(load_recipe(path, plugins=plugins)).run()
        assert result.ok and result.outcome("size").metrics["parameters"] > 1000


@pytest.mark.parametrize("doc", ["README.md", "docs/recipes.md"])
def test_the_recipe_shown_in_a_doc_is_valid(doc, tmp_path):
    """The recipe a document shows validates as it is (saved beside the demo's data)."""
    from sakura_core.recipe import load_recipe

    text = (DOC.parent.parent / doc).read_text(encoding="utf-8")
    block = re.search(r"```toml\n(name = .*?)```", text, flags=re.S).group(1)
    path = DOC.parent.parent / "recipes" / f".doc-check-{tmp_path.name}.toml"
    try:
        path.write_text(block)
        recipe = load_recipe(path)
    finally:
        path.unlink(missing_ok=True)
    assert list(recipe.stages) == ["merge", "data", "dpo", "publish"]
    assert recipe.stages["dpo"].depends_on == ["merge", "data"]
