"""Stage work a family of variants saves: one recipe with three variants against each variant run as its own
recipe in a fresh store.

The family (issue 14's): a SLERP merge of two generated Llamas, an orca dataset, DPO with LoRA, a held-out
preference eval and a local publish; variants ``fast`` and ``slow`` differ in the learning rate, ``nosys`` in
the dataset (orca without its system prompts). Run as a family the merge runs once, the data twice (two
dataset mixes), and the reference log-probs are computed twice (the two learning-rate variants share one
pass through the store's reference cache). Run apart, each variant does all of it.

Measured: the sum of the seconds of every stage that ran (``run --json``'s per-stage ``seconds``) and the
wall time of the commands, family against the three separate runs, in one invocation; the ratio is the
family's over the separate runs'. Each repeat uses fresh stores.

Usage: python bench/variants.py [--repeat 3] [--layers 4] [--hidden 256] [--rows 64] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("fast", "slow", "nosys")

FAMILY = """
name = "bench-family"

[models]
solar = "{model}&seed=1"
sauerkraut = "{model}&seed=2"

[stages.merge]
kind = "merge"
merge_method = "slerp"
base_model = "solar"
models = [{{ model = "solar" }}, {{ model = "sauerkraut" }}]
parameters = {{ t = 0.5 }}
dtype = "float32"

[stages.data]
kind = "dataset"
sources = [{{ adapter = "orca", path = "data/tiny_orca.jsonl", max_rows = {rows} }}]
tokenizer = "merge"
max_length = 512
test_size = 8

[stages.dpo]
kind = "train"
model = "merge"
dataset = "data"
lora = {{ r = 8, alpha = 16, dropout = 0.0 }}
args = {{ learning_rate = 1e-4, beta = 0.1, per_device_train_batch_size = 4, max_steps = {steps}, seed = 1 }}

[stages.heldout]
kind = "eval"
model = "dpo"
evaluator = "preference"
inputs = {{ dataset = "data" }}

[stages.publish]
kind = "publish"
publisher = "local"
model = "dpo"
path = "dist/{{variant}}"

[variants.fast]
"stages.dpo.args.learning_rate" = 1e-4

[variants.slow]
"stages.dpo.args.learning_rate" = 5e-5

[variants.nosys]
"stages.data.sources" = [{{ adapter = "orca", path = "data/tiny_orca.jsonl", max_rows = {rows}, options = {{ system = false }} }}]
"""


def sakura(where: Path, store: Path, *args: str) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sakura_core", "run", "family.toml", "--json", "-q", "--store", str(store), *args],
                          cwd=where, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"sakura run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), wall


def stage_seconds(result: dict) -> dict[str, list[float]]:
    """Seconds of each stage that ran, by stage name; each distinct stage once (a family reports a shared
    stage under every variant that has it)."""
    ran: dict[str, tuple[str, float]] = {}
    for variant in result["variants"].values():
        for stage in variant["stages"]:
            if stage["status"] == "ran":
                ran[stage["fingerprint"]] = (stage["name"], stage["seconds"])
    by_name: dict[str, list[float]] = {}
    for name, seconds in ran.values():
        by_name.setdefault(name, []).append(seconds)
    return by_name


def one_repeat(where: Path) -> dict:
    family, family_wall = sakura(where, where / "store-family")
    family_stages = stage_seconds(family)
    apart_stages: dict[str, list[float]] = {}
    apart_wall = 0.0
    for variant in VARIANTS:
        alone, wall = sakura(where, where / f"store-{variant}", "--variant", variant)
        apart_wall += wall
        for name, seconds in stage_seconds(alone).items():
            apart_stages.setdefault(name, []).extend(seconds)
    out = {"family_stage_s": sum(map(sum, family_stages.values())), "apart_stage_s": sum(map(sum, apart_stages.values())),
           "family_wall_s": family_wall, "apart_wall_s": apart_wall,
           "family_stages_run": sum(map(len, family_stages.values())), "apart_stages_run": sum(map(len, apart_stages.values()))}
    for name in apart_stages:  # per stage: how many ran and their seconds, family / apart
        out[f"{name}_s"] = f"{len(family_stages.get(name, []))}x {sum(family_stages.get(name, [])):.2f} / " \
                           f"{len(apart_stages[name])}x {sum(apart_stages[name]):.2f}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    opts = parser.parse_args()
    model = (f"tiny:llama?layers={opts.layers}&hidden={opts.hidden}&intermediate={opts.hidden * 2}"
             f"&heads={max(2, opts.hidden // 64)}&kv_heads=1")
    runs = []
    for i in range(opts.repeat):
        with tempfile.TemporaryDirectory(prefix="sakura-bench-variants-") as tmp:
            where = Path(tmp)
            shutil.copytree(REPO / "recipes" / "data", where / "data")
            (where / "family.toml").write_text(FAMILY.format(model=model, rows=opts.rows, steps=opts.steps))
            runs.append(one_repeat(where))
        r = runs[-1]
        print(f"repeat {i + 1}: stage seconds family {r['family_stage_s']:.2f} / apart {r['apart_stage_s']:.2f} "
              f"({r['family_stages_run']} / {r['apart_stages_run']} stages run); wall {r['family_wall_s']:.1f} / "
              f"{r['apart_wall_s']:.1f} s", flush=True)
    numeric = [key for key in runs[0] if not isinstance(runs[0][key], str)]
    med = {key: statistics.median(r[key] for r in runs) for key in numeric}
    med["per_stage (last repeat)"] = {key: value for key, value in runs[-1].items() if key not in numeric}
    print(json.dumps({"model": model, "rows": opts.rows, "steps": opts.steps, "repeat": opts.repeat, "median": med,
                      "stage_ratio": round(med["family_stage_s"] / med["apart_stage_s"], 3),
                      "wall_ratio": round(med["family_wall_s"] / med["apart_wall_s"], 3)}, indent=2))


if __name__ == "__main__":
    main()
