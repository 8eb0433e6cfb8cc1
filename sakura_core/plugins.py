"""Plugin discovery and the registries plugins fill.

Three places plugins come from, in this order:
1. the built-ins listed in ``BUILTIN_PLUGINS`` (modules under ``plugins/``),
2. installed packages exposing a module through the entry-point group ``sakura``,
3. plugin files a recipe names explicitly (``plugins = ["my_merge.py"]``).

Registries are filled lazily on first use, by calling each plugin's registry hook separately so that
every name is tied to the plugin that registered it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from sakura_core import hookspecs
from sakura_core.errors import PluginError, did_you_mean

ENTRY_POINT_GROUP = "sakura"

# Built-in plugins, registered through the same hooks a third-party plugin uses.
BUILTIN_PLUGINS = (
    "sakura_models.plugin",
    "sakura_merge.plugin",
    "sakura_data.plugin",
    "sakura_trl.plugin",
    "sakura_publish.plugin",
    "sakura_hub.plugin",
)

# registry attribute -> (hook name, what one entry is called in messages)
REGISTRIES = {
    "stage_kinds": ("sakura_register_stage_kinds", "stage kind"),
    "model_sources": ("sakura_register_model_sources", "model source"),
    "merge_methods": ("sakura_register_merge_methods", "merge method"),
    "dataset_adapters": ("sakura_register_dataset_adapters", "dataset adapter"),
    "trainers": ("sakura_register_trainers", "trainer"),
    "publishers": ("sakura_register_publishers", "publisher"),
}


@dataclass(frozen=True)
class PluginInfo:
    """Who a plugin is: its registered name, where it came from, and its version (part of fingerprints)."""

    name: str
    origin: str  # "builtin", "entry point <dist>", or "file <path>"
    version_of: Callable[[], str] = field(repr=False, compare=False)

    @functools.cached_property
    def version(self) -> str:
        # Computed on first use: `sakura validate` never needs one, and a built-in's hashes its code.
        return self.version_of()


@dataclass(frozen=True)
class Entry:
    name: str
    implementation: Any
    plugin: PluginInfo


@dataclass
class Registry:
    """Name -> implementation table for one kind of plugin-provided thing."""

    what: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, name: str, implementation: Any, plugin: PluginInfo) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin.name} registered a {self.what} with an invalid name {name!r}")
        if name in self.entries:
            other = self.entries[name].plugin.name
            raise PluginError(f"{self.what} {name!r} is registered by both plugin {other} and plugin {plugin.name}")
        self.entries[name] = Entry(name, implementation, plugin)

    def entry(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise PluginError(
                f"unknown {self.what} {name!r}{did_you_mean(name, self.entries)} (known: {known})"
            ) from None

    def get(self, name: str) -> Any:
        return self.entry(name).implementation

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)


def builtin_version(module: Any) -> str:
    """sakura's version plus a hash of the plugin package's code, e.g. ``0.1.0+3f2a9c1d``.

    A version is part of every fingerprint; hashing the code means an edited built-in plugin (a fix to
    the merge executor, say) never reuses artifacts its old code made, even before a release.
    """
    from sakura_core import __version__
    from sakura_core.hashing import hash_file, hash_json

    package_dir = Path(module.__file__).parent
    files = sorted(p for p in package_dir.rglob("*") if p.is_file() and p.suffix in (".py", ".json", ".txt", ".jinja"))
    digest = hash_json([[str(p.relative_to(package_dir)), hash_file(p)] for p in files])
    return f"{__version__}+{digest[:8]}"


class Plugins:
    """The plugin manager plus the registries it fills."""

    def __init__(self, *, builtins: bool = True, entry_points: bool = True):
        self.pm = pluggy.PluginManager("sakura")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] | None = None
        if builtins:
            for module_name in BUILTIN_PLUGINS:
                module = _import_plugin(module_name, origin="builtin")
                self._add(module, module_name, "builtin", functools.partial(builtin_version, module))
        if entry_points:
            self._load_entry_points()
        self._check_pending()

    # -- loading -------------------------------------------------------------------------------
    def _add(self, module: Any, name: str, origin: str, version: str | Callable[[], str]) -> None:
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r} ({self.infos[name].origin} and {origin})")
        self.pm.register(module, name=name)
        version_of = version if callable(version) else functools.partial(str, version)
        self.infos[name] = PluginInfo(name, origin, version_of)
        self._registries = None  # refill on next use

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "0"
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, name it
                raise PluginError(
                    f"plugin {ep.name} (from package {dist_name}) failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            self._add(module, ep.name, f"entry point of {dist_name}", version)

    def load_file(self, path: Path) -> None:
        """Load a plugin file a recipe names; its version is its content hash, so edits invalidate caches."""
        path = Path(path).resolve()
        if not path.is_file():
            raise PluginError(f"plugin file {path} does not exist")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        name = f"{path.stem}"
        if self.pm.has_plugin(name) and self.infos[name].origin == f"file {path}":
            return
        module_name = f"sakura_local_plugin_{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001
            del sys.modules[module_name]
            raise PluginError(f"plugin file {path} failed to load: {type(exc).__name__}: {exc}") from exc
        self._add(module, name, f"file {path}", digest)
        self._check_pending()

    def register_object(self, plugin: Any, name: str, version: str = "0") -> None:
        """Register an in-process plugin object (tests, notebooks)."""
        self._add(plugin, name, "in-process", version)
        self._check_pending()

    def _check_pending(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or "?"
            self.pm.unregister(exc.plugin)
            self.infos.pop(name, None)
            raise PluginError(f"plugin {name}: {exc}") from exc

    # -- registries ----------------------------------------------------------------------------
    @property
    def registries(self) -> dict[str, Registry]:
        if self._registries is None:
            self._registries = self._fill_registries()
        return self._registries

    def __getattr__(self, name: str) -> Registry:
        # plugins.merge_methods, plugins.stage_kinds, ...
        if name in REGISTRIES:
            return self.registries[name]
        raise AttributeError(name)

    def _fill_registries(self) -> dict[str, Registry]:
        registries = {attr: Registry(what) for attr, (_, what) in REGISTRIES.items()}
        for attr, (hook_name, _) in REGISTRIES.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                info = self.infos[impl.plugin_name]
                registry = registries[attr]

                def register(name: str, implementation: Any, *, _r=registry, _i=info) -> None:
                    _r.add(name, implementation, _i)

                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise PluginError(
                        f"plugin {info.name} failed in {hook_name}: {type(exc).__name__}: {exc}"
                    ) from exc
        return registries

    def describe(self) -> list[dict[str, Any]]:
        """Every plugin with its version, origin, hooks and what it registered (for ``sakura plugins``)."""
        registered: dict[str, dict[str, list[str]]] = {name: {} for name in self.infos}
        for attr, registry in self.registries.items():
            for entry in registry.entries.values():
                registered[entry.plugin.name].setdefault(attr, []).append(entry.name)
        out = []
        for name, info in self.infos.items():
            plugin = self.pm.get_plugin(name)
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            out.append(
                {
                    "name": name,
                    "version": info.version,
                    "origin": info.origin,
                    "hooks": hooks,
                    "registers": {k: sorted(v) for k, v in registered[name].items()},
                }
            )
        return out


def _import_plugin(module_name: str, origin: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        raise PluginError(f"plugin {module_name} ({origin}) failed to load: {type(exc).__name__}: {exc}") from exc
