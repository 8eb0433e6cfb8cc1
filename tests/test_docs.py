"""docs/hooks.md cannot drift: every hook has a heading (the core's and every declared registry's), every
public field of every contract class is named where its hook is documented, and every example runs."""

from __future__ import annotations

import re
import types
from pathlib import Path

import click
from click.testing import CliRunner
import pytest

from sakura_core import hookspecs
from sakura_core.plugins import Plugins

DOC = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"
CORE_HOOKS = [name for name in dir(hookspecs) if name.startswith("sakura_")]
HOOKS = sorted(CORE_HOOKS + [spec.hook for spec in Plugins(entry_points=False).specs.values() if spec.hook not in CORE_HOOKS])


def sections() -> dict[str, str]:
    """``{hook: its section}``, and the text before the first hook under ``""``."""
    text = DOC.read_text()
    parts = re.split(r"^## (sakura_\S+)\s*$", text, flags=re.M)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2]))}


def test_every_hook_has_a_section_and_nothing_else_does():
    assert sorted(sections())[1:] == HOOKS


def public_names(cls: type) -> set[str]:
    """What an implementation author can set, call or read on a contract class."""
    import dataclasses

    names = {name for name in vars(cls) if not name.startswith("_") and name not in ("model_config",)}
    names |= set(getattr(cls, "__annotations__", {}))
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return {n for n in names if not n.startswith("_")}


def contract_classes() -> dict[str, list[type]]:
    from sakura_core.registry import Implementation, RegistrySpec
    from sakura_core.executor import Executor, StageJob, Work
    from sakura_core.stage import CheckEnv, InputArtifact, ModelSource, SourceEnv, StageContext, StageInfo, StageKind, StageOutcome
    from sakura_data.contract import Adapter
    from sakura_eval.contract import EvalJob, EvalResult, Evaluator
    from sakura_merge.contract import MergeCall, MergeMethod
    from sakura_publish.publisher import Bundle, Publisher, PublishEnv
    from sakura_trl.contract import Trainer, TrainJob

    return {
        "": [Implementation],
        "sakura_declare_registries": [RegistrySpec],
        "sakura_register_stage_kinds": [StageKind, StageContext, CheckEnv, InputArtifact],
        "sakura_register_model_sources": [ModelSource, SourceEnv],
        "sakura_register_merge_methods": [MergeMethod, MergeCall],
        "sakura_register_dataset_adapters": [Adapter],
        "sakura_register_trainers": [Trainer, TrainJob],
        "sakura_register_publishers": [Publisher, Bundle, PublishEnv],
        "sakura_register_evaluators": [Evaluator, EvalJob, EvalResult],
        "sakura_register_executors": [Executor, Work, StageJob],
        "sakura_before_stage": [StageInfo],
        "sakura_after_stage": [StageOutcome],
    }


@pytest.mark.parametrize("hook", list(contract_classes()))
def test_every_field_an_implementation_can_use_is_documented(hook):
    text = sections()[hook]
    for cls in contract_classes()[hook]:
        missing = sorted(n for n in public_names(cls) if f"`{n}`" not in text and f"`{n}(" not in text)
        assert not missing, f"docs/hooks.md, section {hook or 'intro'}: {cls.__name__} fields not documented: {missing}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_example_runs(hook, write_recipe, tiny_model_factory):
    blocks = re.findall(r"```python\n(.*?)```", sections()[hook], flags=re.S)
    assert blocks, f"{hook} has no python example"
    module = types.ModuleType(f"doc_example_{hook}")
    exec(compile(blocks[0], f"docs/hooks.md#{hook}", "exec"), module.__dict__)
    plugins = Plugins(entry_points=False)
    plugins.register_object(module, f"example-{hook}")
    assert hook in [c.name for c in plugins.pm.get_hookcallers(module)]
    registry = next((spec.attr for spec in plugins.specs.values() if spec.hook == hook), None)
    if registry is not None:
        assert [e for e in plugins.registry(registry).entries.values() if e.plugin.name == f"example-{hook}"]
    if hook == "sakura_declare_registries":
        assert plugins.greeters.get("polite").run("Ada") == "Good day, Ada."
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
