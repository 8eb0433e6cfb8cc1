"""The recipe reference, docs/recipes.md: every recipe key with its type, default and meaning.

The reference part of that file is generated from the code, so it cannot drift: the top-level keys from
``sakura_core.recipe``, then every registry the plugins declare (model sources and stage kinds, then the
stage kinds' own: merge methods, dataset adapters, trainers, publishers, ...) with every entry the built-in
plugins register and the fields of its pydantic options model (nested tables included). A registry's spec
names how its entries are rendered (``RegistrySpec.render``); the default is the entry's description and
its options table. A field's meaning is its ``Field(description=...)`` or the docstring right under it::

    class MyOptions(Options):
        path: str
        \"\"\"Where the data is, relative to the recipe's directory.\"\"\"

The docstrings are read from the source here, not through pydantic's ``use_attribute_docstrings``, which
would parse every options class's source on each CLI start.

    python -m sakura_core.reference --write   # rewrite the generated part of docs/recipes.md
    python -m sakura_core.reference --check   # exit 1 when docs/recipes.md is stale
    python -m sakura_core.reference           # print the generated part
    sakura plugins --reference --plugin NAME  # the same reference for one plugin's entries (third parties)
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sakura_core.plugins import Plugins
from sakura_core.registry import Entry, load_object

DOC = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"
BEGIN = "<!-- BEGIN GENERATED: python -m sakura_core.reference --write (edit the code's docstrings, not this part) -->"
END = "<!-- END GENERATED -->"
REGENERATE = "python -m sakura_core.reference --write"



@dataclass
class Row:
    """One documented key: ``model`` and ``field`` are the options model and field name it comes from (None
    for the engine's own keys)."""

    key: str
    type: str
    default: str
    meaning: str
    model: type | None = None
    field: str | None = None


@dataclass
class Reference:
    markdown: str
    rows: list[Row] = field(default_factory=list)

    @property
    def undocumented(self) -> list[str]:
        """Keys without a meaning, as ``Model.field (key)``."""
        return [f"{getattr(r.model, '__qualname__', '?')}.{r.field} ({r.key})" for r in self.rows if not r.meaning]


# -- meanings ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def attribute_docstrings(cls: type) -> dict[str, str]:
    """``{attribute: docstring}`` for the string literals right under a class's attribute assignments."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not file or "<locals>" in cls.__qualname__:  # built with create_model, defined in a function: no source
        return _docstrings_in_source(cls)
    return _module_docstrings(file).get(cls.__qualname__, {})


@functools.lru_cache(maxsize=None)
def _module_docstrings(file: str) -> dict[str, dict[str, str]]:
    """Every class of a module, by qualified name -> its attribute docstrings; one parse per file (much
    cheaper than ``inspect.getsource`` per class, which rescans the file each time)."""
    try:
        tree = ast.parse(Path(file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    found: dict[str, dict[str, str]] = {}

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                found[prefix + node.name] = _class_docstrings(node.body)
                walk(node.body, f"{prefix}{node.name}.")

    walk(tree.body, "")
    return found


def _docstrings_in_source(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    return _class_docstrings(next((node.body for node in tree.body if isinstance(node, ast.ClassDef)), []))


def _class_docstrings(body: list[ast.stmt]) -> dict[str, str]:
    docs = {}
    for stmt, after in zip(body, body[1:]):
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else (
            stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None)
        if (isinstance(target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[target.id] = after.value.value
    return docs


def field_meaning(model: type[BaseModel], name: str) -> str:
    """A field's description, else the docstring under it in its class or the nearest base that has one."""
    info = model.model_fields[name]
    if info.description:
        return prose(info.description)
    for cls in model.__mro__:
        doc = attribute_docstrings(cls).get(name) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if doc:
            return prose(doc)
    return ""


def own_doc(obj: Any) -> str:
    """A class's own docstring (not an inherited one), as markdown paragraphs."""
    cls = obj if isinstance(obj, type) else type(obj)
    doc = cls.__dict__.get("__doc__")
    return prose(inspect.cleandoc(doc), paragraphs=True) if isinstance(doc, str) else ""


def sentence(text: str) -> str:
    """A one-line description as a sentence: capitalized, with a final period."""
    text = prose(text)
    return (text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def prose(text: str, paragraphs: bool = False) -> str:
    """Docstring text as one markdown line (or paragraphs), reST's double backticks made single."""
    text = inspect.cleandoc(text).replace("``", "`")
    parts = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n\n".join(parts) if paragraphs else " ".join(parts)


# -- types and defaults --------------------------------------------------------------------------------
SCALAR_WORDS = {bool: "bool", int: "int", float: "float", str: "string"}


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def type_text(tp: Any) -> str:
    """A type as a recipe writer reads it: ``float``, ``int | list[int]``, ``"auto" | "cpu"``, ``table``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any"
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        words = []
        if set(SCALAR_WORDS) <= set(members):
            words.append("scalar")
            members = [m for m in members if m not in SCALAR_WORDS]
        words += [type_text(m) for m in members]
        return " | ".join(dict.fromkeys(words))
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return "list of tables" if is_model(args[0]) else f"list[{type_text(args[0])}]"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin is dict or tp is dict or is_model(tp):
        return "table"
    if tp is list:
        return "list"
    if tp in SCALAR_WORDS:
        return SCALAR_WORDS[tp]
    return getattr(tp, "__name__", str(tp))


def field_type(info: FieldInfo) -> str:
    """The field's type plus its bounds: ``int ≥ 1``, ``float in [0, 1)``, ``list of tables (at least 1)``."""
    text = type_text(info.annotation)
    low = high = None
    min_len = None
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            low = ("[", "≥", m.ge)
        elif isinstance(m, annotated_types.Gt):
            low = ("(", ">", m.gt)
        elif isinstance(m, annotated_types.Le):
            high = ("]", "≤", m.le)
        elif isinstance(m, annotated_types.Lt):
            high = (")", "<", m.lt)
        elif isinstance(m, annotated_types.MinLen):
            min_len = m.min_length
    if low and high:
        text += f" in {low[0]}{_number(low[2])}, {_number(high[2])}{high[0]}"
    elif low or high:
        bound = low or high
        text += f" {bound[1]} {_number(bound[2])}"
    if min_len:
        text += f" (at least {min_len})"
    return text


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def toml_text(value: Any, limit: int = 40) -> str:
    """A default value as TOML: ``true``, ``"5GB"``, ``[]``, ``{}`` (long strings shortened)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value) if len(value) <= limit else json.dumps(value[: limit - 10])[:-1] + '…"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_text(v, limit) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_text(v, limit)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, BaseModel):
        return toml_text(value.model_dump(), limit)
    return repr(value)


def field_default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    return "unset" if value is None else f"`{toml_text(value)}`"


# -- options models as rows ----------------------------------------------------------------------------
def nested_models(tp: Any, path: str = "") -> list[tuple[str, type[BaseModel]]]:
    """``[(path suffix, model)]`` for the options models inside a field's type: ``""`` for a table,
    ``"[]"`` for a list of tables, ``".NAME"`` for the values of a table with free keys."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if is_model(tp):
        return [(path, tp)]
    if origin is typing.Annotated:
        return nested_models(args[0], path)
    if origin in (typing.Union, types.UnionType):
        return [found for a in args for found in nested_models(a, path)]
    if origin in (list, tuple):
        return [found for a in args if a is not Ellipsis for found in nested_models(a, path + "[]")]
    if origin is dict:
        return nested_models(args[1], path + ".NAME")
    return []


def option_rows(model: type[BaseModel], prefix: str = "", seen: tuple[type, ...] = ()) -> tuple[list[Row], dict]:
    """The rows of a model's fields, nested tables and lists of tables flattened (``lora.r``,
    ``sources[].path``); models found as values of free-key tables come back separately, as
    ``{model: [the keys they are found under]}``."""
    rows: list[Row] = []
    separate: dict[type[BaseModel], list[str]] = {}
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        rows.append(Row(key, field_type(info), field_default(info), field_meaning(model, name), model, name))
        found: dict[type[BaseModel], str] = {}
        for suffix, inner in nested_models(info.annotation):
            found.setdefault(inner, suffix)
        for inner, suffix in found.items():
            if inner in seen or inner is model:
                continue
            if ".NAME" in suffix:
                separate.setdefault(inner, []).append(key)
                continue
            inner_rows, inner_separate = option_rows(inner, f"{key}{suffix}.", seen + (model,))
            rows += inner_rows
            for m, keys in inner_separate.items():
                separate.setdefault(m, []).extend(keys)
    return rows, separate


def options_of(implementation: Any) -> type[BaseModel] | None:
    """The options model of a registered implementation (``Options``, or a merge method's ``options``)."""
    found = getattr(implementation, "Options", None) or getattr(implementation, "options", None)
    return found if is_model(found) else None


# -- markdown ------------------------------------------------------------------------------------------
def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class Writer:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.rows: list[Row] = []

    def add(self, *texts: str) -> None:
        self.parts += [t for t in texts if t]

    def options(self, model: type[BaseModel], prefix: str = "") -> None:
        """A table of a model's keys, then one per model found in free-key tables."""
        rows, separate = option_rows(model, prefix)
        if not rows:
            self.add("No options.\n")
            return
        self.keys(rows)
        for inner, keys in separate.items():
            where = ", ".join(f"`{k}`" for k in dict.fromkeys(keys))
            self.add(f"Tables in the values of {where}: {own_doc(inner)}\n")
            self.keys(option_rows(inner)[0])

    def engine_keys(self, docs: dict[str, tuple[str, str, str]]) -> None:
        self.keys([Row(key, type_, default, meaning) for key, (type_, default, meaning) in docs.items()])

    def keys(self, rows: list[Row]) -> None:
        self.rows += rows
        self.add(table(["key", "type", "default", "meaning"], [[f"`{r.key}`", r.type, r.default, r.meaning] for r in rows]))

    def text(self) -> str:
        return "\n".join(self.parts)


def build(plugins: Plugins | None = None, plugin: str | None = None) -> Reference:
    """The generated part of docs/recipes.md, from the built-in plugins (entry points are left out).

    With ``plugin``, only the entries that plugin registers (a third-party package's own reference page).
    """
    from sakura_core import recipe

    plugins = plugins or Plugins(entry_points=False)
    if plugin is not None and plugin not in plugins.infos:
        from sakura_core.errors import PluginError, did_you_mean

        raise PluginError(f"no plugin {plugin!r}{did_you_mean(plugin, plugins.infos)} (loaded: {', '.join(plugins.infos)})")
    w = Writer()
    engine = plugin is None
    engine_keys = _engine_keys()
    if engine:
        w.add("## Top-level keys\n")
        if set(recipe.TOP_LEVEL_DOCS) != set(recipe.TOP_LEVEL_KEYS):
            raise RuntimeError("sakura_core.recipe.TOP_LEVEL_DOCS must describe exactly the keys of TOP_LEVEL_KEYS")
        w.engine_keys(recipe.TOP_LEVEL_DOCS)
    for spec in plugins.specs.values():
        entries = [e for e in plugins.registry(spec.attr).entries.values() if plugin is None or e.plugin.name == plugin]
        if not entries and not engine:
            continue
        w.add(f"## {spec.title}\n", f"Named by {spec.named_by}.\n")
        if engine and spec.attr in engine_keys:
            intro, docs = engine_keys[spec.attr]
            w.add(intro)
            w.engine_keys(docs)
        render = load_object(spec.render) if spec.render else render_entry
        for entry in entries:
            w.add(f"### `{entry.name}`\n")
            render(w, entry)
    return Reference(markdown=w.text(), rows=w.rows)


def _engine_keys() -> dict[str, tuple[str, dict[str, tuple[str, str, str]]]]:
    from sakura_core import recipe

    return {
        "model_sources": (
            "Each entry of `[models]` is a shorthand string, whose form picks the source (`tiny:...`, a path, "
            "else a Hub id), or a table with a `source` key and that source's keys.\n",
            recipe.MODEL_KEY_DOCS,
        ),
        "stage_kinds": (
            "Keys every `[stages.NAME]` table has; the others are its kind's options, listed below.\n",
            recipe.STAGE_KEY_DOCS,
        ),
    }


def render_entry(w: Writer, entry: Entry[Any]) -> None:
    """The default rendering of a registry entry: its description, then its options table."""
    model = options_of(entry.implementation)
    text = own_doc(model) if model is not None and own_doc(model) else sentence(entry.implementation.summary())
    w.add(text + "\n" if text else "")
    credit = credits(entry)
    if credit:
        w.add(credit + "\n")
    if model is not None:
        w.options(model)


def credits(entry: Entry[Any]) -> str:
    """``See: URL. Cite: ...`` when the implementation gives them."""
    impl = entry.implementation
    parts = []
    if getattr(impl, "url", ""):
        parts.append(f"See <{impl.url}>.")
    if getattr(impl, "citation", ""):
        parts.append(f"Cite: {prose(impl.citation)}")
    return " ".join(parts)


# -- the file --------------------------------------------------------------------------------------------
def document(text: str, generated: str) -> str:
    """``text`` (docs/recipes.md) with the part between the markers replaced by ``generated``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"docs/recipes.md lacks the markers {BEGIN!r} ... {END!r}")
    return text[: start + len(BEGIN)] + "\n\n" + generated.rstrip("\n") + "\n\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    generated = build().markdown
    if not args:
        sys.stdout.write(generated)
        return 0
    if args[0] not in ("--write", "--check") or len(args) > 2:
        sys.stderr.write("usage: python -m sakura_core.reference [--write | --check] [docs/recipes.md]\n")
        return 2
    path = Path(args[1]) if len(args) > 1 else DOC
    current = path.read_text(encoding="utf-8")
    wanted = document(current, generated)
    if args[0] == "--check":
        if current != wanted:
            sys.stderr.write(f"{path} is out of date: run {REGENERATE}\n")
            return 1
        return 0
    if current != wanted:
        path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
