"""Wall time of a family of four variants, ``--executor ray`` against the local executor, in one run.

The family is bench/variants.py's (a SLERP merge of two generated Llamas, an orca dataset, DPO with LoRA, a
held-out preference eval, a local publish) with a fourth variant (another beta). Each executor runs it in a
fresh store: the local executor one stage after another, Ray (started on this machine for the run, one CPU
per stage) the variants' own stages side by side once the shared merge and data exist. With ``--gpu`` the
same on a CUDA machine (each stage then asks Ray for one GPU where it uses one).

Usage: python bench/scale.py [--repeat 2] [--layers 4] [--hidden 256] [--rows 64] [--steps 8]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variants import FAMILY, REPO  # noqa: E402 - the family bench/variants.py measures

FOURTH = '\n[variants.sharp]\n"stages.dpo.args.beta" = 0.3\n'


def sakura(where: Path, store: Path, *args: str) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sakura_core", "run", "family.toml", "--json", "-q", "--store", str(store),
                           *args], cwd=where, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"sakura run {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), wall


def ran(result: dict) -> int:
    """Distinct stages that ran (a shared stage is reported under every variant that has it)."""
    return len({s["fingerprint"] for v in result["variants"].values() for s in v["stages"] if s["status"] == "ran"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--gpu", action="store_true", help="run on CUDA (skipped with a line where there is none)")
    opts = parser.parse_args()
    if opts.gpu:
        import torch

        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here; nothing measured")
            return
    model = (f"tiny:llama?layers={opts.layers}&hidden={opts.hidden}&intermediate={opts.hidden * 2}"
             f"&heads={max(2, opts.hidden // 64)}&kv_heads=1")
    runs = []
    for i in range(opts.repeat):
        with tempfile.TemporaryDirectory(prefix="sakura-bench-scale-") as tmp:
            where = Path(tmp)
            shutil.copytree(REPO / "recipes" / "data", where / "data")
            (where / "family.toml").write_text(FAMILY.format(model=model, rows=opts.rows, steps=opts.steps) + FOURTH)
            order = [("local", ()), ("ray", ("--executor", "ray"))]
            if i % 2:
                order.reverse()  # neither executor always goes first (page cache, CPU clocks)
            row = {}
            for name, args in order:
                result, wall = sakura(where, where / f"store-{name}", *args)
                row[name] = wall
                row[f"{name}_ran"] = ran(result)
            runs.append(row)
        print(f"repeat {i + 1}: local {row['local']:.1f} s, ray {row['ray']:.1f} s "
              f"({row['local_ran']} / {row['ray_ran']} stages run)", flush=True)
    local, ray = statistics.median(r["local"] for r in runs), statistics.median(r["ray"] for r in runs)
    print(json.dumps({"model": model, "variants": 4, "rows": opts.rows, "steps": opts.steps, "repeat": opts.repeat,
                      "runs": runs, "median_local_s": round(local, 2), "median_ray_s": round(ray, 2),
                      "ray_over_local": round(ray / local, 3)}, indent=2))


if __name__ == "__main__":
    main()
