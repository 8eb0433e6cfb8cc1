"""Registries: name -> implementation tables that plugins fill, one per kind of extension.

Every registry has the same shape. Its ``RegistrySpec`` says which hook fills it, which base class its
entries are instances of (the contract), how messages and docs name an entry, and what ``sakura
new-plugin`` writes for it. The core declares three registries (stage kinds, model sources, executors); a
stage-kind plugin declares the ones it needs (merge methods, dataset adapters, trainers, publishers)
from ``sakura_declare_registries``, so the core, the reference generator, ``new-plugin`` and the CLI
discover them instead of listing them.

Every implementation follows one convention, the ``Implementation`` base class: ``Options`` (the pydantic
model that validates what a recipe writes for it), ``version``, ``description``, ``url``, ``citation``,
``check(options, env)`` before any work, and ``run(...)``, whose arguments its registry's contract defines.
The name is the one it was registered under.

This module imports nothing heavy: it runs on every CLI start.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from sakura_core.errors import PluginError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.plugins import PluginInfo

T = TypeVar("T")


class Implementation:
    """What every registered implementation has, whatever its registry.

    Subclasses set the class attributes (or instance attributes, for one class serving several names)
    and implement ``run`` with the arguments their registry's contract gives.
    """

    Options: ClassVar[Any] = None
    """The pydantic model (a ``sakura_core.options.Options`` subclass) that validates what a recipe writes for
    this implementation before any work; None: it takes no options."""
    version: ClassVar[str] = "1"
    """Bump it when the output for the same input changes on purpose; it is part of every fingerprint
    (beside a hash of the plugin's code, which changes on any edit)."""
    description: ClassVar[str] = ""
    """One line for ``sakura plugins``, the reference docs and model cards; unset: the class docstring's
    first line."""
    url: ClassVar[str] = ""
    """Where to read about it (a paper, a repository); shown on model cards of what it made."""
    citation: ClassVar[str] = ""
    """How to cite it (e.g. a BibTeX key or a short reference); shown on model cards of what it made."""
    libraries: ClassVar[tuple[str, ...]] = ()
    """Distributions whose version its results depend on (``("huggingface-hub",)``): recorded in the manifest
    of every stage that uses it, beside the stage kind's own."""

    def check(self, options: Any, env: Any) -> None:
        """Checks that need more than the options model: raise ``OptionError(key, message)``. No I/O, no heavy
        imports: it runs on ``sakura validate``."""

    def summary(self) -> str:
        """``description``, else the first line of the class's own docstring, else of its options model's."""
        if self.description:
            return self.description
        for cls in (type(self), self.Options):
            doc = cls.__dict__.get("__doc__") if isinstance(cls, type) else None
            if doc and doc.strip():
                return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ").replace("``", "`")
        return ""


class Register(Protocol[T]):
    """The callback a registry hook receives: ``register(name, implementation, replace=False)``.

    ``replace=True`` takes over a name another plugin registered (a native merge method replacing the
    mergekit bridge's, say); without it, a name registered twice is an error naming both plugins.
    """

    def __call__(self, name: str, implementation: T, *, replace: bool = False) -> None: ...


@dataclass(frozen=True)
class RegistrySpec(Generic[T]):
    """One registry: how it is filled, what its entries must be, how it is documented and scaffolded."""

    attr: str  # attribute of Plugins: plugins.merge_methods
    what: str  # one entry, in messages: "merge method"
    hookspec: Callable[..., None]  # the hook that fills it (decorated with sakura_core.hookspec)
    contract: str | type  # base class of the entries, or "module:Class" imported when the registry fills
    title: str  # docs section: "Merge methods"
    named_by: str  # how a recipe names an entry: "`merge_method` in a merge stage"
    render: str | None = None  # "module:function(writer, entry)" for the reference docs; None: the default
    scaffold: str | None = None  # "module:attribute" holding a ScaffoldKind, for `sakura new-plugin`
    scaffold_kind: str | None = None  # the word `sakura new-plugin --kind` takes for it

    @property
    def hook(self) -> str:
        return self.hookspec.__name__

    def contract_class(self) -> type:
        return self.contract if isinstance(self.contract, type) else load_object(self.contract)


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    implementation: T
    plugin: PluginInfo
    replaced: PluginInfo | None = None  # the plugin whose registration of this name it took over


@dataclass
class Registry(Generic[T]):
    """Name -> implementation table of one ``RegistrySpec``."""

    spec: RegistrySpec[T]
    entries: dict[str, Entry[T]] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return self.spec.what

    def entry(self, name: str) -> Entry[T]:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise PluginError(f"unknown {self.what} {name!r}{did_you_mean(name, self.entries)} (known: {known})") from None

    def get(self, name: str) -> T:
        return self.entry(name).implementation

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)


@dataclass(frozen=True)
class Registration:
    name: Any
    implementation: Any
    plugin: PluginInfo
    replace: bool


def build_registry(spec: RegistrySpec[T], registrations: list[Registration]) -> Registry[T]:
    """Check every registration against the contract, then settle each name (explicit replacements win)."""
    contract = spec.contract_class()
    if not (isinstance(contract, type) and issubclass(contract, Implementation)):
        raise PluginError(f"registry {spec.attr}: its contract {contract!r} must subclass sakura_core.registry.Implementation")
    by_name: dict[str, list[Registration]] = {}
    for reg in registrations:
        if not isinstance(reg.name, str) or not reg.name:
            raise PluginError(f"plugin {reg.plugin.label} registered a {spec.what} with an invalid name {reg.name!r}")
        check_implementation(spec, contract, reg)
        by_name.setdefault(reg.name, []).append(reg)
    registry: Registry[T] = Registry(spec)
    for name, regs in by_name.items():
        plain = [r for r in regs if not r.replace]
        replacing = [r for r in regs if r.replace]
        if len(plain) > 1:
            raise clash(spec, name, plain[0], plain[1])
        if len(replacing) > 1:
            raise clash(spec, name, replacing[0], replacing[1], both_replace=True)
        winner = (replacing or plain)[0]
        replaced = plain[0].plugin if replacing and plain else None
        registry.entries[name] = Entry(name, winner.implementation, winner.plugin, replaced)
    return registry


def check_implementation(spec: RegistrySpec[Any], contract: type, reg: Registration) -> None:
    """The entry is an instance of the registry's contract and its ``Options`` a sakura options model."""
    from sakura_core.options import Options

    impl = reg.implementation
    where = f"plugin {reg.plugin.label} registered {spec.what} {reg.name!r}"
    if not isinstance(impl, contract):
        got = f"the class {impl.__name__}" if isinstance(impl, type) else f"a {type(impl).__name__}"
        raise PluginError(f"{where} as {got}: it must be an instance of {contract.__module__}.{contract.__qualname__}")
    options = getattr(impl, "Options", None)
    if options is not None and not (isinstance(options, type) and issubclass(options, Options)):
        raise PluginError(f"{where} with Options = {options!r}: it must be a subclass of sakura_core.options.Options")


def clash(spec: RegistrySpec[Any], name: str, first: Registration, second: Registration, both_replace: bool = False) -> PluginError:
    how = "both with replace=True" if both_replace else "without replace=True"
    return PluginError(
        f"{spec.what} {name!r} is registered by both plugin {first.plugin.label} and plugin {second.plugin.label} "
        f"({how}): uninstall one, leave one out with SAKURA_LOAD_PLUGINS, or have one register it with "
        "replace=True to take the name over"
    )


def load_object(path: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported on first use)."""
    module_name, _, attribute = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj
