"""Plugin discovery, plugin identity (name, distribution, code hash) and the registries plugins fill.

Three places plugins come from, in this order:
1. the built-ins listed in ``BUILTIN_PLUGINS`` (modules under ``plugins/``),
2. installed packages exposing a module through the entry-point group ``sakura`` (all of them, or those
   named in ``SAKURA_LOAD_PLUGINS``),
3. plugin files a recipe names explicitly (``plugins = ["my_merge.py"]``).

Every plugin's version, part of every fingerprint it takes part in, is its distribution's version plus a
hash of the code it runs (its whole top-level package, or its file), however it was installed: editing a
plugin, built in, installed from a wheel, installed editable or beside the recipe, re-runs exactly the
stages that use it.

Registries are declared (the core's two, then each plugin's ``sakura_declare_registries``) and each is
filled on first use by calling every plugin's hook for it, so a name clash in one registry fails only the
commands that need that registry.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from sakura_core import hookspecs
from sakura_core.errors import PluginError, did_you_mean
from sakura_core.registry import Registration, Registry, RegistrySpec, build_registry

ENTRY_POINT_GROUP = "sakura"
LOAD_PLUGINS_ENV = "SAKURA_LOAD_PLUGINS"
DISTRIBUTION = "sakura-recipes"  # the distribution the built-in plugins come with

# Built-in plugins, registered through the same hooks a third-party plugin uses.
BUILTIN_PLUGINS = (
    "sakura_models.plugin",
    "sakura_merge.plugin",
    "sakura_data.plugin",
    "sakura_trl.plugin",
    "sakura_eval.plugin",
    "sakura_publish.plugin",
    "sakura_hub.plugin",
    "sakura_executors.plugin",
)

# Files whose content is a plugin's code (what its code hash covers).
CODE_SUFFIXES = (".py", ".json", ".txt", ".jinja", ".yaml", ".yml", ".toml")


@dataclass(frozen=True)
class PluginInfo:
    """Who a plugin is: its name, where it came from, its distribution and the code that it runs."""

    name: str
    origin: str  # "builtin", "entry point of <dist>", "file <path>", "in-process"
    distribution: str | None  # the pip distribution ("sakura-recipes"); None for a file or in-process object
    release: str  # the distribution's version; a file's is "file"
    code_paths: tuple[Path, ...] = field(default=(), repr=False, compare=False)

    @functools.cached_property
    def code_hash(self) -> str:
        """sha256 over the plugin's code files (names and contents); computed on first use."""
        return code_hash(self.code_paths)

    @property
    def version(self) -> str:
        """``release+codehash``: what fingerprints record (computed on first use: validate never needs it)."""
        return f"{self.release}+{self.code_hash[:8]}"

    @property
    def label(self) -> str:
        """``name (distribution release)`` or ``name (file path)``, for messages."""
        if self.distribution:
            return f"{self.name} ({self.distribution} {self.release})"
        return f"{self.name} ({self.origin})"

    def lineage(self) -> dict[str, Any]:
        """What manifests, lineage files and model cards record of the plugin."""
        return {"name": self.name, "distribution": self.distribution, "version": self.release, "code": self.code_hash,
                "origin": self.origin}


def code_hash(paths: tuple[Path, ...]) -> str:
    from sakura_core.hashing import hash_file, hash_json

    entries = []
    for root in paths:
        root = Path(root)
        if root.is_file():
            entries.append([root.name, hash_file(root)])
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix in CODE_SUFFIXES and "__pycache__" not in path.parts and path.is_file():
                entries.append([str(path.relative_to(root)), hash_file(path)])
    return hash_json(entries) if entries else "0" * 32


def module_code_paths(module_name: str) -> tuple[Path, ...]:
    """The code a module belongs to: its top-level package's directories, or the module's own file."""
    top = importlib.import_module(module_name.split(".")[0])
    package_paths = getattr(top, "__path__", None)
    if package_paths:
        return tuple(Path(p) for p in package_paths)
    file = getattr(top, "__file__", None)
    return (Path(file),) if file else ()


class Plugins:
    """The plugin manager, the plugins' identities and the registries they fill."""

    def __init__(self, *, builtins: bool = True, entry_points: bool = True):
        self.pm = pluggy.PluginManager("sakura")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.specs: dict[str, RegistrySpec[Any]] = {}
        self.declared_by: dict[str, str] = {}  # registry attr -> plugin name ("sakura_core" for the core's)
        self._registries: dict[str, Registry[Any]] = {}
        for spec in hookspecs.CORE_REGISTRIES:
            self.specs[spec.attr] = spec
            self.declared_by[spec.attr] = "sakura_core"
        if builtins:
            from sakura_core import __version__

            for module_name in BUILTIN_PLUGINS:
                module = _import_plugin(module_name, origin="builtin")
                self._add(module, module_name, PluginInfo(module_name, "builtin", DISTRIBUTION, __version__,
                                                          module_code_paths(module_name)))
        if entry_points:
            self._load_entry_points()
        self._declare(list(self.infos))
        self._check_pending()

    # -- loading -------------------------------------------------------------------------------
    def _add(self, plugin: Any, name: str, info: PluginInfo) -> None:
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r} ({self.infos[name].origin} and {info.origin})")
        self.pm.register(plugin, name=name)
        self.infos[name] = info
        self._registries.clear()  # refill on next use

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        found = list(entry_points(group=ENTRY_POINT_GROUP))
        wanted = _wanted_plugins()
        if wanted is not None:
            unknown = sorted(w for w in wanted if not any(_names(ep, w) for ep in found))
            if unknown:
                installed = ", ".join(sorted({ep.name for ep in found})) or "none"
                raise PluginError(
                    f"{LOAD_PLUGINS_ENV} names {', '.join(unknown)}, which no installed plugin is called "
                    f"(installed: {installed})"
                )
            found = [ep for ep in found if any(_names(ep, w) for w in wanted)]
        for ep in found:
            dist_name = _dist_name(ep)
            version = ep.dist.version if ep.dist is not None else "0"
            try:
                module = ep.load()
                paths = module_code_paths(ep.module)
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, name it
                raise PluginError(
                    f"plugin {ep.name} (from package {dist_name}) failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            self._add(module, ep.name, PluginInfo(ep.name, f"entry point of {dist_name}", dist_name, version, paths))

    def load_file(self, path: Path) -> None:
        """Load a plugin file a recipe names; its code hash is the file's, so edits invalidate caches."""
        path = Path(path).resolve()
        if not path.is_file():
            raise PluginError(f"plugin file {path} does not exist")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        name = path.stem
        if self.pm.has_plugin(name) and self.infos[name].origin == f"file {path}":
            return
        module_name = f"sakura_local_plugin_{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin's sys.exit must not end sakura silently
            del sys.modules[module_name]
            raise PluginError(f"plugin file {path} failed to load: {_load_failure(exc)}") from exc
        self._add(module, name, PluginInfo(name, f"file {path}", None, "file", (path,)))
        self._declare([name])
        self._check_pending()

    def register_object(self, plugin: Any, name: str, version: str = "0") -> None:
        """Register an in-process plugin object (tests, notebooks); its code hash covers its source file."""
        self._add(plugin, name, PluginInfo(name, "in-process", None, version, _source_file(plugin)))
        self._declare([name])
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
    def _declare(self, plugin_names: list[str]) -> None:
        """Add the registries (and their hooks) that these plugins declare."""
        for impl in self.pm.hook.sakura_declare_registries.get_hookimpls():
            if impl.plugin_name not in plugin_names:
                continue
            info = self.infos[impl.plugin_name]
            try:
                impl.function(declare=functools.partial(self._add_spec, plugin=info))
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise PluginError(f"plugin {info.label} failed in sakura_declare_registries: {type(exc).__name__}: {exc}") from exc

    def _add_spec(self, spec: RegistrySpec[Any], *, plugin: PluginInfo) -> None:
        if not isinstance(spec, RegistrySpec):
            raise PluginError(f"plugin {plugin.label} declared {spec!r}: declare a sakura_core.registry.RegistrySpec")
        if spec.attr in self.specs or hasattr(type(self), spec.attr):
            owner = self.declared_by.get(spec.attr, "sakura_core")
            raise PluginError(f"plugin {plugin.label} declares registry {spec.attr!r}, which {owner} already declares")
        if self.pm.parse_hookspec_opts(types.SimpleNamespace(**{spec.hook: spec.hookspec}), spec.hook) is None:
            raise PluginError(f"plugin {plugin.label}: the hook of registry {spec.attr!r} is not marked with sakura_core.hookspec")
        self.pm.add_hookspecs(types.SimpleNamespace(**{spec.hook: spec.hookspec}))
        self.specs[spec.attr] = spec
        self.declared_by[spec.attr] = plugin.name

    def registry(self, attr: str) -> Registry[Any]:
        """The registry ``attr`` (``merge_methods``, ...), filled on first use."""
        if attr not in self.specs:
            raise PluginError(f"no registry {attr!r}{did_you_mean(attr, self.specs)} (declared: {', '.join(self.specs)})")
        if attr not in self._registries:
            self._registries[attr] = self._fill(self.specs[attr])
        return self._registries[attr]

    def __getattr__(self, name: str) -> Registry[Any]:
        # plugins.merge_methods, plugins.stage_kinds, ...
        specs = self.__dict__.get("specs", {})
        if name in specs:
            return self.registry(name)
        raise AttributeError(name)

    def _fill(self, spec: RegistrySpec[Any]) -> Registry[Any]:
        registrations: list[Registration] = []
        for impl in getattr(self.pm.hook, spec.hook).get_hookimpls():
            info = self.infos[impl.plugin_name]

            def register(name: str, implementation: Any, *, replace: bool = False, _info: PluginInfo = info) -> None:
                registrations.append(Registration(name, implementation, _info, bool(replace)))

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise PluginError(f"plugin {info.label} failed in {spec.hook}: {type(exc).__name__}: {exc}") from exc
        return build_registry(spec, registrations)

    def entry_plugin(self, attr: str, name: str) -> PluginInfo:
        return self.registry(attr).entry(name).plugin

    def blame(self, exc: BaseException) -> PluginInfo | None:
        """The plugin whose code raised ``exc``: the innermost frame of its traceback in a plugin's code."""
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        roots = [(Path(root).resolve(), info) for info in self.infos.values() for root in info.code_paths]
        for frame in reversed(frames):
            path = Path(frame.filename).resolve()
            for root, info in roots:
                if path == root or root in path.parents:
                    return info
        return None

    def describe(self) -> dict[str, Any]:
        """Every plugin with its identity, hooks and what it registered, plus every registry that cannot be
        filled (for ``sakura plugins``: a clash is shown, not fatal)."""
        registered: dict[str, dict[str, list[str]]] = {name: {} for name in self.infos}
        problems = []
        for attr in self.specs:
            try:
                registry = self.registry(attr)
            except PluginError as exc:
                problems.append({"registry": attr, "error": str(exc)})
                continue
            for entry in registry.entries.values():
                registered[entry.plugin.name].setdefault(attr, []).append(entry.name)
        plugins = []
        for name, info in self.infos.items():
            plugin = self.pm.get_plugin(name)
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            plugins.append({
                "name": name, "version": info.version, "distribution": info.distribution, "release": info.release,
                "code": info.code_hash, "origin": info.origin, "hooks": hooks,
                "declares": [attr for attr, owner in self.declared_by.items() if owner == name],
                "registers": {k: sorted(v) for k, v in registered[name].items()},
            })
        return {"plugins": plugins, "problems": problems}


def _dist_name(ep: Any) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "?"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(ep: Any, wanted: str) -> bool:
    """Whether ``wanted`` names this entry point: by plugin name, or by its distribution's name."""
    return wanted == ep.name or _normalize(wanted) == _normalize(_dist_name(ep))


def _wanted_plugins() -> set[str] | None:
    """``SAKURA_LOAD_PLUGINS``: None when unset (load every installed plugin), else the names it lists."""
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _source_file(plugin: Any) -> tuple[Path, ...]:
    import inspect

    try:
        file = inspect.getsourcefile(plugin if isinstance(plugin, types.ModuleType) else type(plugin))
    except TypeError:
        file = None
    return (Path(file),) if file else ()


def _import_plugin(module_name: str, origin: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin's sys.exit must not end sakura silently
        raise PluginError(f"plugin {module_name} ({origin}) failed to load: {_load_failure(exc)}") from exc


def _load_failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) while being imported"
    return f"{type(exc).__name__}: {exc}"

