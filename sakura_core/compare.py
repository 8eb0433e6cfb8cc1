"""``sakura compare``: the variants of a recipe side by side, from what their stages left in the store.

A row per variant: the values that differ between variants (their overrides), then every stage's headline
numbers (``StageKind.headline``: a train stage's final loss and reward accuracy, an eval stage's scores),
the best value of each column marked; curves (``StageKind.curves``) for the HTML report's plots. Nothing runs:
a stage not built yet shows as missing.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

from sakura_core.engine import Engine
from sakura_core.errors import RecipeError, did_you_mean
from sakura_core.recipe import Family


@dataclass
class Column:
    name: str
    kind: str  # "setting" (a value that differs between variants) or "metric"
    higher_is_better: bool | None = None  # metrics only

    def best(self, values: list[Any]) -> Any:
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if self.kind != "metric" or not numbers or len(numbers) < 2:
            return None
        return max(numbers) if self.higher_is_better else min(numbers)


@dataclass
class Comparison:
    recipe: str
    columns: list[Column]
    rows: dict[str, dict[str, Any]]  # variant -> column -> value (None: not built)
    curves: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)  # series -> variant -> points

    def best(self) -> dict[str, Any]:
        return {c.name: c.best([row.get(c.name) for row in self.rows.values()]) for c in self.columns}

    def sorted_by(self, metric: str | None) -> list[str]:
        if metric is None:
            return list(self.rows)
        column = self.column(metric)
        present = [v for v in self.rows if isinstance(self.rows[v].get(column.name), (int, float))]
        ordered = sorted(present, key=lambda v: self.rows[v][column.name], reverse=bool(column.higher_is_better))
        return ordered + [v for v in self.rows if v not in present]

    def column(self, name: str) -> Column:
        exact = [c for c in self.columns if c.name == name]
        found = exact or [c for c in self.columns if c.name.endswith(f" {name}") and c.kind == "metric"]
        if len(found) == 1:
            return found[0]
        names = [c.name for c in self.columns if c.kind == "metric"]
        if not found:
            raise RecipeError(f"--sort {name}: no such metric{did_you_mean(name, names)} (metrics: {', '.join(names) or 'none'})")
        raise RecipeError(f"--sort {name}: several metrics end so ({', '.join(c.name for c in found)}): name one whole")

    def as_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "columns": [{"name": c.name, "kind": c.kind, "higher_is_better": c.higher_is_better} for c in self.columns],
            "rows": self.rows,
            "best": self.best(),
            "curves": {series: {v: [list(p) for p in points] for v, points in by.items()} for series, by in self.curves.items()},
        }


def compare(family: Family) -> Comparison:
    settings = list(dict.fromkeys(key for variant in family.declared or [] for key in variant.overrides))
    columns = [Column(key, "setting") for key in settings]
    metrics: dict[str, Column] = {}
    rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name, recipe in family.variants.items():
        data = tomllib.loads(recipe.text)
        row: dict[str, Any] = {key: value_at(data, key) for key in settings}
        engine = Engine(recipe)
        plan = engine.plan()
        for stage, node in plan.stages.items():
            artifact = engine.store.lookup(node.fingerprint)
            if artifact is None:
                continue
            stage_metrics = artifact.manifest.get("metrics") or {}
            for metric, (value, higher) in node.stage.kind.headline(stage_metrics).items():
                column = metrics.setdefault(f"{stage} {metric}", Column(f"{stage} {metric}", "metric", higher))
                row[column.name] = value
            for series, points in node.stage.kind.curves(artifact.path, stage_metrics).items():
                curves.setdefault(f"{stage} {series}", {})[name] = points
        rows[name] = row
    return Comparison(family.name, columns + list(metrics.values()), rows, curves)


def value_at(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def as_csv(comparison: Comparison, order: list[str]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["variant", *[c.name for c in comparison.columns]])
    for variant in order:
        row = comparison.rows[variant]
        writer.writerow([variant, *[json.dumps(row.get(c.name)) if isinstance(row.get(c.name), (list, dict))
                                    else ("" if row.get(c.name) is None else row.get(c.name)) for c in comparison.columns]])
    return out.getvalue()


def as_markdown(comparison: Comparison, order: list[str]) -> str:
    best = comparison.best()
    lines = ["| variant | " + " | ".join(c.name for c in comparison.columns) + " |",
             "|---|" + "---|" * len(comparison.columns)]
    for variant in order:
        row = comparison.rows[variant]
        cells = []
        for c in comparison.columns:
            cell = text(row.get(c.name))
            if best[c.name] is not None and row.get(c.name) == best[c.name]:
                cell = f"**{cell}**"
            cells.append(cell.replace("|", "\\|"))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
