"""Dataset stage throughput and memory: sakura's ``dataset`` stage against a plain ``datasets.map`` pipeline.

Both read the same synthetic Intel/orca_dpo_pairs-schema JSON-lines file, map rows to trl's conversational
preference format, count tokens with a tokenizer's chat template (prompt with generation prompt, prompt +
chosen, prompt + rejected), drop rows over max_length / max_prompt_length and save the result with
``save_to_disk``. sakura also fingerprints the file, deduplicates prompts, shuffles with a seed and writes
stats.json. Each run is a child process (2 map workers each), timed from the start of the work (imports
excluded) to the saved dataset; the child reports its own peak RSS (ru_maxrss, which counts memory-mapped
Arrow pages it touched), its peak anonymous RSS (heap; sampled from /proc every 50 ms) and the largest
peak RSS of its map workers.

Target (issue 4): sakura >= 0.9x the rows/s of the plain pipeline; peak RSS flat from 100k to 1M rows.
Usage: flock /tmp/sakura-bench.lock python bench/data.py [--rows 100000] [--big-rows 1000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SAKURA_BENCH_DATA", Path(tempfile.gettempdir()) / "sakura-bench-data"))
MAX_LENGTH = 256
MAX_PROMPT_LENGTH = 128
NUM_PROC = 2
SYSTEMS = ["", "", "You are a helpful assistant.", "You are an AI assistant. You will be given a task."]


# -- synthetic data ----------------------------------------------------------------------------------
def make_file(rows: int) -> Path:
    """A deterministic orca-schema jsonl of ``rows`` rows (cached between runs)."""
    import numpy as np

    path = DATA_DIR / f"orca-synthetic-{rows}.jsonl"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "an", "el", "or", "um", "ba", "de", "fi", "go"]
    words = np.array(["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(3000)])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            lengths = rng.integers([4, 3, 3], [24, 20, 20], size=(n, 3))
            picks = rng.integers(0, len(words), size=(n, lengths.sum(axis=1).max()))
            systems = rng.integers(0, len(SYSTEMS), size=n)
            for i in range(n):
                q, c, r = lengths[i]
                text = words[picks[i]]
                row = {
                    "system": SYSTEMS[systems[i]],
                    "question": f"Row {start + i}: " + " ".join(text[:q]) + "?",
                    "chosen": " ".join(text[q : q + c]) + ".",
                    "rejected": " " + " ".join(text[q + c : q + c + r]) + ".",
                }
                fh.write(json.dumps(row) + "\n")
    tmp.rename(path)
    return path


def make_model() -> Path:
    from sakura_models.tiny import TinyOptions, generate_tiny_model

    path = DATA_DIR / "tiny-llama"
    if not (path / "config.json").exists():
        generate_tiny_model(TinyOptions(layers=1, seed=1), path)
    return path


# -- the two pipelines (run in a child process) -------------------------------------------------------
def run_sakura(data: Path, model: Path, work: Path) -> int:
    from sakura_core.engine import Engine
    from sakura_core.recipe import load_recipe

    recipe = work / "bench.toml"
    recipe.write_text(
        f'name = "bench"\nstore = "{work / "store"}"\n[models]\nm = "{model}"\n'
        "[stages.data]\nkind = \"dataset\"\n"
        f'sources = [{{ adapter = "orca", path = "{data}" }}]\n'
        f'tokenizer = "m"\nmax_length = {MAX_LENGTH}\nmax_prompt_length = {MAX_PROMPT_LENGTH}\nnum_proc = {NUM_PROC}\n'
    )
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf-cache")
    result = Engine(load_recipe(recipe)).run()
    if not result.ok:
        raise SystemExit(str(result.error))
    return result.outcome("data").metrics["rows_train"]


def run_plain(data: Path, model: Path, work: Path) -> int:
    """What one writes with ``datasets`` alone: load, map to messages, tokenize with the template, filter, save."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    ds = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=str(work / "hf-cache"))

    def to_messages(batch):
        out = {"prompt": [], "chosen": [], "rejected": []}
        for system, question, chosen, rejected in zip(batch["system"], batch["question"], batch["chosen"], batch["rejected"]):
            prompt = [{"role": "system", "content": system}] if system else []
            out["prompt"].append(prompt + [{"role": "user", "content": question.strip()}])
            out["chosen"].append([{"role": "assistant", "content": chosen.strip()}])
            out["rejected"].append([{"role": "assistant", "content": rejected.strip()}])
        return out

    def lengths(batch, tokenizer):
        template = tokenizer.apply_chat_template
        texts = template(batch["prompt"], tokenize=False, add_generation_prompt=True)
        texts += template([p + c for p, c in zip(batch["prompt"], batch["chosen"])], tokenize=False)
        texts += template([p + r for p, r in zip(batch["prompt"], batch["rejected"])], tokenize=False)
        ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        n = len(batch["prompt"])
        return {
            "prompt_len": [len(x) for x in ids[:n]],
            "total_len": [max(len(a), len(b)) for a, b in zip(ids[n : 2 * n], ids[2 * n :])],
        }

    ds = ds.map(to_messages, batched=True, remove_columns=ds.column_names, num_proc=NUM_PROC)
    ds = ds.map(lengths, batched=True, fn_kwargs={"tokenizer": tokenizer}, num_proc=NUM_PROC)
    ds = ds.filter(
        lambda b: [p <= MAX_PROMPT_LENGTH and t <= MAX_LENGTH for p, t in zip(b["prompt_len"], b["total_len"])],
        batched=True,
        num_proc=NUM_PROC,
    )
    ds = ds.remove_columns(["prompt_len", "total_len"])
    datasets.DatasetDict({"train": ds}).save_to_disk(str(work / "out"))
    return len(ds)


