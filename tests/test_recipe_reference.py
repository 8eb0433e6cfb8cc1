"""docs/recipes.md cannot drift: its reference part is what the code generates, every option of every
registered plugin (nested tables included) is in it with a meaning, and its example recipe validates."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from sakura_core import hookimpl, reference
from sakura_core.plugins import Plugins
from sakura_core.recipe import TOP_LEVEL_DOCS, TOP_LEVEL_KEYS
from sakura_core.options import Options
from sakura_core.stage import StageKind

DOC = reference.DOC


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    return Plugins(entry_points=False)  # built-ins only, as the reference has them


@pytest.fixture(scope="module")
def built(plugins) -> reference.Reference:
    return reference.build(plugins)


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+?)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_recipes_md_is_what_the_code_generates(built):
    text = DOC.read_text(encoding="utf-8")
    wanted = reference.document(text, built.markdown)
    if text != wanted:
        diff = difflib.unified_diff(text.splitlines(), wanted.splitlines(), "docs/recipes.md", "generated", lineterm="", n=1)
        pytest.fail(f"docs/recipes.md is out of date: run `{reference.REGENERATE}`\n" + "\n".join(list(diff)[:40]))


def test_every_option_has_a_meaning(built):
    assert not built.undocumented, (
        "options without a meaning: write a docstring under the field (or Field(description=...)): "
        + ", ".join(built.undocumented)
    )
    assert all(r.type and r.default for r in built.rows)


def test_engine_keys_are_all_described():
    assert set(TOP_LEVEL_DOCS) == set(TOP_LEVEL_KEYS)


# -- an independent walk over the registries: every options model a recipe can reach -----------------------
def models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in models_in(arg)]


def reachable(model: type[BaseModel]) -> list[type[BaseModel]]:
    found, todo = [], [model]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.append(current)
        for info in current.model_fields.values():
            todo += models_in(info.annotation)
    return found


def registered_options(plugins: Plugins) -> list[tuple[str, str, type[BaseModel]]]:
    out = []
    for attr in plugins.specs:
        for entry in plugins.registry(attr).entries.values():
            impl = entry.implementation
            model = getattr(impl, "Options", None)
            if isinstance(model, type) and issubclass(model, BaseModel):
                out.append((attr, entry.name, model))
    return out


def test_every_field_of_every_registered_options_model_is_documented(plugins, built):
    documented = {(row.model, row.field) for row in built.rows if row.model is not None}
    options = registered_options(plugins)
    assert {attr for attr, _, _ in options} >= {"stage_kinds", "model_sources", "merge_methods", "dataset_adapters", "publishers"}
    missing = [
        f"{attr} {name}: {model.__qualname__}.{field}"
        for attr, name, top in options
        for model in reachable(top)
        for field in model.model_fields
        if (model, field) not in documented
    ]
    assert not missing, f"options missing from the reference: {missing}"


def test_nested_option_tables_are_covered(built):
    """lora, launcher, sources entries, merge slices and their sources, models entries, { filter, value }."""
    keys = {row.key for row in built.rows}
    for key in ("lora.r", "lora.quantize", "launcher.num_processes", "sources[].adapter", "sources[].max_rows",
                "sources[].options", "options.system",
                "slices[].sources[].layer_range", "slices[].residual_weight", "models[].parameters", "filter", "value"):
        assert key in keys, key
    text = DOC.read_text(encoding="utf-8")
    for row in built.rows:
        assert f"| `{row.key}` |" in text, row.key


def test_every_registered_plugin_entry_has_a_described_section(plugins):
    parts = sections(DOC.read_text(encoding="utf-8"))
    for spec in plugins.specs.values():
        title = spec.title
        for name in plugins.registry(spec.attr).names():
            body = parts[title].split(f"### `{name}`\n", 1)
            assert len(body) == 2, f"no '### `{name}`' under '## {title}'"
            intro = body[1].lstrip().split("\n", 1)[0]
            assert intro and not intro.startswith("|"), f"{title} {name}: no description before its table"


def test_every_declared_registry_has_a_section(plugins):
    """The core's three registries and every one a plugin declares, discovered, not listed."""
    parts = sections(DOC.read_text(encoding="utf-8"))
    assert list(plugins.specs) == ["model_sources", "stage_kinds", "executors", "merge_methods", "dataset_adapters", "trainers", "evaluators",
                                   "publishers"]
    assert all(spec.title in parts for spec in plugins.specs.values())


def test_a_third_party_plugin_gets_its_own_reference_page():
    """``sakura plugins --reference --plugin NAME``: the same generator, one plugin's entries only."""

    class KarcherOptions(Options):
        max_iter: int = Field(10, ge=1)
        """Most iterations."""

    from sakura_merge import MergeMethod

    class Karcher(MergeMethod):
        """The Karcher mean of the models on the hypersphere."""

        Options = KarcherOptions
        url = "https://example.org/karcher"

    class Plugin:
        @hookimpl
        def sakura_register_merge_methods(self, register):
            register("karcher_native", Karcher())

    plugins = Plugins(entry_points=False)
    plugins.register_object(Plugin(), "karcher-plugin")
    page = reference.build(plugins, plugin="karcher-plugin").markdown
    assert page.startswith("## Merge methods\n")
    assert "### `karcher_native`" in page and "See <https://example.org/karcher>." in page
    assert "| `max_iter` | all models | int ≥ 1 | `10` | Most iterations. |" in page
    assert "## Stages" not in page and "slerp" not in page


def test_a_new_option_or_plugin_without_a_meaning_is_caught():
    class NewOptions(Options):
        """``kind = "new"``: a stage kind a plugin adds."""

        documented: int = Field(3, ge=1)
        """How many, counted in things."""
        bare: str = "x"

    class New(StageKind):
        Options = NewOptions

    class Plugin:
        @hookimpl
        def sakura_register_stage_kinds(self, register):
            register("new", New())

    plugins = Plugins(entry_points=False)
    plugins.register_object(Plugin(), "new-plugin")
    built = reference.build(plugins)
    assert "| `documented` | int ≥ 1 | `3` | How many, counted in things. |" in built.markdown
    assert built.undocumented == [f"{NewOptions.__qualname__}.bare (bare)"]


def test_type_names_read_well():
    assert reference.type_text(int | list[int]) == "int | list[int]"
    assert reference.type_text(Optional[Literal["auto", "cpu", "cuda"]]) == '"auto" | "cpu" | "cuda"'
    assert reference.type_text(dict[str, Any]) == "table"
    assert reference.type_text(Optional[float]) == "float"
    assert reference.type_text(tuple[int, int]) == "[int, int]"
    assert reference.type_text(typing.Union[bool, int, float, str, list[typing.Union[bool, int, float, str]]]) == "scalar | list[scalar]"
