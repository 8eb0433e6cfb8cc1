"""Wall time of an lm-eval eval stage against the same lm_eval.simple_evaluate call made directly.

Target (issue 13): the stage takes at most 1.05x the direct call on the same work. Both sides run as fresh
processes, as a user runs them: ``sakura run RECIPE --force eval`` (CLI start, plugins, plan, the stage, the
artifact) against ``python -c "lm_eval.simple_evaluate(...)"`` (lm-eval's own start). The model is a
generated Llama (the store keeps it: both sides read the same directory) and the task a multiple-choice task
of ROWS questions built from the demo's, scored by log-likelihood with few-shot examples.

Usage: python bench/eval.py [--rows 400] [--repeat 3] [--layers 8] [--hidden 512]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.05

DIRECT = """
import sys
import lm_eval
from lm_eval.tasks import TaskManager
model, tasks_dir, shots, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = lm_eval.simple_evaluate(
    model="hf", model_args={{"pretrained": model, "dtype": "auto"}}, tasks=["bench_trivia"], num_fewshot=shots,
    batch_size=batch, device="cpu", task_manager=TaskManager(include_path=tasks_dir), random_seed=0,
    numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0, log_samples=False,
)
print(out["results"]["bench_trivia"]["acc,none"])
"""


def write_task(folder: Path, rows: int) -> None:
    """The demo's 40 questions, repeated with their choices rotated, as a task of ``rows`` questions."""
    base = [json.loads(line) for line in (REPO / "recipes" / "tasks" / "sakura_trivia.jsonl").read_text().splitlines()]
    folder.mkdir(parents=True)
    with open(folder / "bench_trivia.jsonl", "w") as fh:
        for i in range(rows):
            row = base[i % len(base)]
            k = (i // len(base)) % 4
            choices = row["choices"][k:] + row["choices"][:k]
            fh.write(json.dumps({"question": row["question"], "choices": choices, "answer": (row["answer"] - k) % 4}) + "\n")
    task = (REPO / "recipes" / "tasks" / "sakura_trivia.yaml").read_text()
    task = task.replace("task: sakura_trivia", "task: bench_trivia").replace("tasks/sakura_trivia.jsonl", "tasks/bench_trivia.jsonl")
    (folder / "bench_trivia.yaml").write_text(task)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="sakura-bench-eval-") as tmp:
        root = Path(tmp)
        write_task(root / "tasks", args.rows)
        model = (f"tiny:llama?layers={args.layers}&hidden={args.hidden}&intermediate={args.hidden * 11 // 4}"
                 f"&heads=8&kv_heads=4&vocab=900&seed=1")
        (root / "r.toml").write_text(
            f'name = "bench-eval"\n[models]\nm = "{model}"\n[stages.eval]\nkind = "eval"\nmodel = "m"\n'
            f'evaluator = "lm-eval"\noptions = {{ tasks = ["bench_trivia"], task_files = ["tasks/bench_trivia.yaml"], '
            f'num_fewshot = {args.shots}, batch_size = {args.batch} }}\n'
        )
        sakura = [sys.executable, "-m", "sakura_core", "run", "r.toml", "--json", "-q"]
        first, out = timed(sakura, root, env)  # generates the model into the store, warms every cache
        stage = json.loads(out)["stages"][0]
        model_dir = next(p for p in (root / ".sakura" / "artifacts").iterdir() if (p / "config.json").is_file())
        ours_acc = stage["metrics"]["results"]["bench_trivia"]["acc"]
        direct = [sys.executable, "-c", DIRECT.format(), str(model_dir), str(root / "tasks"), str(args.shots), str(args.batch)]
        theirs, acc = timed(direct, root, env)  # warm
        assert abs(float(acc) - ours_acc) < 1e-12, (acc, ours_acc)
        ours_s, theirs_s = [], []
        for _ in range(args.repeat):  # interleaved, so drift in the machine's speed hits both alike
            ours_s.append(timed(sakura + ["--force", "eval"], root, env)[0])
            theirs_s.append(timed(direct, root, env)[0])
        shutil.rmtree(root / ".sakura", ignore_errors=True)
    ours_m, theirs_m = statistics.median(ours_s), statistics.median(theirs_s)
    ratio = ours_m / theirs_m
    print(f"work: {args.rows} questions x 4 choices, {args.shots}-shot, a {args.layers}-layer {args.hidden}-wide Llama, CPU")
    print(f"sakura run --force eval : {ours_m:.2f} s (median of {args.repeat}: {', '.join(f'{s:.2f}' for s in ours_s)})")
    print(f"lm_eval.simple_evaluate: {theirs_m:.2f} s (median of {args.repeat}: {', '.join(f'{s:.2f}' for s in theirs_s)})")
    print(f"ratio {ratio:.3f}x (target <= {TARGET}x): {'ok' if ratio <= TARGET else 'MISS'}; identical acc {ours_acc}")
    out_dir = REPO / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps({
        "rows": args.rows, "shots": args.shots, "layers": args.layers, "hidden": args.hidden, "batch": args.batch,
        "sakura_s": ours_s, "direct_s": theirs_s, "ratio": round(ratio, 4), "acc": ours_acc,
    }, indent=2))


if __name__ == "__main__":
    main()
