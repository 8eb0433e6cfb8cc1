"""The model card: Hub-convention YAML front matter, then the whole lineage in words.

Everything comes from the lineage the engine records (model sources with their resolved Hub commits,
every upstream stage with its options and metrics) plus the recipe text, so the card is the same bytes
for the same artifact: publishing an unchanged artifact again changes nothing on the Hub.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".tsv", ".txt", ".arrow")


def hub_models(lineage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lineage entries of models that came from the Hub (they carry ``id`` and the resolved ``sha``)."""
    return [e for e in lineage if e.get("kind") == "model" and e.get("source") == "hub" and e.get("id")]


def stages_of(lineage: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in lineage if e.get("kind") == kind]


def hub_datasets(lineage: list[dict[str, Any]], recipe_dir: Path | None = None) -> list[str]:
    """Dataset sources that name Hub datasets (``org/name``, not a local file)."""
    out: list[str] = []
    for stage in stages_of(lineage, "dataset"):
        for source in (stage.get("options") or {}).get("sources") or []:
            if not isinstance(source, dict):
                continue
            ident = source.get("hub") or source.get("repo_id") or source.get("path")
            if not isinstance(ident, str) or not HUB_ID_RE.match(ident) or ident.endswith(DATA_FILE_SUFFIXES):
                continue
            if recipe_dir is not None and (recipe_dir / ident).exists():
                continue
            if ident not in out:
                out.append(ident)
    return out


# -- the model tree ------------------------------------------------------------------------------------
@dataclass
class Tree:
    """Where the published model sits in the Hub's model tree: its ``base_model`` ids and their relation, and
    the steps from them to the model (the stages no repo stands for)."""

    base_model: list[str]
    relation: str | None  # one of the Hub's: "finetune", "adapter", "merge", "quantized"; None: let the Hub infer
    steps: list[dict[str, Any]] = field(default_factory=list)  # lineage entries, oldest first, the model last


def model_tree(lineage: list[dict[str, Any]], fingerprint: str, published: dict[str, dict[str, Any]],
               adapter: bool = False) -> Tree:
    """The model's parents on the Hub: the nearest ancestors that are Hub models or were published
    (``published``: stage fingerprint -> its Hub repo), climbing through the stages that were not.

    A fine-tune of a published merge names that repo (``finetune``); a merge names what it merged (``merge``);
    a LoRA adapter published alone (``adapter``) names the model it applies to, which must be on the Hub. A fine-tune of a merge that was never published
    names the merged models, the form the Hub's docs give for a merge (``base_model`` lists them): the Hub
    has no id for the merge itself, and the card says in words what happened.
    """
    by_fingerprint = {e.get("fingerprint"): e for e in lineage if e.get("fingerprint")}
    model = by_fingerprint.get(fingerprint) or (lineage[-1] if lineage else {})
    if model.get("kind") == "model":  # a model source published as it is
        return Tree([model["id"]] if _is_hub_model(model) else [], None, [model])

    def hub_id(entry: dict[str, Any]) -> str | None:
        if entry.get("kind") == "model":
            return entry.get("id") if _is_hub_model(entry) else None
        return (published.get(entry.get("fingerprint", "")) or {}).get("repo_id")

    if adapter:  # it applies to the very model it was trained on: its parent, or nothing the Hub can name
        ids = [hub_id(parent) for parent in _model_parents(model, lineage, by_fingerprint)]
        named = [i for i in ids if i]
        return Tree(named, "adapter", [model]) if named and len(named) == len(ids) else Tree([], None, [model])

    bases: list[str] = []
    between: list[dict[str, Any]] = []

    def climb(entry: dict[str, Any]) -> None:
        for parent in _model_parents(entry, lineage, by_fingerprint):
            found = hub_id(parent)
            if found:
                bases.append(found)
            elif parent.get("kind") != "model" and parent not in between:
                between.append(parent)
                climb(parent)

    climb(model)
    if "inputs" not in model:  # a lineage from before inputs were recorded: every model stage is a step
        between = [e for e in lineage if _makes_model(e) and e.get("kind") != "model" and e is not model]
    relation = _relation({e.get("kind") for e in [*between, model]})
    steps = [e for e in lineage if e in between] + [model]
    return Tree(list(dict.fromkeys(bases)), relation if bases else None, steps)


