"""``sakura new-plugin NAME --kind KIND``: write a plugin package that installs and passes its tests as written.

The package is what a third-party plugin looks like (see ``examples/``): a ``pyproject.toml`` exposing the
package's ``plugin`` module through the entry-point group ``sakura``, one working implementation of the kind
registered from its hook, a README, and tests that run it through sakura's engine on tiny generated models.
The kinds are discovered: every registry whose spec names a scaffold (``RegistrySpec.scaffold_kind``). The
common texts are in ``sakura_core.scaffold_templates``, each kind's in the plugin that declares it.

Everything is checked before anything is written, and the package is written into a hidden folder beside
the target and renamed into place: a mistake leaves nothing behind, and a finished package is complete.
This module is imported by the CLI command only, and imports nothing heavy.
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sakura_core.errors import SakuraError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.plugins import Plugins
    from sakura_core.registry import RegistrySpec

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_NAME = 64


class ScaffoldError(SakuraError):
    """``new-plugin`` was asked for something it cannot write; nothing was written."""

    exit_code = 2


@dataclass(frozen=True)
class Names:
    """Every name a package is known by, derived from the NAME the user gave."""

    dist: str  # the distribution (pip) name and the folder: my-merge
    module: str  # the import name: my_merge
    entry: str  # the plugin's name in `sakura plugins` (the entry-point name), "sakura_" prefix dropped
    registered: str  # what recipes write (merge_method = "...", adapter = "..."): the same as entry
    camel: str  # prefix of the generated class names: MyMerge


def names_for(name: str) -> Names:
    if len(name) > MAX_NAME or not NAME_PATTERN.match(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lowercase letters and digits, starting with a letter, "
            f"words joined by single - or _ (e.g. my-merge), at most {MAX_NAME} characters"
        )
    module = name.replace("-", "_")
    short = module[len("sakura_"):] if module.startswith("sakura_") else module
    if keyword.iskeyword(module) or keyword.iskeyword(short) or short == "sakura":
        raise ScaffoldError(f"invalid plugin name {name!r}: {short!r} is reserved; choose another name")
    camel = "".join(part.capitalize() for part in short.split("_"))
    return Names(dist=name, module=module, entry=short, registered=short, camel=camel)


def kinds(plugins: Plugins) -> dict[str, RegistrySpec[Any]]:
    """``--kind`` word -> the registry spec that scaffolds it."""
    return {spec.scaffold_kind: spec for spec in plugins.specs.values() if spec.scaffold_kind and spec.scaffold}


def spec_for(kind: str, plugins: Plugins) -> RegistrySpec[Any]:
    found = kinds(plugins)
    if kind not in found:
        raise ScaffoldError(f"unknown kind {kind!r}{did_you_mean(kind, found)} (one of {', '.join(found)})")
    return found[kind]


def check_free(names: Names, spec: RegistrySpec[Any], plugins: Plugins) -> None:
    """The names must not clash with a module already importable, a plugin already installed or a built-in."""
    import importlib.util
    from importlib.metadata import entry_points

    from sakura_core.plugins import ENTRY_POINT_GROUP

    try:
        found = importlib.util.find_spec(names.module)
    except (ImportError, ValueError):
        found = None
    if found is not None:
        where = f" ({found.origin})" if found.origin else ""
        raise ScaffoldError(f"a module named {names.module} is already importable{where}; choose another name")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == names.entry:
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "?"
            raise ScaffoldError(f"package {dist} already installs a sakura plugin named {names.entry}; choose another name")
    registry = plugins.registry(spec.attr)
    if names.registered in registry:
        owner = registry.entry(names.registered).plugin.name
        raise ScaffoldError(f"{registry.what} {names.registered!r} already exists (plugin {owner}); choose another name")


def render(kind: str, names: Names, plugins: Plugins) -> dict[str, str]:
    """The package's files: relative path -> text."""
    from sakura_core import scaffold_templates as t
    from sakura_core.registry import load_object

    spec = spec_for(kind, plugins)
    assert spec.scaffold is not None
    return t.render(load_object(spec.scaffold), kind, spec.attr, names)


def new_plugin(name: str, kind: str, parent: Path | str = ".", plugins: Plugins | None = None) -> Path:
    """Write the package ``parent/NAME``; return its path. Raises ``ScaffoldError`` having written nothing."""
    from sakura_core.plugins import Plugins

    plugins = plugins or Plugins()
    spec = spec_for(kind, plugins)
    names = names_for(name)
    parent = Path(parent).expanduser()
    target = parent / names.dist
    if parent.exists() and not parent.is_dir():
        raise ScaffoldError(f"{parent} is not a directory")
    if os.path.lexists(target):
        raise ScaffoldError(f"{target} already exists; choose another name or --dir")
    check_free(names, spec, plugins)
    files = render(kind, names, plugins)

    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{names.dist}.{uuid.uuid4().hex[:8]}.partial"
    try:
        for relative, text in files.items():
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if os.path.lexists(target):  # appeared while we wrote
            raise ScaffoldError(f"{target} already exists; choose another name or --dir")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def next_steps(target: Path, name: str, kind: str, plugins: Plugins) -> str:
    """What ``new-plugin`` prints: what was written and how to install and test it."""
    names = names_for(name)
    what = spec_for(kind, plugins).what
    relative = os.path.relpath(target)
    where = relative if not relative.startswith("..") else str(target)
    return (
        f"wrote {where}/: plugin {names.entry}, registering the {what} {names.registered!r}\n"
        f"  pip install -e '{where}[test]' && pytest {where}/tests"
    )
