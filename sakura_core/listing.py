"""What ``sakura plugins`` shows: every plugin, what it declares and registers, and each entry's options.

A registry that cannot be filled (two plugins registering one name) is listed as a problem, with what to
do about it, instead of failing the command: this is where a user looks to find out.
"""

from __future__ import annotations

from typing import Any

import click

from sakura_core.plugins import Plugins


def plugin_listing(plugins: Plugins, only: str | None = None) -> dict[str, Any]:
    """``{"plugins": [...], "registries": {attr: [entry...]}, "problems": [...]}``, JSON-able."""
    from sakura_core.errors import PluginError, did_you_mean
    from sakura_core.reference import option_rows, options_of

    if only is not None and only not in plugins.infos:
        raise PluginError(f"no plugin {only!r}{did_you_mean(only, plugins.infos)} (loaded: {', '.join(plugins.infos)})")
    described = plugins.describe()
    registries: dict[str, list[dict[str, Any]]] = {}
    for attr, spec in plugins.specs.items():
        if any(p["registry"] == attr for p in described["problems"]):
            continue
        entries = []
        for entry in plugins.registry(attr).entries.values():
            if only is not None and entry.plugin.name != only:
                continue
            impl = entry.implementation
            model = options_of(impl)
            options = [
                {"key": r.key, "type": r.type, "default": r.default, "meaning": r.meaning}
                for r in (option_rows(model)[0] if model is not None else [])
            ]
            entries.append({
                "name": entry.name,
                "plugin": entry.plugin.name,
                "description": impl.summary(),
                "version": getattr(impl, "version", "1"),
                **({"url": impl.url} if getattr(impl, "url", "") else {}),
                **({"citation": impl.citation} if getattr(impl, "citation", "") else {}),
                **({"replaces": entry.replaced.label} if entry.replaced else {}),
                "options": options,
            })
        if entries:
            registries[attr] = entries
    listed = [p for p in described["plugins"] if only is None or p["name"] == only]
    return {"plugins": listed, "registries": registries, "problems": described["problems"],
            "what": {attr: spec.what for attr, spec in plugins.specs.items()}}


def print_listing(listing: dict[str, Any]) -> None:
    for plugin in listing["plugins"]:
        dist = f"  {plugin['distribution']} {plugin['release']}" if plugin["distribution"] else ""
        click.echo(f"{plugin['name']}{dist}  ({plugin['origin']}, code {plugin['code'][:8]})")
        if plugin["declares"]:
            click.echo(f"  declares: {', '.join(plugin['declares'])}")
        click.echo(f"  hooks: {', '.join(plugin['hooks'])}")
        for attr, entries in listing["registries"].items():
            mine = [e for e in entries if e["plugin"] == plugin["name"]]
            if not mine:
                continue
            click.echo(f"  {listing['what'][attr]}s:")
            for entry in mine:
                extra = f" (replaces {entry['replaces']}'s)" if entry.get("replaces") else ""
                click.echo(f"    {entry['name']}: {entry['description']}{extra}".rstrip(": "))
                for option in entry["options"]:
                    meaning = f"  {option['meaning']}" if option["meaning"] else ""
                    default = option["default"].strip("`")
                    default = default if default in ("required", "unset") else f"default {default}"
                    click.echo(f"      {option['key']} ({option['type']}, {default}){meaning}")
    for problem in listing["problems"]:
        click.secho(f"problem: {problem['error']}", fg="red", err=True)
