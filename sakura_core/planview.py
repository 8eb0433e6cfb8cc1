"""What ``sakura plan`` shows: each stage's inputs, fingerprint, status and estimates; for a family of variants,
the variant x stage grid (shared, cached or to run) with totals.

Everything comes from the plan and the models' config.json files: no weights are downloaded.
"""

from __future__ import annotations

from typing import Any

from sakura_core.engine import Engine
from sakura_core.recipe import Recipe


def describe_plan(recipe: Recipe, gpu: dict[str, Any] | None) -> dict[str, Any]:
    """One recipe's plan as a JSON-able document: stages with status and estimates, models, the GPU."""
    from sakura_core import estimate as est

    engine = Engine(recipe)
    the_plan = engine.plan()
    statuses = engine.statuses(the_plan)
    estimates = est.estimate_plan(the_plan, engine.env)  # from config.json files only; never an error
    rows = []
    for name, node in the_plan.stages.items():
        found = estimates.stages.get(name)
        estimate = found.as_json() if found is not None else None
        if gpu and found is not None and found.memory and found.device == "gpu":
            estimate["fits_gpu"] = est.fits(found.memory_bytes, gpu)  # type: ignore[index]
        rows.append({
            "stage": name,
            "kind": node.stage.kind_name,
            "plugin": node.plugin,
            "plugins": [c.plugin.label for c in node.credits],
            "reads": node.stage.depends_on,
            "fingerprint": node.fingerprint,
            **statuses[name],
            "estimate": estimate,
        })
    models = {alias: ({**m, "downloads": the_plan.sources[alias].model.source.downloads} if m else m)
              for alias, m in estimates.models.items()}
    return {"recipe": recipe.name, "path": str(recipe.path), "stages": rows, "models": models, "gpu": gpu,
            "lines": [line for name, found in estimates.stages.items() if found is not None and (line := est.describe(name, found))]}


def print_plan(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from sakura_core import estimate as est

    table = Table(title=f"{doc['recipe']} ({doc['path']})", title_justify="left")
    for column in ("stage", "kind", "reads", "fingerprint", "status"):
        table.add_column(column, no_wrap=column != "reads")
    table.add_column("disk", justify="right", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    for row in doc["stages"]:
        colour = "cyan" if row["status"] == "cached" else "yellow"
        table.add_row(row["stage"], row["kind"], ", ".join(row["reads"]), row["fingerprint"][:12],
                      f"[{colour}]{row['status']}[/]", *disk_and_memory(row["estimate"]))
    console = Console()
    console.print(table)
    for row in doc["stages"]:
        for note in row["notes"]:
            console.print(f"  {escape(row['stage'])}: {escape(note)}", highlight=False)
    if doc["lines"]:
        console.print("Estimated from the models' config.json (GPU: PyTorch's peak on one device, without the CUDA context):")
        for line in doc["lines"]:
            console.print("  " + escape(line), highlight=False)
    models = [f"{alias} {est.count(m['params'])} params, {est.human(m['bytes'])}" + (" to download" if m["downloads"] else "")
              for alias, m in doc["models"].items() if m]
    if models:
        console.print("  models: " + escape("; ".join(models)), highlight=False)
    gpu = doc["gpu"]
    if gpu:
        needs = {row["stage"]: row["estimate"]["memory_bytes"] for row in doc["stages"]
                 if row["estimate"] and row["estimate"].get("fits_gpu") is not None}
        too_big = [f"{name} (~{est.human(n)})" for name, n in needs.items() if not est.fits(n, gpu)]
        verdict = ("does not fit: " + ", ".join(too_big)) if too_big else ("every stage fits" if needs else "no GPU estimate")
        console.print(f"  this GPU: {escape(gpu['name'])}, {est.human(gpu['total_bytes'])} ({est.human(gpu['free_bytes'])} free): "
                      f"{verdict}", highlight=False)


def disk_and_memory(estimate: dict[str, Any] | None) -> tuple[str, str]:
    from sakura_core import estimate as est

    if not estimate:
        return "-", "-"
    disk = est.human(estimate["disk_bytes"]) if estimate["disk_bytes"] else "-"
    if not estimate["disk_bytes"] and estimate.get("upload_bytes") is not None:
        disk = f"upload {est.human(estimate['upload_bytes'])}"
    memory = "-"
    if estimate["memory_bytes"]:
        memory = f"{'GPU' if estimate['memory_device'] == 'gpu' else 'CPU'} {est.human(estimate['memory_bytes'])}"
    return disk, memory


def family_grid(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The variant x stage grid: per stage and variant its status, and whether the artifact is shared (the same
    fingerprint in several variants: built once); totals over the distinct stages that will run."""
    by_fingerprint: dict[str, list[str]] = {}
    for variant, doc in docs.items():
        for row in doc["stages"]:
            by_fingerprint.setdefault(row["fingerprint"], []).append(variant)
    stages: list[str] = []
    for doc in docs.values():
        stages += [row["stage"] for row in doc["stages"] if row["stage"] not in stages]
    grid: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for variant, doc in docs.items():
        for row in doc["stages"]:
            shared = by_fingerprint[row["fingerprint"]]
            grid.setdefault(row["stage"], {})[variant] = {"status": row["status"], "shared_with": len(shared),
                                                          "fingerprint": row["fingerprint"]}
            if row["status"] == "will run":
                runs.setdefault(row["fingerprint"], row)
    disk = sum((r["estimate"] or {}).get("disk_bytes") or 0 for r in runs.values())
    peaks = [(r["estimate"] or {}).get("memory_bytes") or 0 for r in runs.values()
             if (r["estimate"] or {}).get("memory_device") == "gpu"]
    return {"stages": stages, "grid": grid, "totals": {"stages_to_run": len(runs), "disk_bytes": disk,
                                                       "peak_gpu_bytes": max(peaks) if peaks else None}}


def print_family_plan(name: str, docs: dict[str, dict[str, Any]], grid: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from sakura_core import estimate as est

    variants = list(docs)
    table = Table(title=f"{name}: {len(variants)} variants (a row each; ×N: one artifact shared by N variants, built once)",
                  title_justify="left")
    table.add_column("variant", no_wrap=True, min_width=8)
    for stage in grid["stages"]:
        table.add_column(stage, no_wrap=True)
    for variant in variants:
        cells = []
        for stage in grid["stages"]:
            cell = grid["grid"].get(stage, {}).get(variant)
            if cell is None:
                cells.append("")
                continue
            colour = "cyan" if cell["status"] == "cached" else "yellow"
            shared = f" ×{cell['shared_with']}" if cell["shared_with"] > 1 else ""
            cells.append(f"[{colour}]{'run' if cell['status'] == 'will run' else cell['status']}[/]{shared}")
        table.add_row(variant, *cells)
    console = Console()
    console.print(table)
    totals = grid["totals"]
    console.print(f"  To run: {totals['stages_to_run']} distinct stages, disk "
                  f"{est.human(totals['disk_bytes']) if totals['disk_bytes'] else '-'}, peak GPU "
                  f"{est.human(totals['peak_gpu_bytes']) if totals['peak_gpu_bytes'] else '-'}", highlight=False)
    first = next(iter(docs.values()))
    if first["lines"]:
        console.print("Estimated per stage from the models' config.json (the first variant's):")
        for line in first["lines"]:
            console.print("  " + escape(line), highlight=False)
    for variant, doc in docs.items():
        for row in doc["stages"]:
            for note in row["notes"]:
                console.print(f"  {escape(variant)} {escape(row['stage'])}: {escape(note)}", highlight=False)
