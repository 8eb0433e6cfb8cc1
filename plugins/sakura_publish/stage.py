"""The ``publish`` stage kind: a model artifact + a model card + its lineage, handed to a publisher.

Recipe table: ``kind = "publish"``, ``publisher = "local" | "hub" | ...``, ``model = "<stage or model>"``,
optional card settings (``license``, ``tags``, ``description``), then the publisher's own keys flat in the
same table (``path`` for local; ``repo_id``, ``private``, ``revision``, ``create_pr`` for hub), validated
by the publisher's own options model.

The stage's artifact holds what was published besides the weights (README.md, sakura-lineage.json,
sakura-recipe.toml) and ``published.json``: where it went (path, or repo url and commit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from sakura_core.errors import OptionError, StageError, did_you_mean
from sakura_core.options import validate_options
from sakura_core.options import Options
from sakura_core.stage import CheckEnv, StageContext, StageKind
from sakura_publish.publisher import (
    CARD_FILE,
    LINEAGE_FILE,
    RECIPE_FILE,
    RECORD_FILE,
    Bundle,
    Publisher,
    PublishEnv,
    model_files,
)

LINEAGE_FORMAT = "sakura-lineage/1"
ADAPTER_DIR = "adapter"  # where a train stage keeps its LoRA adapter
ADAPTER_CONFIG = "adapter_config.json"


class PublishOptions(Options):
    """``kind = "publish"``: hands a model to a publisher together with a model card (``README.md``), its
    lineage (``sakura-lineage.json``) and a copy of the recipe; the publisher's own keys sit flat in the same
    table."""

    model_config = ConfigDict(extra="allow", frozen=True)

    publisher: str
    """Publisher that puts the model somewhere (see Publishers below)."""
    model: str
    """Model to publish: a stage that produces a model (merge, train) or a model alias."""
    license: str | None = None
    """License id for the model card's front matter (e.g. ``apache-2.0``); unset: the license of the Hub input
    models when every one that states a license states the same one."""
    tags: list[str] = []
    """Extra model card tags, after the ones sakura adds (``sakura``, the merge method, the trainer, ``lora``,
    ...)."""
    description: str = ""
    """A paragraph at the top of the model card, under its title."""
    evals: list[str] | None = None
    """Eval stages of this model whose results go on the model card (a results table, the Hub's
    ``model-index``, sample generations) and into ``sakura-lineage.json``; unset: every eval stage of the model."""
    adapter: bool = False
    """Publish the LoRA adapter alone (a train stage's ``adapter/``) instead of the whole model: the card names
    the model it applies to (``base_model_relation: adapter``), which must be on the Hub (a Hub model, or a
    stage published before), and ``adapter_config.json`` points to it there."""

    def publisher_raw(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


STAGE_KEYS = ("kind", *PublishOptions.model_fields)


def get_publisher(plugins: Any, name: str) -> Publisher:
    return plugins.publishers.get(name)


def publisher_options(publisher: Publisher, options: PublishOptions) -> Any:
    clash = sorted(set(publisher.Options.model_fields) & set(STAGE_KEYS))
    if clash:
        raise OptionError("publisher", f"publisher {options.publisher!r} has an option named {clash[0]!r}, which is a "
                          "key of the publish stage itself: the publisher's plugin must rename it")
    raw = options.publisher_raw()
    known = list(publisher.Options.model_fields)
    for key in raw:
        if key not in known:
            raise OptionError(key, f"unknown option for publisher {options.publisher!r}{did_you_mean(key, known + list(STAGE_KEYS))}")
    return validate_options(publisher.Options, raw)


class PublishStage(StageKind):
    Options = PublishOptions
    produces = "publication"


    def gpus(self, options: Any) -> int:
        return 0  # CPU work only
    def references(self, options: PublishOptions) -> dict[str, str]:
        return {"model": options.model, **{f"evals[{i}]": name for i, name in enumerate(options.evals or [])}}

    def resolve(self, options: PublishOptions, env: CheckEnv) -> PublishOptions:
        """``evals`` unset: every stage that evaluates this model (it produces an evaluation and reads the model
        as its ``model``); named: each must be one."""
        def evaluates(name: str) -> bool:
            stage = env.stages.get(name)
            return stage is not None and stage.kind.produces == "evaluation" and stage.references.get("model") == options.model

        if options.evals is None:
            found = [name for name in env.stages if evaluates(name)]
            return options.model_copy(update={"evals": found}) if found else options
        for i, name in enumerate(options.evals):
            if name in env.stages and not evaluates(name):
                raise OptionError(f"evals[{i}]", f"stage {name!r} does not evaluate model {options.model!r}")
        return options

    def check(self, options: PublishOptions, env: CheckEnv) -> None:
        publishers = env.plugins.publishers
        if options.publisher not in publishers:
            known = ", ".join(publishers.names()) or "none"
            raise OptionError(
                "publisher",
                f"unknown publisher {options.publisher!r}{did_you_mean(options.publisher, publishers.names())} (known: {known})",
            )
        publisher = get_publisher(env.plugins, options.publisher)
        publisher.check(publisher_options(publisher, options), env)

    def external_inputs(self, options: PublishOptions, env: CheckEnv) -> dict[str, Any]:
        publisher = get_publisher(env.plugins, options.publisher)
        return publisher.external_inputs(publisher_options(publisher, options), env.recipe_dir)

    def uses(self, options: PublishOptions) -> list[tuple[str, str]]:
        return [("publishers", options.publisher)]

    def estimate(self, options: PublishOptions, inputs: dict[str, dict[str, Any]], env: CheckEnv) -> Any:
        """The model's weights: copied to a folder by the local publisher, uploaded by the others."""
        from sakura_core.estimate import Estimate
        from sakura_models.shapes import model_bytes

        size = model_bytes(inputs.get(options.model, {}).get("config"))
        if size is None:
            return None
        if options.publisher == "local":
            return Estimate(disk={"model copy": size})
        return Estimate(upload=size)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from sakura_core.engine import lineage_entry

        options: PublishOptions = ctx.options
        publisher = get_publisher(ctx.plugins, options.publisher)
        popts = publisher_options(publisher, options)
        model = ctx.input(options.model)
        lineage = list(ctx.lineage)
        parents = published_parents(lineage, model.fingerprint, ctx.store, ctx.plugins.publishers)
        bundle = build_bundle(
            model_dir=model.path / ADAPTER_DIR if options.adapter else model.path,
            model_name=model.name,
            model_fingerprint=model.fingerprint,
            lineage=lineage,
            recipe_name=_recipe_name(ctx),
            recipe_file=ctx.recipe_path.name,
            recipe_text=ctx.recipe_text,
            out_dir=ctx.output_dir,
            load_reference=publisher.load_reference(popts, ctx.recipe_dir),
            card_options=options,
            store_root=ctx.store.root,
            recipe_dir=ctx.recipe_dir,
            published_by=ctx.credits,
            evaluations=[lineage_entry(name, ctx.input(name).manifest) for name in options.evals or []],
            published=parents,
            adapter=options.adapter,
        )
        env = PublishEnv(recipe_dir=ctx.recipe_dir, log=ctx.log, progress=ctx.progress)
        record = publisher.run(bundle, popts, env)
        record = {"publisher": options.publisher, "model": model.name, "model_fingerprint": model.fingerprint,
                  "digest": model.digest, **({"adapter": True} if options.adapter else {}), **record}
        remember(ctx.store, record)
        # the parents the card names: a stage published later makes the card outdated (see outdated)
        record["parents"] = {fp: parent["repo_id"] for fp, parent in parents.items()}
        (ctx.output_dir / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return {"files": len(bundle.files), "bytes": bundle.total_bytes, **{k: v for k, v in record.items() if isinstance(v, (str, int, float, bool))}}

    def outdated(self, options: PublishOptions, artifact: Any, env: Any) -> str | None:
        """The destination no longer holds what was published (the publisher checks: a Hub repo deleted or
        overwritten), or a stage the model descends from was published since: the card would name it now."""
        try:
            record = json.loads((artifact.path / RECORD_FILE).read_text())
        except (OSError, ValueError):
            return None
        publisher = get_publisher(env.plugins, options.publisher)
        gone = publisher.outdated(record, publisher_options(publisher, options))
        if gone:
            return gone
        lineage = artifact.manifest.get("lineage") or []
        now = published_parents(lineage, record.get("model_fingerprint", ""), env.store, env.plugins.publishers)
        named = record.get("parents") or {}
        for entry in lineage:
            fingerprint = entry.get("fingerprint")
            if fingerprint in now and named.get(fingerprint) != now[fingerprint]["repo_id"]:
                return (f"stage {entry.get('name')} was published as {now[fingerprint]['repo_id']} since: "
                        "the model card names it as the parent now")
        return None


def remember(store: Any, record: dict[str, Any]) -> None:
    """Record in the store where the model went, against its fingerprint, so that the cards of the models
    made from it name the published repo as their parent."""
    where = record.get("url") or record.get("path")
    if where and record.get("model_fingerprint"):
        destination = f"{record['publisher']}:{where}" + (f"@{record['revision']}" if record.get("revision") else "")
        store.record_publication(record["model_fingerprint"], destination, record)


def published_parents(lineage: list[dict[str, Any]], model_fingerprint: str, store: Any, publishers: Any) -> dict[str, dict[str, Any]]:
    """The stages of the lineage that are on the Hub, ``{fingerprint: {repo_id, commit, url}}``: each one's
    newest publication of the same bytes (digest) that its publisher names by a Hub repo id."""
    found: dict[str, dict[str, Any]] = {}
    for entry in lineage:
        fingerprint = entry.get("fingerprint")
        if entry.get("kind") == "model" or not fingerprint or fingerprint == model_fingerprint:
            continue
        for record in store.publications(fingerprint):
            if entry.get("digest") and record.get("digest") and record["digest"] != entry["digest"]:
                continue  # published before a forced rebuild made other bytes under the same fingerprint
            if record.get("adapter"):
                continue  # its adapter alone: not the model that what descends from it was made from
            publisher = publishers.get(record["publisher"]) if record.get("publisher") in publishers else None
            repo_id = publisher.hub_id(record) if publisher is not None else None
            if repo_id:
                found[fingerprint] = {"repo_id": repo_id, "commit": record.get("commit"), "url": record.get("url")}
                break
    return found


def _recipe_name(ctx: StageContext) -> str:
    try:
        import tomllib
    except ImportError:  # pragma: no cover
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return str(tomllib.loads(ctx.recipe_text).get("name") or ctx.recipe_path.stem)
    except Exception:  # noqa: BLE001 - the recipe was already validated; this is only a label
        return ctx.recipe_path.stem


def build_bundle(
    *,
    model_dir: Path,
    model_name: str,
    model_fingerprint: str,
    lineage: list[dict[str, Any]],
    recipe_name: str,
    recipe_file: str,
    recipe_text: str,
    out_dir: Path,
    load_reference: str,
    card_options: Any = None,
    store_root: Path | None = None,
    recipe_dir: Path | None = None,
    published_by: list[dict[str, Any]] | None = None,
    evaluations: list[dict[str, Any]] | None = None,
    published: dict[str, dict[str, Any]] | None = None,
    adapter: bool = False,
) -> Bundle:
    """Write the card, lineage file and recipe copy into ``out_dir``; return every file to publish.
    ``published``: the stages of the lineage already on the Hub (``published_parents``); ``adapter``:
    ``model_dir`` is a LoRA adapter, published alone."""
    from sakura_core import __version__
    from sakura_core.hashing import hash_file
    from sakura_publish.card import hub_dataset_commits, hub_models, plugins_of, render_card

    out_dir.mkdir(parents=True, exist_ok=True)
    if adapter:
        check_adapter_artifact(model_dir)
        files = model_files(model_dir)
        base = adapter_base(lineage, model_fingerprint, published or {})
        files[ADAPTER_CONFIG] = point_adapter_to(files[ADAPTER_CONFIG], base, out_dir)
    else:
        check_model_artifact(model_dir)
        files = model_files(model_dir)
    lineage_doc = {
        "format": LINEAGE_FORMAT,
        "sakura_version": __version__,
        "recipe": {"name": recipe_name, "file": recipe_file},
        "model": {"name": model_name, "fingerprint": model_fingerprint},
        "files": {name: {"sha256": hash_file(path), "size": path.stat().st_size} for name, path in files.items()},
        "lineage": lineage,
        # every plugin distribution that made a stage of the lineage, or published it: name, version, code hash
        "plugins": plugins_of(lineage + list(evaluations or []), published_by or []),
        "evaluations": list(evaluations or []),
        # every Hub input at the commit it was read at, and the stages already on the Hub (the model's parents)
        "hub_models": [{"id": e["id"], "commit": e.get("sha")} for e in hub_models(lineage)],
        "hub_datasets": hub_dataset_commits(lineage),
        "published_stages": {e["name"]: published[e["fingerprint"]] for e in lineage
                             if e.get("fingerprint") in (published or {})},
    }
    (out_dir / LINEAGE_FILE).write_text(json.dumps(lineage_doc, indent=2, sort_keys=True, default=str) + "\n")
    (out_dir / RECIPE_FILE).write_text(recipe_text)
    card = render_card(
        lineage,
        model_name=recipe_name,
        load_reference=load_reference,
        recipe_name=recipe_name,
        recipe_file=recipe_file,
        recipe_text=recipe_text,
        fingerprint=model_fingerprint,
        license=getattr(card_options, "license", None),
        extra_tags=list(getattr(card_options, "tags", []) or []),
        description=getattr(card_options, "description", "") or "",
        dataset_stats=dataset_stats(store_root, lineage) if store_root else None,
        recipe_dir=recipe_dir,
        published_by=published_by or [],
        evaluations=evaluations or [],
        published=published or {},
        adapter=adapter,
    )
    (out_dir / CARD_FILE).write_text(card)
    for name in (CARD_FILE, LINEAGE_FILE, RECIPE_FILE):
        files[name] = out_dir / name
    return Bundle(
        name=recipe_name,
        fingerprint=model_fingerprint,
        files=dict(sorted(files.items())),
        commit_message=f"sakura: publish {recipe_name} ({model_fingerprint[:12]})",
        commit_description=(
            f"Published by sakura from recipe {recipe_file} ({recipe_name}).\n"
            f"Model artifact: {model_name}, fingerprint {model_fingerprint}."
        ),
    )


def check_adapter_artifact(adapter_dir: Path) -> None:
    if not (adapter_dir / ADAPTER_CONFIG).is_file() or not any(adapter_dir.glob("*.safetensors")):
        raise StageError(f"{adapter_dir.parent.name} has no LoRA adapter ({ADAPTER_DIR}/{ADAPTER_CONFIG} and safetensors): "
                         "adapter = true publishes the adapter of a train stage with lora")


def adapter_base(lineage: list[dict[str, Any]], fingerprint: str, published: dict[str, dict[str, Any]]) -> str:
    """The Hub id of the model an adapter applies to: its train stage's input, a Hub model or a stage
    published before; else a one-line error (an adapter is of no use without its base)."""
    from sakura_publish.card import model_tree

    tree = model_tree(lineage, fingerprint, published, adapter=True)
    if len(tree.base_model) != 1:
        model = tree.steps[-1].get("name", "the model")
        raise StageError(f"the adapter of {model} applies to a model that is not on the Hub: publish that model "
                         "first (or publish the whole model, without adapter = true)")
    return tree.base_model[0]


def point_adapter_to(config_path: Path, base: str, out_dir: Path) -> Path:
    """A copy of ``adapter_config.json`` whose ``base_model_name_or_path`` is the Hub id of its base (peft
    wrote the store path it was trained on), so peft and transformers load the adapter from the Hub."""
    config = json.loads(Path(config_path).read_text())
    config["base_model_name_or_path"] = base
    path = out_dir / ADAPTER_CONFIG
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def check_model_artifact(model_dir: Path) -> None:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise StageError(f"{model_dir} is not a directory")
    if not (model_dir / "config.json").is_file():
        raise StageError(f"{model_dir} has no config.json: not a model artifact")
    if not any(model_dir.glob("*.safetensors")):
        raise StageError(f"{model_dir} has no *.safetensors weights: nothing to publish")


def dataset_stats(store_root: Path, lineage: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{fingerprint: stats.json}`` of the dataset stages in the lineage, read from the store."""
    out = {}
    for entry in lineage:
        if entry.get("kind") != "dataset" or not entry.get("fingerprint"):
            continue
        path = Path(store_root) / "artifacts" / entry["fingerprint"] / "stats.json"
        try:
            out[entry["fingerprint"]] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def artifact_lineage(artifact_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(manifest, lineage including the artifact itself) of a store artifact, for ``sakura push``."""
    from sakura_core.store import MANIFEST

    path = Path(artifact_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, []
    lineage = list(manifest.get("lineage") or [])
    if manifest.get("stage"):
        from sakura_core.engine import lineage_entry

        lineage.append(lineage_entry(manifest["stage"], manifest))
    elif manifest.get("kind") == "model":
        lineage.append({"name": manifest.get("source", "model"), **manifest})
    return manifest, lineage
