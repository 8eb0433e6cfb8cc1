"""``sakura push ARTIFACT --repo-id NAME``: publish a model artifact to the Hub by hand.

ARTIFACT is a model artifact directory of the store (a merge or train output, whose manifest carries the
lineage and the recipe) or any model directory with config.json and safetensors weights. The card, the
lineage file and the recipe are written exactly as a ``publish`` stage writes them.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click


@click.command()
@click.argument("artifact", type=click.Path(file_okay=False, path_type=Path))
@click.option("--repo-id", required=True, help="The Hub repo to publish to: namespace/name, or a name in your own namespace.")
@click.option("--private/--public", default=None, help="Visibility of a repo this creates (default: the Hub's).")
@click.option("--revision", default=None, help="Commit to this branch (created from main when missing).")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--license", "license_", default=None, help="License id for the model card (default: the inputs').")
@click.option("--tag", "tags", multiple=True, help="Extra tag for the model card (repeatable).")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded; contact nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def push(artifact: Path, repo_id: str, private, revision, create_pr: bool, license_, tags, dry_run: bool, as_json: bool) -> None:
    """Publish the model in ARTIFACT to the Hugging Face Hub with its model card and lineage."""
    from sakura_core.errors import OptionError, StageError
    from sakura_core.options import validate_options
    from sakura_hub.publisher import HubOptions, HubPublisher
    from sakura_hub.timeouts import ensure as ensure_timeouts
    from sakura_publish.publisher import PublishEnv
    from sakura_publish.stage import artifact_lineage, build_bundle, check_model_artifact, remember

    ensure_timeouts()
    raw = {"repo_id": repo_id, "private": private, "revision": revision, "create_pr": create_pr}
    try:
        options = validate_options(HubOptions, {k: v for k, v in raw.items() if v is not None})
        publisher = HubPublisher()
        publisher.check(options)
    except OptionError as exc:
        key = {"repo_id": "--repo-id", "create_pr": "--create-pr"}.get(exc.key or "", exc.key)
        raise OptionError(None, f"{key}: {exc.detail}") from None
    artifact = artifact.resolve()
    if not artifact.is_dir():
        raise StageError(f"{artifact} is not a directory")
    check_model_artifact(artifact)
    manifest, lineage = artifact_lineage(artifact)
    recipe = manifest.get("recipe") or {}
    name = recipe.get("name") or repo_id.split("/")[-1]
    store = _store_of(artifact)
    fingerprint = manifest.get("fingerprint") or _content_fingerprint(artifact)
    card_options = type("CardOptions", (), {"license": license_, "tags": list(tags), "description": ""})()
    # what from_pretrained takes: a bare name is the token owner's (a dry run contacts nothing to ask whose)
    load_reference = repo_id if dry_run else publisher.load_reference(options, artifact)
    with tempfile.TemporaryDirectory(prefix="sakura-push-") as tmp:
        bundle = build_bundle(
            model_dir=artifact,
            model_name=manifest.get("stage") or artifact.name,
            model_fingerprint=fingerprint,
            lineage=lineage,
            recipe_name=name,
            recipe_file=recipe.get("file") or "(no recipe)",
            recipe_text=recipe.get("text") or "# published with `sakura push`; no recipe was recorded\n",
            out_dir=Path(tmp),
            load_reference=load_reference,
            card_options=card_options,
            store_root=store.root if store else None,
            published=_published_parents(lineage, fingerprint, store),
        )
        if dry_run:
            target = f"{repo_id}@{revision or 'main'}" + (" (as a pull request)" if create_pr else "")
            if as_json:
                click.echo(json.dumps({"repo_id": repo_id, "dry_run": True, "files": {k: v.stat().st_size for k, v in bundle.files.items()}}, indent=2))
                return
            click.echo(f"would upload {len(bundle.files)} files ({bundle.total_bytes / 2**20:.2f} MiB) to {target}:")
            for path_in_repo, path in bundle.files.items():
                click.echo(f"  {path_in_repo:40} {path.stat().st_size:>12,} bytes")
            click.echo(f"commit message: {bundle.commit_message}")
            return
        record = publisher.run(bundle, options, PublishEnv(recipe_dir=artifact, log=lambda m: click.echo(m, err=True)))
    if store is not None:  # the store remembers it: the cards of models made from this one name the repo
        remember(store, {"publisher": "hub", "model": manifest.get("stage") or artifact.name,
                         "model_fingerprint": fingerprint, "digest": manifest.get("digest"), **record})
    if as_json:
        click.echo(json.dumps(record, indent=2))
    elif record.get("changed"):
        where = record.get("pr_url") or record["url"]
        click.echo(f"published {len(bundle.files)} files to {where} (commit {record['commit']})")
    else:
        click.echo(f"unchanged: {record['url']} already holds this artifact (commit {record['commit']})")
    sys.stdout.flush()


def _store_of(artifact: Path):
    """The store an artifact directory belongs to (``<root>/artifacts/<fingerprint>``), or None."""
    from sakura_core.store import Store

    return Store(artifact.parent.parent) if artifact.parent.name == "artifacts" else None


def _published_parents(lineage: list, fingerprint: str, store) -> dict:
    if store is None:
        return {}
    from sakura_core.plugins import Plugins
    from sakura_publish.stage import published_parents

    return published_parents(lineage, fingerprint, store, Plugins().publishers)


def _content_fingerprint(path: Path) -> str:
    from sakura_core.hashing import hash_path

    return hash_path(path)