def _relation(kinds: set[Any]) -> str | None:
    """A merge anywhere between the parents and the model makes it a merge of them (the Hub has no "merge,
    then fine-tune"); training alone, a fine-tune (the whole model is published, the adapter merged in)."""
    if "merge" in kinds:
        return "merge"
    if "train" in kinds:
        return "finetune"
    return None


def _is_hub_model(entry: dict[str, Any]) -> bool:
    return entry.get("kind") == "model" and entry.get("source") == "hub" and bool(entry.get("id"))


def _makes_model(entry: dict[str, Any]) -> bool:
    return entry.get("kind") in ("model", "merge", "train") or entry.get("produces") == "model"


def _model_parents(entry: dict[str, Any], lineage: list[dict[str, Any]],
                   by_fingerprint: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The models an entry was made from: the inputs it read that are models (a train stage's dataset is not)."""
    if "inputs" not in entry:  # recorded before inputs were: the Hub models of the lineage
        return [e for e in lineage if _is_hub_model(e)]
    found = [by_fingerprint.get(fp) for fp in entry["inputs"].values()]
    return [e for e in found if e is not None and _makes_model(e)]


def hub_dataset_commits(lineage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{id, commit, stage}]``: every Hub dataset a dataset stage read, at the commit it read."""
    found = []
    for stage in stages_of(lineage, "dataset"):
        for i, source in enumerate((stage.get("options") or {}).get("sources") or []):
            commit = dataset_commit(stage, i)
            if commit and isinstance(source, dict):
                found.append({"id": source.get("path"), "commit": commit, "stage": stage.get("name")})
    return found


def card_metadata(
    lineage: list[dict[str, Any]],
    *,
    model_name: str,
    tree: Tree | None = None,
    license: str | None = None,
    extra_tags: list[str] = (),  # type: ignore[assignment]
    recipe_dir: Path | None = None,
    evaluations: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """The YAML front matter, in the Hub's conventions."""
    meta: dict[str, Any] = {}
    merges = stages_of(lineage, "merge")
    trains = stages_of(lineage, "train")
    tree = tree or model_tree(lineage, "", {})
    if tree.base_model:
        meta["base_model"] = tree.base_model if len(tree.base_model) > 1 else tree.base_model[0]
        if tree.relation:
            meta["base_model_relation"] = tree.relation
    datasets = hub_datasets(lineage, recipe_dir)
    if datasets:
        meta["datasets"] = datasets
    license = license or _inherited_license(lineage)
    if license:
        meta["license"] = license
    meta["library_name"] = "peft" if tree.relation == "adapter" else "transformers"
    meta["pipeline_tag"] = "text-generation"
    tags = ["sakura"]
    for merge in merges:
        method = (merge.get("options") or {}).get("merge_method")
        tags += ["merge"] + (["mergekit"] if is_mergekit_method(merge) else []) + ([method] if isinstance(method, str) else [])
    for stage in trains:
        options = stage.get("options") or {}
        if options.get("trainer"):
            tags.append(str(options["trainer"]))
        tags.append("trl")
        if options.get("lora"):
            tags += ["lora", "peft"]
    tags += list(extra_tags)
    meta["tags"] = list(dict.fromkeys(tags))
    index = _model_index(list(evaluations), model_name)
    if index:
        meta["model-index"] = index
    return meta


def _inherited_license(lineage: list[dict[str, Any]]) -> str | None:
    """The inputs' license when every Hub input that states one states the same one."""
    found = {e.get("license") for e in hub_models(lineage) if e.get("license")}
    return found.pop() if len(found) == 1 else None


def _numeric(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _model_index(evaluations: list[dict[str, Any]], model_name: str) -> list[dict[str, Any]]:
    """The Hub's ``model-index``: one result per benchmark task an eval stage measured (a task whose results
    name the dataset it reads: lm-eval's), each metric as lm-eval reports it, with the few-shot setting."""
    results = []
    for evaluation in evaluations:
        metrics = evaluation.get("metrics") or {}
        tasks = metrics.get("tasks") or {}
        for task, values in (metrics.get("results") or {}).items():
            info = tasks.get(task) or {}
            numbers = {k: v for k, v in _numeric(values).items() if not k.endswith("_stderr")}
            if not info.get("dataset") or not numbers:
                continue
            dataset: dict[str, Any] = {"name": str(info.get("name") or task),
                                       "type": str(info["dataset"]) if info["dataset"] not in LOCAL_FORMATS else str(task)}
            if info.get("config"):
                dataset["config"] = str(info["config"])
            if info.get("split"):
                dataset["split"] = str(info["split"])
            if isinstance(info.get("num_fewshot"), int):
                dataset["args"] = {"num_few_shot": info["num_fewshot"]}
            results.append({
                "task": {"type": "text-generation", "name": "Text Generation"},
                "dataset": dataset,
                "metrics": [{"type": k.split(",")[0], "value": v, "name": k} for k, v in numbers.items()],
                "source": {"name": f"sakura eval stage {evaluation.get('name')} ({metrics.get('evaluator', 'eval')})",
                           "url": "https://github.com/EleutherAI/lm-evaluation-harness"},
            })
    return [{"name": model_name, "results": results}] if results else []


# lm-eval's dataset_path of a task reading local files: not a Hub dataset id
LOCAL_FORMATS = ("json", "csv", "parquet", "text", "arrow")


# -- the body ----------------------------------------------------------------------------------------
def render_card(
    lineage: list[dict[str, Any]],
    *,
    model_name: str,
    load_reference: str,
    recipe_name: str,
    recipe_file: str,
    recipe_text: str,
    fingerprint: str,
    license: str | None = None,
    extra_tags: list[str] = (),  # type: ignore[assignment]
    description: str = "",
    dataset_stats: dict[str, dict[str, Any]] | None = None,
    recipe_dir: Path | None = None,
    published_by: list[dict[str, Any]] = (),  # type: ignore[assignment]
    evaluations: list[dict[str, Any]] = (),  # type: ignore[assignment]
    published: dict[str, dict[str, Any]] | None = None,
    adapter: bool = False,
) -> str:
    """The card. ``published``: the stages of the lineage already on the Hub (fingerprint -> ``repo_id``,
    ``commit``, ``url``), named as the model's parents; ``adapter``: the repository holds a LoRA adapter alone."""
    import yaml

    tree = model_tree(lineage, fingerprint, published or {}, adapter)
    meta = card_metadata(lineage, model_name=model_name, tree=tree, license=license, extra_tags=extra_tags,
                         recipe_dir=recipe_dir, evaluations=evaluations)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    parts = [f"---\n{front}---\n", f"# {model_name}\n"]
    intro = description.strip() + "\n\n" if description.strip() else ""
    parts.append(
        f"{intro}This model was built with [sakura](https://github.com/sakura-recipes/sakura) from the recipe "
        f"`{recipe_file}` (`{recipe_name}`), included below and in this repository as `sakura-recipe.toml`. "
        "Every step that produced it is listed here, oldest first; `sakura-lineage.json` holds the same "
        "lineage in machine-readable form.\n"
    )
    parts.append(_sources_section(lineage))
    parts.append(_tree_section(tree, lineage, published or {}))
    for entry in lineage:
        kind = entry.get("kind")
        if kind == "merge":
            parts.append(_merge_section(entry, lineage))
        elif kind == "dataset":
            parts.append(_dataset_section(entry, (dataset_stats or {}).get(entry.get("fingerprint", ""))))
        elif kind == "train":
            parts.append(_train_section(entry, alone=adapter and entry is tree.steps[-1]))
        elif kind not in ("model", None):
            parts.append(_generic_section(entry))
    parts += [_eval_section(evaluation) for evaluation in evaluations]
    parts += [_samples_section(evaluation) for evaluation in evaluations]
    parts.append(_load_section(load_reference))
    parts.append(_made_with_section(plugins_of(lineage, list(published_by))))
    parts.append(f"## Recipe\n\n```toml\n{recipe_text.rstrip()}\n```\n")
    parts.append(f"Model artifact fingerprint: `{fingerprint}`.\n")
    return "\n".join(p for p in parts if p)


def _merge_inputs(options: dict[str, Any]) -> list[str]:
    """The models a merge stage's options name, in order: ``models``, ``slices`` or each of ``modules``."""
    layouts = [options] + [m for m in (options.get("modules") or {}).values() if isinstance(m, dict)]
    inputs: list[str] = []
    for layout in layouts:
        for model in layout.get("models") or []:
            name = model.get("model") if isinstance(model, dict) else model
            if isinstance(name, str):
                inputs.append(name)
        for piece in layout.get("slices") or []:
            for source in (piece or {}).get("sources") or []:
                if isinstance(source, dict) and isinstance(source.get("model"), str):
                    inputs.append(source["model"])
    return inputs


def _merge_input_label(reference: str, lineage: list[dict[str, Any]]) -> str:
    """A merge input: a model or stage, or ``NAME+LORA`` (the model with a LoRA applied before merging)."""
    name, _, lora = reference.partition("+")
    label = _model_label(name, lineage)
    return f"{label} with LoRA `{lora}`" if lora else label


def _model_label(name: str, lineage: list[dict[str, Any]]) -> str:
    for entry in lineage:
        if entry.get("name") == name:
            if entry.get("kind") == "model" and entry.get("source") == "hub" and entry.get("id"):
                return f"[{entry['id']}](https://huggingface.co/{entry['id']})"
            if entry.get("kind") != "model":
                return f"stage `{name}`"
    return f"`{name}`"


def _sources_section(lineage: list[dict[str, Any]]) -> str:
    rows = []
    for entry in lineage:
        if entry.get("kind") != "model":
            continue
        source = entry.get("source", "?")
        if source == "hub":
            what = f"[{entry.get('id')}](https://huggingface.co/{entry.get('id')}) at commit `{entry.get('sha', '?')}`"
            if entry.get("revision") and entry.get("revision") != entry.get("sha"):
                what += f" (revision `{entry['revision']}`)"
        elif source == "tiny":
            tiny = entry.get("tiny") or {}
            what = "a tiny random test model (" + ", ".join(f"{k}={v}" for k, v in tiny.items()) + ")"
        elif source == "local":
            what = f"the local directory `{entry.get('path', '?')}`"
        else:
            what = f"source `{source}`"
        rows.append(f"- `{entry.get('name')}`: {what}")
    if not rows:
        return ""
    return "## Source models\n\n" + "\n".join(rows) + "\n"


def _tree_section(tree: Tree, lineage: list[dict[str, Any]], published: dict[str, dict[str, Any]]) -> str:
    """How the model descends from its Hub parents, step by step, and why the Hub's tree shows what it shows."""
    if not tree.base_model or tree.steps[-1].get("kind") == "model":
        return ""
    relation = f" (`base_model_relation: {tree.relation}`)" if tree.relation else ""
    lines = ["## Model tree\n", f"On the Hub, `base_model` names {_and([_hub_link(i) for i in tree.base_model])}{relation}.\n"]
    lines += [f"{number}. {_step_text(step, lineage, published)}" for number, step in enumerate(tree.steps, 1)]
    unpublished = [f"`{step.get('name')}`" for step in tree.steps[:-1]]
    if len(unpublished) == 1:
        lines.append(f"\nStage {unpublished[0]} was not published on its own: the Hub has no id for it, so "
                     "`base_model` names the models it was made from.")
    elif unpublished:
        lines.append(f"\nStages {_and(unpublished)} were not published on their own: the Hub has no id for them, "
                     "so `base_model` names the models they were made from.")
    return "\n".join(lines) + "\n"


def _step_text(step: dict[str, Any], lineage: list[dict[str, Any]], published: dict[str, dict[str, Any]]) -> str:
    """``stage `dpo`: fine-tuned [org/merge](...) with **dpo** on the data of stage `data`.``"""
    options = step.get("options") or {}
    by_fingerprint = {e.get("fingerprint"): e for e in lineage if e.get("fingerprint")}
    parents = _and([_parent_label(p, published) for p in _model_parents(step, lineage, by_fingerprint)])
    kind = step.get("kind")
    if kind == "merge":
        return f"stage `{step.get('name')}`: merged {parents} with **{options.get('merge_method', '?')}**."
    if kind == "train":
        return (f"stage `{step.get('name')}`: fine-tuned {parents} with **{options.get('trainer', '?')}** on the "
                f"data of stage `{options.get('dataset', '?')}`.")
    return f"stage `{step.get('name')}` ({kind}), made from {parents}."


def _parent_label(entry: dict[str, Any], published: dict[str, dict[str, Any]]) -> str:
    """A Hub model at its commit, a stage published as a repo at its commit, or a stage."""
    if _is_hub_model(entry):
        return f"{_hub_link(entry['id'])} (commit `{entry.get('sha', '?')}`)"
    where = published.get(entry.get("fingerprint", ""))
    if where:
        return f"{_hub_link(where['repo_id'])} (stage `{entry.get('name')}`, commit `{where.get('commit', '?')}`)"
    return f"stage `{entry.get('name')}`"


def _hub_link(repo_id: str) -> str:
    return f"[{repo_id}](https://huggingface.co/{repo_id})"


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) < 2:
        return "".join(items) or "nothing"
    return ", ".join(items[:-1]) + " and " + items[-1]


def _clean(value: Any) -> Any:
    """Drop unset (None / empty) entries, recursively: the card shows what the recipe chose."""
    if isinstance(value, dict):
        out = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _yaml_block(value: Any) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_list(dumper: Any, data: list) -> Any:  # [0, 0.5, 1] on one line, as mergekit configs are written
        flow = all(isinstance(x, (int, float, str, bool)) for x in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    Dumper.add_representer(list, represent_list)
    text = yaml.dump(_clean(value), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1000)
    return "```yaml\n" + text.rstrip() + "\n```\n"


def is_mergekit_method(merge: dict[str, Any]) -> bool:
    """Whether a merge stage's method is mergekit's (ported or bridged) rather than a plugin's own."""
    metrics = merge.get("metrics") or {}
    if "mergekit_method" in metrics:
        return bool(metrics["mergekit_method"])
    # an artifact from before the merge stage said so: the built-in plugin held only mergekit's methods
    method = _method_credit(merge)
    return method is None or method[0].get("distribution") == "sakura-recipes"


def _method_credit(merge: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(plugin, entry) of the merge method a merge stage ran, from its lineage entry."""
    method = (merge.get("options") or {}).get("merge_method")
    for plugin in merge.get("plugins") or []:
        for entry in plugin.get("entries") or []:
            if entry.get("what") == "merge method" and entry.get("name") == method:
                return plugin, entry
    return None


def _merge_section(entry: dict[str, Any], lineage: list[dict[str, Any]]) -> str:
    options = dict(entry.get("options") or {})
    method = options.get("merge_method", "?")
    mergekit = is_mergekit_method(entry)
    lines = [f"## Merge (stage `{entry.get('name')}`)\n"]
    if mergekit:
        lines.append(f"Merge method: **{method}** (mergekit semantics).")
    else:
        plugin, credit = _method_credit(entry) or ({}, {})
        text = f"Merge method: **{method}**, from plugin `{plugin.get('name', '?')}` ({_package(plugin)})"
        text += f": {credit['description'].rstrip('.')}." if credit.get("description") else "."
        if credit.get("url"):
            text += f" See <{credit['url']}>."
        if credit.get("citation"):
            text += f" Cite: {credit['citation']}."
        lines.append(text)
    if options.get("base_model"):
        lines.append(f"Base model: {_merge_input_label(str(options['base_model']), lineage)}.")
    inputs = _merge_inputs(options)
    if inputs:
        lines.append("Models merged: " + ", ".join(_merge_input_label(n, lineage) for n in dict.fromkeys(inputs)) + ".")
    numbers = _numeric(entry.get("metrics"))
    if numbers:
        lines.append("Merge metrics: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in numbers.items()) + ".")
    if mergekit:
        lines.append("\nConfiguration (mergekit's keys):\n")
    else:
        package = _method_credit(entry)
        needs = f" with {_package(package[0])} installed" if package else ""
        lines.append(f"\nConfiguration (a sakura merge table: mergekit does not know this method; `sakura merge` runs it{needs}):\n")
    lines.append(_yaml_block(options))
    return "\n".join(lines)


def _dataset_section(entry: dict[str, Any], stats: dict[str, Any] | None) -> str:
    options = entry.get("options") or {}
    lines = [f"## Data (stage `{entry.get('name')}`)\n"]
    sources = options.get("sources") or []
    per_source = _per_source_rows(stats)
    for i, source in enumerate(sources):
        if not isinstance(source, dict):
            continue
        ident = source.get("path") or source.get("hub") or source.get("repo_id") or "?"
        label = f"[{ident}](https://huggingface.co/datasets/{ident})" if HUB_ID_RE.match(str(ident)) and not str(ident).endswith(DATA_FILE_SUFFIXES) else f"`{ident}`"
        commit = dataset_commit(entry, i)
        if commit:
            label += f" at commit `{commit}`"
        rows = per_source.get(i)
        extra = {k: v for k, v in _clean(source).items() if k not in ("path", "adapter", "hub", "repo_id")}
        text = f"- {label} through the `{source.get('adapter', '?')}` adapter"
        if rows is not None:
            text += f": {rows}"
        if extra:
            text += " (" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in extra.items()) + ")"
        lines.append(text)
    counts = _row_counts(entry.get("metrics"), stats)
    if counts:
        lines.append("\nRows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ".")
    elif isinstance((stats or {}).get("rows_in"), int):
        lines.append(f"\nRows read: {stats['rows_in']:,}.")
    rest = {k: v for k, v in _clean(options).items() if k != "sources"}
    if rest:
        lines.append("\nSettings: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in rest.items()) + ".")
    return "\n".join(lines) + "\n"


def dataset_commit(entry: dict[str, Any], i: int) -> str | None:
    """The commit the dataset stage read source ``i`` at, when it is a Hub dataset (its external inputs)."""
    commit = ((entry.get("external") or {}).get(f"sources[{i}]") or {}).get("revision")
    return commit if isinstance(commit, str) and SHA_RE.match(commit) else None


def _per_source_rows(stats: dict[str, Any] | None) -> dict[int, str]:
    """Per source: rows read, rows made by its adapter when not one per row read, rows used and why rows
    were dropped (the dataset stage's stats.json)."""
    out: dict[int, str] = {}
    for i, source in enumerate((stats or {}).get("sources") or []):
        if not isinstance(source, dict):
            continue
        rows_in, rows_out = source.get("rows_in"), source.get("rows_out", source.get("rows"))
        if isinstance(rows_in, int) and isinstance(rows_out, int):
            text = f"{rows_out:,} of {rows_in:,} rows used"
            made = source.get("rows_made")
            if isinstance(made, int) and made != rows_in:  # an adapter that expands rows or pairs them up
                text = f"{rows_out:,} of {made:,} rows used, made from {rows_in:,} rows read"
            dropped = source.get("dropped") or {}
            if isinstance(dropped, dict) and dropped:
                text += " (dropped: " + ", ".join(f"{n:,} {reason}" for reason, n in dropped.items()) + ")"
            out[i] = text
        elif isinstance(rows_out, int):
            out[i] = f"{rows_out:,} rows"
    return out


def _row_counts(metrics: Any, stats: dict[str, Any] | None) -> dict[str, int]:
    """Rows per split: from stats.json (``rows = {train: n, test: m}``), else from the stage's metrics."""
    counts: dict[str, int] = {}
    rows = (stats or {}).get("rows")
    if isinstance(rows, dict):
        counts = {f"{split}": n for split, n in rows.items() if isinstance(n, int)}
    if not counts and isinstance(metrics, dict):
        for key, value in metrics.items():
            if isinstance(value, int) and not isinstance(value, bool) and "row" in key:
                counts[key.replace("rows_", "").replace("_rows", "").replace("_", " ")] = value
    return counts


def _train_section(entry: dict[str, Any], alone: bool = False) -> str:
    options = entry.get("options") or {}
    trainer = options.get("trainer", "?")
    lines = [f"## Training (stage `{entry.get('name')}`)\n", f"Trainer: **{trainer}** (trl), on `{options.get('model', '?')}` with data `{options.get('dataset', '?')}`."]
    lora = options.get("lora")
    if lora:
        where = "this repository holds the adapter alone" if alone else "merged into the weights"
        lines.append("LoRA: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in _clean(lora).items()) + f" ({where}).")
    args = options.get("args") or {}
    metrics = entry.get("metrics") or {}
    resolved = metrics.get("trainer_config")
    if isinstance(resolved, dict) and resolved:
        # What the trainer's config class received; the recipe's values are under the names it took them by.
        recipe = metrics.get("trainer_config_recipe") or {}

        def set_by(key: str, value: Any) -> str:
            if key not in recipe:
                return "default"
            return "recipe" if recipe[key] == value else f"recipe said {json.dumps(recipe[key])}"

        lines.append("\nTrainer configuration:\n\n| setting | value | set by |\n|---|---|---|")
        lines += [f"| {k} | {json.dumps(v)} | {set_by(k, v)} |" for k, v in resolved.items()]
    elif args:  # an artifact from before the trainer configuration was recorded: the recipe's args
        lines.append("\n| hyperparameter | value |\n|---|---|")
        lines += [f"| {k} | {json.dumps(v)} |" for k, v in args.items()]
    numbers = _numeric(metrics)
    if numbers:
        lines.append("\nFinal metrics:\n\n| metric | value |\n|---|---|")
        lines += [f"| {k} | {_fmt(v)} |" for k, v in numbers.items()]
    tracking = metrics.get("tracking")
    if isinstance(tracking, dict) and tracking.get("run_name"):
        lines.append("\n" + _tracking_line(tracking))
    return "\n".join(lines) + "\n"


def _tracking_line(tracking: dict[str, Any]) -> str:
    """Where the training run was tracked, linked when its tracker gives a link (a trackio Space)."""
    run = f"`{tracking['run_name']}`"
    if tracking.get("url"):
        run = f"[{tracking['run_name']}]({tracking['url']})"
    trackers = ", ".join(tracking.get("report_to") or [])
    return f"Training run: {run} ({trackers}; runs of this recipe are grouped under `{tracking.get('group', '')}`)."


def _eval_section(entry: dict[str, Any]) -> str:
    """An eval stage's results: task, metric, value, stderr and few-shot setting, with what produced them."""
    metrics = entry.get("metrics") or {}
    results = metrics.get("results") if isinstance(metrics.get("results"), dict) else {}
    tasks = metrics.get("tasks") or {}
    lines = [f"## Evaluation (stage `{entry.get('name')}`, {metrics.get('evaluator', 'eval')})\n",
             "| task | metric | value | stderr | shots |", "|---|---|---|---|---|"]
    for task, values in results.items():
        numbers = _numeric(values)
        shots = (tasks.get(task) or {}).get("num_fewshot")
        for metric, value in numbers.items():
            if metric.endswith("_stderr"):
                continue
            stderr = numbers.get(f"{metric}_stderr")
            lines.append(f"| {task} | {metric} | {_fmt(value)} | {_fmt(stderr) if stderr is not None else ''} | "
                         f"{shots if shots is not None else ''} |")
    settings = {k: v for k, v in _clean(metrics.get("settings") or {}).items()
                if k in ("limit", "apply_chat_template", "seed", "split", "pairs", "beta", "reference", "decoding",
                         "max_new_tokens", "device")}
    if settings:
        lines.append("\nSettings: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) + ".")
    return "\n".join(lines) + "\n"


def _samples_section(entry: dict[str, Any]) -> str:
    """A few of what the model said (an eval stage's samples), for a person to read."""
    samples = [s for s in (entry.get("metrics") or {}).get("samples") or [] if isinstance(s, dict) and "completion" in s]
    if not samples:
        return ""
    lines = [f"### Sample generations (stage `{entry.get('name')}`)\n"]
    for sample in samples:
        lines.append(f"**Prompt:** {sample.get('prompt', '')}\n\n```text\n{str(sample['completion']).rstrip()}\n```\n")
    return "\n".join(lines)


def plugins_of(lineage: list[dict[str, Any]], published_by: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every plugin that made a stage of the lineage or published it, once each (by name and code), with all
    it provided."""
    found: dict[tuple[Any, Any], dict[str, Any]] = {}
    for credits in [*(stage.get("plugins") or [] for stage in lineage), published_by]:
        for plugin in credits:
            key = (plugin.get("name"), plugin.get("code"))
            known = found.setdefault(key, {**plugin, "provides": [], "entries": []})
            for what in plugin.get("provides") or []:
                if what not in known["provides"]:
                    known["provides"].append(what)
            for entry in plugin.get("entries") or []:
                if entry not in known["entries"]:
                    known["entries"].append(entry)
    return list(found.values())


def _package(plugin: dict[str, Any]) -> str:
    if plugin.get("distribution"):
        return f"{plugin['distribution']} {plugin.get('version', '?')}"
    return str(plugin.get("origin") or "a local plugin file")


def _made_with_section(plugins: list[dict[str, Any]]) -> str:
    """The plugin packages (and their code) that made this model: what reproducing it needs installed."""
    if not plugins:
        return ""
    lines = ["## Made with\n", "| plugin | package | code | provides |", "|---|---|---|---|"]
    for plugin in plugins:
        code = str(plugin.get("code") or "")[:12]
        lines.append(f"| `{plugin.get('name')}` | {_package(plugin)} | `{code}` | {', '.join(plugin.get('provides') or [])} |")
    return "\n".join(lines) + "\n"


def _generic_section(entry: dict[str, Any]) -> str:
    lines = [f"## Stage `{entry.get('name')}` ({entry.get('kind')})\n"]
    numbers = _numeric(entry.get("metrics"))
    if numbers:
        lines.append("Metrics: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in numbers.items()) + ".")
    return "\n".join(lines) + "\n"


def _load_section(reference: str) -> str:
    return (
        "## How to load\n\n```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"model = AutoModelForCausalLM.from_pretrained({reference!r})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({reference!r})\n"
        'messages = [{"role": "user", "content": "Hello!"}]\n'
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)\n"
        "output = model.generate(**inputs, max_new_tokens=64)\n"
        "print(tokenizer.decode(output[0][inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))\n"
        "```\n"
    )


def _fmt(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