def rss_anon_kib() -> int:
    """Resident anonymous memory (heap, not file pages the kernel can drop) of this process, from /proc."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def child(pipeline: str, data: Path, model: Path) -> None:
    import threading

    work = Path(tempfile.mkdtemp(prefix=f"sakura-bench-{pipeline}-", dir=DATA_DIR))
    peak_anon = [rss_anon_kib()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak_anon[0] = max(peak_anon[0], rss_anon_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        start = time.perf_counter()
        kept = (run_sakura if pipeline == "sakura" else run_plain)(data, model, work)
        seconds = time.perf_counter() - start
    finally:
        done.set()
        sampler.join()
        shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "kept": kept,
                "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "anon_mib": peak_anon[0] / 1024,
                "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def measure(pipeline: str, data: Path, model: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", pipeline, "--data", str(data), "--model", str(model)],
        capture_output=True, text=True, env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"{pipeline} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--big-rows", type=int, default=1_000_000, help="0 to skip the memory comparison")
    parser.add_argument("--repeat", type=int, default=1, help="throughput runs per pipeline at --rows (best kept)")
    parser.add_argument("--child")
    parser.add_argument("--data")
    parser.add_argument("--model")
    args = parser.parse_args()
    if args.child:
        return child(args.child, Path(args.data), Path(args.model))

    model = make_model()
    results: dict[tuple[str, int], dict] = {}
    for rows, repeat in ((args.rows, args.repeat), (args.big_rows, 1)):
        if not rows:
            continue
        data = make_file(rows)
        for pipeline in ("plain", "sakura"):
            runs = [measure(pipeline, data, model) for _ in range(repeat)]
            results[(pipeline, rows)] = min(runs, key=lambda r: r["seconds"])
            r = results[(pipeline, rows)]
            print(f"# {pipeline:6s} {rows:>9,} rows: {r['seconds']:.1f} s, kept {r['kept']:,}, "
                  f"peak RSS {r['rss_mib']:.0f} MiB (anon {r['anon_mib']:.0f}, workers {r['worker_rss_mib']:.0f})", flush=True)

    print(f"\nmachine: {os.cpu_count()} CPUs; map workers per pipeline: {NUM_PROC}; tokenizer: tiny byte-level BPE "
          f"(vocab 512) with SOLAR's chat template; max_length {MAX_LENGTH}, max_prompt_length {MAX_PROMPT_LENGTH}\n")
    print("| pipeline | rows | seconds | rows/s | rows kept | peak RSS main (MiB) | peak anon RSS main (MiB) | peak RSS worker (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (pipeline, rows), r in results.items():
        print(f"| {pipeline} | {rows:,} | {r['seconds']:.1f} | {rows / r['seconds']:,.0f} | {r['kept']:,} | "
              f"{r['rss_mib']:.0f} | {r['anon_mib']:.0f} | {r['worker_rss_mib']:.0f} |")
    base, ours = results[("plain", args.rows)], results[("sakura", args.rows)]
    ratio = base["seconds"] / ours["seconds"]
    print(f"\nsakura / plain rows/s at {args.rows:,} rows: {ratio:.2f}x (target >= 0.9x)")
    if args.big_rows:
        for pipeline in ("plain", "sakura"):
            small, big = results[(pipeline, args.rows)], results[(pipeline, args.big_rows)]
            print(f"{pipeline}: peak RSS main {small['rss_mib']:.0f} -> {big['rss_mib']:.0f} MiB, "
                  f"anon {small['anon_mib']:.0f} -> {big['anon_mib']:.0f} MiB, "
                  f"worker {small['worker_rss_mib']:.0f} -> {big['worker_rss_mib']:.0f} MiB "
                  f"({args.rows:,} -> {args.big_rows:,} rows)")


if __name__ == "__main__":
    main()
