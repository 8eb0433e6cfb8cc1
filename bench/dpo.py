"""DPO throughput: sakura's train stage vs a plain trl DPOTrainer vs trl with its best flags.

    flock /tmp/sakura-bench.lock python bench/dpo.py            # CPU: tiny Llama, ~128 tokens per pair
    python bench/dpo.py --gpu                                    # CUDA: TinyLlama-1.1B shape, ~1000 tokens/pair, bf16

The data is exactly one epoch of the measured run (rows = steps x batch), so a reference pass over the
whole dataset costs what it would in a real run. Same model, same data, same hyperparameters (full fine-tuning, batch 8, lr 5e-7, beta 0.1); each
configuration runs in its own process (liger patches model classes process-wide), and each measures
after a warm-up run of the same configuration in that process:

- trl_defaults: ``DPOTrainer`` with DPOConfig's defaults (separate reference model, activation
  checkpointing on, bf16 autocast wherever trl turns it on, also on CPU).
- trl_tuned: the peer baseline's flags: activation checkpointing off, bf16 only where the hardware has it.
- trl_best: trl_tuned + ``precompute_ref_log_probs`` + liger kernels (only where liger-kernel is installed
  and CUDA runs; skipped cleanly otherwise).
- sakura: the ``train`` stage through the engine, reference cache cold (its reference pass counted).
- sakura_warm: the same stage with other hyperparameters re-run on a warm reference cache.

pairs/s and tokens/s cover the training steps (first step start to train end); ``stage_s`` is the whole
stage: model load, tokenization, reference pass, training, saving. Tokens are the non-padding tokens of
both sequences of each pair (2 x prompt + chosen + rejected), as trl counts them. MFU = (6 or 8, with a
live reference forward) x params x tokens/s / peak FLOP/s (989 TFLOP/s bf16 on H100/H200; on CPU the
fp32 matmul peak measured in the same process right after its run, so that load from other processes
on a shared machine affects both sides; still, CPU MFU here is a rough figure).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ["trl_defaults", "trl_tuned", "trl_best", "sakura", "sakura_warm"]

SHAPES = {
    "cpu": dict(hidden=256, layers=4, intermediate=688, heads=4, kv_heads=2, vocab=2048, tokens=144, rows=96,
                steps=12, warmup=3, batch=8, max_length=512),
    "gpu": dict(hidden=2048, layers=22, intermediate=5632, heads=32, kv_heads=4, vocab=32000, tokens=1050, rows=256,
                steps=32, warmup=4, batch=8, max_length=1024),
}

DATA_PLUGIN = '''
import shutil
from sakura_core import hookimpl
from sakura_core.options import Options
from sakura_core.stage import StageKind


class BenchDataOptions(Options):
    path: str


class BenchData(StageKind):
    """The benchmark's preference rows as a dataset artifact (dataset/ DatasetDict + stats.json)."""

    Options = BenchDataOptions

    def run(self, ctx):
        shutil.copytree(ctx.options.path, ctx.output_dir / "dataset")
        (ctx.output_dir / "stats.json").write_text("{}")
        return {}


@hookimpl
def sakura_register_stage_kinds(register):
    register("bench_data", BenchData())
'''


# -- setup (parent process) ---------------------------------------------------------------------------
def make_model(shape: dict, out: Path, bf16: bool) -> None:
    import torch
    import transformers

    from sakura_models.tiny import SOLAR_CHAT_TEMPLATE, build_tokenizer

    tokenizer = build_tokenizer(min(shape["vocab"], 4096), SOLAR_CHAT_TEMPLATE)
    config = transformers.LlamaConfig(
        vocab_size=max(shape["vocab"], len(tokenizer)), hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"], max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16 if bf16 else torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def make_data(shape: dict, model_dir: Path, out: Path) -> float:
    """Preference rows sized so that 2 x prompt + chosen + rejected is about ``shape["tokens"]`` tokens."""
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(1)
    corpus = (REPO / "plugins" / "sakura_models" / "corpus.txt").read_text().split()

    def text(tokens: float) -> str:
        """Random corpus words cut to ``tokens`` tokens."""
        words = " ".join(rng.choice(corpus) for _ in range(2 * int(tokens) + 8))
        ids = tokenizer(words, add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[: max(1, int(tokens))])

    def length(messages: list, generation: bool = False) -> int:
        return len(tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=True,
                                                 return_dict=True)["input_ids"])

    quarter = shape["tokens"] / 4  # prompt counted twice (once per sequence), chosen once, rejected once
    system = [{"role": "system", "content": "You are a helpful assistant."}]
    overhead = length(system + [{"role": "user", "content": "x"}], generation=True)
    rows = []
    for _ in range(shape["rows"]):
        rows.append({
            "prompt": system + [{"role": "user", "content": text(quarter * rng.uniform(0.8, 1.2) - overhead)}],
            "chosen": [{"role": "assistant", "content": text(quarter * rng.uniform(0.8, 1.2) - 4)}],
            "rejected": [{"role": "assistant", "content": text(quarter * rng.uniform(0.8, 1.2) - 4)}],
        })
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(out))
    total = 0
    sample = rows[:64]
    for r in sample:
        p = length(r["prompt"], generation=True)
        total += 2 * p + (length(r["prompt"] + r["chosen"]) - p) + (length(r["prompt"] + r["rejected"]) - p)
    return total / len(sample)


# -- one configuration (child process) ----------------------------------------------------------------
def common_args(shape: dict, steps: int, out: Path) -> dict:
    return dict(
        output_dir=str(out), per_device_train_batch_size=shape["batch"], max_steps=steps, learning_rate=5e-7,
        beta=0.1, max_length=shape["max_length"], logging_steps=1, report_to="none", save_strategy="no",
        seed=42, disable_tqdm=True,
    )


def run_trl(config: str, shape: dict, work: Path, steps: int, gpu: bool) -> dict:
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    class Clock(TrainerCallback):
        start = end = 0.0

        def on_step_begin(self, args, state, control, **kw):
            if not self.start:
                self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.end = time.perf_counter()

    started = time.perf_counter()
    args = common_args(shape, steps, work / f"out-{config}-{steps}")
    if config != "trl_defaults":
        args.update(activation_checkpointing=False, bf16=bool(gpu and torch.cuda.is_bf16_supported()))
    if not gpu:
        args["use_cpu"] = True
    if config == "trl_best":
        args["precompute_ref_log_probs"] = True
        if gpu and _has_liger():
            args["use_liger_kernel"] = True
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    data = datasets.load_from_disk(str(work / "data"))["train"]
    clock = Clock()
    trainer = trl.DPOTrainer(model=model, args=trl.DPOConfig(**args), train_dataset=data, processing_class=tokenizer,
                             callbacks=[clock])
    trainer.train()
    trainer.save_model(str(work / f"saved-{config}-{steps}"))
    stage_s = time.perf_counter() - started
    tokens = trainer.state.log_history[-2].get("num_tokens") or next(
        h["num_tokens"] for h in reversed(trainer.state.log_history) if "num_tokens" in h
    )
    n = sum(p.numel() for p in model.parameters())
    live_ref = not args.get("precompute_ref_log_probs")
    return _result(clock.end - clock.start, tokens, steps * shape["batch"], n, live_ref, stage_s,
                   liger=bool(args.get("use_liger_kernel")), loss=trainer.state.log_history[-1].get("train_loss"))


def run_sakura(config: str, shape: dict, work: Path, steps: int, gpu: bool, store: Path, lr: float) -> dict:
    from sakura_core.engine import Engine
    from sakura_core.recipe import load_recipe

    recipe_dir = work / f"recipe-{config}"
    recipe_dir.mkdir(exist_ok=True)
    (recipe_dir / "bench_data.py").write_text(DATA_PLUGIN)
    args = {k: v for k, v in common_args(shape, steps, work).items()
            if k not in ("output_dir", "report_to", "disable_tqdm", "save_strategy", "logging_steps")}
    args["learning_rate"] = lr
    body = f'''
    name = "bench-dpo"
    plugins = ["bench_data.py"]
    [models]
    base = {{ source = "local", path = "{work / 'model'}" }}
    [stages.data]
    kind = "bench_data"
    path = "{work / 'data'}"
    [stages.dpo]
    kind = "train"
    trainer = "dpo"
    model = "base"
    dataset = "data"
    args = {_toml_args(args)}
    '''
    path = recipe_dir / "bench.toml"
    path.write_text(textwrap.dedent(body))
    recipe = load_recipe(path, store=str(store))
    result = Engine(recipe).run()
    if not result.ok:
        raise SystemExit(str(result.error))
    outcome = result.outcome("dpo")
    m = outcome.metrics
    return _result(m["train_seconds"], m["tokens"], steps * shape["batch"], m["params"], False, outcome.seconds,
                   ref_cache_hit=m.get("ref_cache_hit"), ref_pass_s=m.get("ref_pass_seconds"), loss=m.get("loss"))


def _toml_args(args: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items()) + " }"


def _has_liger() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def _result(train_s: float, tokens: float, pairs: int, params: int, live_ref: bool, stage_s: float, **extra) -> dict:
    import torch

    from sakura_trl.metrics import peak_flops

    flops, source = peak_flops(seconds=0.5)
    tok_s = tokens / train_s
    factor = 8 if live_ref else 6
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "train_s": round(train_s, 3), "pairs_per_s": round(pairs / train_s, 3), "tokens_per_s": round(tok_s, 1),
        "mfu": round(factor * params * tok_s / flops, 4) if flops else None, "mfu_peak": source,
        "peak_gib": round(peak, 3), "stage_s": round(stage_s, 2), "params": params, "flops_factor": factor, **extra,
    }


def child(config: str, work: Path, device: str) -> None:
    import torch

    shape = SHAPES[device]
    gpu = device == "gpu"
    torch.manual_seed(0)
    if config.startswith("trl"):
        run_trl(config, shape, work, shape["warmup"], gpu)  # warm-up: same configuration, fewer steps
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        result = run_trl(config, shape, work, shape["steps"], gpu)
    else:
        # Warm-up in its own store (warm for sakura_warm: the measured run then finds the reference cache).
        warm_store = work / f"store-{config}"
        shutil.rmtree(warm_store, ignore_errors=True)
        run_sakura(config, shape, work, shape["warmup"], gpu, warm_store, lr=1e-6)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        store = warm_store if config == "sakura_warm" else work / f"store-{config}-cold"
        shutil.rmtree(work / f"store-{config}-cold", ignore_errors=True)
        result = run_sakura(config, shape, work, shape["steps"], gpu, store, lr=5e-7)
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# -- driver -------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="TinyLlama-1.1B shape, ~1000 tokens/pair, bf16 (needs CUDA)")
    parser.add_argument("--only", nargs="*", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeat", type=int, help="rounds over all configurations (median reported); "
                        "default 3 on CPU, 1 on GPU")
    parser.add_argument("--keep", action="store_true", help="keep the generated model and data")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    device = "gpu" if opts.gpu else "cpu"
    if opts.child:
        child(opts.child, opts.work, device)
        return 0

    import torch

    if opts.gpu and not torch.cuda.is_available():
        print("skipped: --gpu needs CUDA, and this machine has none")
        return 0
    shape = SHAPES[device]
    opts.repeat = opts.repeat or (1 if opts.gpu else 3)

    work = Path(tempfile.mkdtemp(prefix="sakura-bench-dpo-"))
    try:
        make_model(shape, work / "model", bf16=opts.gpu)
        tokens_per_pair = make_data(shape, work / "model", work / "data")
        print(f"model: Llama hidden={shape['hidden']} layers={shape['layers']} vocab={shape['vocab']}; "
              f"{tokens_per_pair:.0f} tokens/pair; batch {shape['batch']}, {shape['steps']} steps after "
              f"{shape['warmup']} warm-up steps; full fine-tuning; torch threads {torch.get_num_threads()}")
        runs: dict[str, list[dict]] = {c: [] for c in opts.only}
        for round_ in range(opts.repeat):  # round-robin, so load from other processes spreads over all configs
            for config in opts.only:
                if round_ == 0 and config == "trl_best" and not (opts.gpu and _has_liger()):
                    note = "liger-kernel not installed" if not _has_liger() else "liger needs CUDA"
                    print(f"{config}: liger skipped ({note}); precompute_ref_log_probs only")
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, __file__, "--child", config, "--work", str(work)] + (["--gpu"] if opts.gpu else []),
                    capture_output=True, text=True,
                    env={**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"},
                )
                lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
                if done.returncode or not lines:
                    print(f"{config}: FAILED\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
                    continue
                runs[config].append(json.loads(lines[-1][len("BENCH_RESULT "):]))
                print(f"round {round_ + 1} {config}: {runs[config][-1]['pairs_per_s']:.2f} pairs/s, "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
        results = {c: median_run(r) for c, r in runs.items() if r}
        print_table(results)
        if opts.json:
            opts.json.write_text(json.dumps(
                {"shape": shape, "tokens_per_pair": tokens_per_pair, "results": results, "runs": runs}, indent=2))
    finally:
        if opts.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def median_run(runs: list[dict]) -> dict:
    """The run with the median pairs/s, with the spread of all runs beside it."""
    ordered = sorted(runs, key=lambda r: r["pairs_per_s"])
    out = dict(ordered[len(ordered) // 2])
    out["pairs_per_s_all"] = [r["pairs_per_s"] for r in runs]
    out["stage_s_all"] = [r["stage_s"] for r in runs]
    return out


def print_table(results: dict) -> None:
    base = results.get("trl_defaults", {}).get("pairs_per_s")
    print()
    print("| configuration | pairs/s (median) | pairs/s all runs | tokens/s | MFU | peak mem GiB | stage s "
          "(incl. ref pass) | vs trl defaults |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{r['pairs_per_s'] / base:.2f}x" if base else "-"
        mfu = f"{100 * r['mfu']:.2f}%" if r.get("mfu") is not None else "-"
        spread = ", ".join(f"{x:.1f}" for x in r["pairs_per_s_all"])
        print(f"| {name} | {r['pairs_per_s']:.2f} | {spread} | {r['tokens_per_s']:.0f} | {mfu} | {r['peak_gib']:.2f} | "
              f"{r['stage_s']:.1f} | {ratio} |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
