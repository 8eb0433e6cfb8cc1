"""Benchmark: sakura's merge executor against ``mergekit-yaml`` on the same config and models, in one run.

    flock /tmp/sakura-bench.lock python bench/merge.py                 # 200M-parameter Llama pair, CPU
    flock /tmp/sakura-bench.lock python bench/merge.py --shape tinyllama  # TinyLlama-1.1B shape (GPU target)

    flock /tmp/sakura-bench.lock python bench/merge.py --methods       # every mergekit method, 200M models
    flock /tmp/sakura-bench.lock python bench/merge.py --methods --only ties --only della --repeat 1

Models are random (saved as safetensors, cached under --models-dir). The config is the Sakura SLERP (layer
gradients for self_attn and mlp, fallback 0.5; dtype float16). Each tool runs in its own child process;
reported per run: wall time, peak host RSS of the child (ru_maxrss), peak GPU memory (torch allocator, when
CUDA is used), and the I/O floor (reading every input byte plus writing an output of the same size).

``--methods`` runs the conformance suite's configuration of every method mergekit registers
(tests/test_mergekit_conformance.py ``METHODS``: filters, gradients, seeds) on three models of the shape
instead, each through both tools, and reports sakura's time against mergekit's per method (the methods
sakura does not port run through mergekit's executor in both).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    # ~201M parameters: hidden 1024, 12 layers, vocab 32000 (untied)
    "200m": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 12, "num_attention_heads": 16,
             "num_key_value_heads": 4, "vocab_size": 32000},
    # twice the 200m model's layers (~336M parameters): time should roughly double, host memory stay flat
    "400m": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 4, "vocab_size": 32000},
    # TinyLlama-1.1B's shape: 1.1B parameters
    "tinyllama": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
                  "num_key_value_heads": 4, "vocab_size": 32000},
    # for quick checks of the script itself
    "small": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 4096},
}

CONFIG = """\
slices:
  - sources:
      - model: {a}
        layer_range: [0, {layers}]
      - model: {b}
        layer_range: [0, {layers}]
merge_method: slerp
base_model: {b}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float16
"""


# -- models -----------------------------------------------------------------------------------------
def make_model(directory: Path, shape: dict, seed: int, dtype: str) -> None:
    """A random Llama with the given shape, written as safetensors shards (no full model in memory)."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from sakura_models.tiny import SOLAR_CHAT_TEMPLATE, build_tokenizer

    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = LlamaConfig(**shape, tie_word_embeddings=False, max_position_embeddings=2048, rms_norm_eps=1e-5)
    config.dtype = dtype
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(tmp)
    build_tokenizer(512, SOLAR_CHAT_TEMPLATE).save_pretrained(tmp)
    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(seed)
    h, inter, kv = shape["hidden_size"], shape["intermediate_size"], shape["num_key_value_heads"]
    head_dim = h // shape["num_attention_heads"]

    def rand(*dims):
        return (torch.randn(*dims, generator=generator) * 0.02).to(torch_dtype)

    def norm(n):
        return (1 + torch.randn(n, generator=generator) * 0.02).to(torch_dtype)

    shards: list[dict] = [{"model.embed_tokens.weight": rand(shape["vocab_size"], h)}]
    for i in range(shape["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shards.append({
            p + "self_attn.q_proj.weight": rand(h, h),
            p + "self_attn.k_proj.weight": rand(kv * head_dim, h),
            p + "self_attn.v_proj.weight": rand(kv * head_dim, h),
            p + "self_attn.o_proj.weight": rand(h, h),
            p + "mlp.gate_proj.weight": rand(inter, h),
            p + "mlp.up_proj.weight": rand(inter, h),
            p + "mlp.down_proj.weight": rand(h, inter),
            p + "input_layernorm.weight": norm(h),
            p + "post_attention_layernorm.weight": norm(h),
        })
    shards.append({"model.norm.weight": norm(h), "lm_head.weight": rand(shape["vocab_size"], h)})
    # group into ~1 GB files, as a real checkpoint would be
    files, current, size = [], {}, 0
    for part in shards:
        for name, tensor in part.items():
            current[name] = tensor
            size += tensor.numel() * tensor.element_size()
        if size > 1_000_000_000:
            files.append(current)
            current, size = {}, 0
    if current:
        files.append(current)
    weight_map, total = {}, 0
    for k, tensors in enumerate(files):
        fname = f"model-{k + 1:05d}-of-{len(files):05d}.safetensors"
        save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
        for name, tensor in tensors.items():
            weight_map[name] = fname
            total += tensor.numel() * tensor.element_size()
    (tmp / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    tmp.rename(directory)


def parameter_count(shape: dict) -> int:
    h, inter, kv_dim = shape["hidden_size"], shape["intermediate_size"], shape["hidden_size"] // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = 2 * h * h + 2 * kv_dim * h + 3 * h * inter + 2 * h
    return shape["num_hidden_layers"] * layer + 2 * shape["vocab_size"] * h + h


# -- children ---------------------------------------------------------------------------------------
def run_child(argv: list[str], label: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"{label} failed with exit code {proc.returncode}")
    return {"wall_s": wall, "stdout": proc.stdout.decode(errors="replace")}


def run_measured(argv: list[str], label: str) -> dict:
    """Run argv under this script's --child-wrapper, which reports the child's peak RSS and GPU memory."""
    report = Path(tempfile.mkstemp(suffix=".json")[1])
    wrapped = [sys.executable, __file__, "--child-report", str(report), "--", *argv]
    result = run_child(wrapped, label)
    data = json.loads(report.read_text())
    report.unlink()
    return {**data, "wall_s": result["wall_s"], "stdout": result["stdout"]}


def child_main(report: Path, argv: list[str]) -> None:
    """Run argv as a grandchild-free child: exec the tool in this process after arranging the report."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    report.write_text(json.dumps({"peak_rss_mib": usage.ru_maxrss / 1024, "inner_wall_s": wall, "exit": code}))
    sys.exit(code)


def _json_in(text: str) -> dict:
    """The JSON object a tool printed (sakura merge --json prints one, the mergekit wrapper one line)."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        start = text.find("{", start + 1)
    return {}


def python_tool(code: str) -> list[str]:
    return [sys.executable, "-c", code]


MERGEKIT_CODE = """
import sys, json
from mergekit.scripts.run_yaml import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    try:
        import torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            print(json.dumps({"peak_gpu_bytes": torch.cuda.max_memory_allocated()}))
    except Exception:
        pass
"""

IO_FLOOR_CODE = """
import os, sys, time
inputs, out = sys.argv[1:-1], sys.argv[-1]
buf = bytearray(64 << 20)
total = 0
t = time.perf_counter()
for path in inputs:
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
size = total // 2  # the output is as large as one input model
with open(out, "wb", buffering=0) as f:
    left = size
    while left > 0:
        n = f.write(memoryview(buf)[: min(left, len(buf))])
        left -= n
print(total, size)
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="200m")
    parser.add_argument("--models-dir", default=os.path.join(tempfile.gettempdir(), "sakura-bench-models"))
    parser.add_argument("--input-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    parser.add_argument("--mergekit-flags", action="append", default=None,
                        help="flag set for mergekit-yaml (repeatable; default: '-j N' on CPU, '--cuda --async-write' and "
                             "'--cuda --read-to-gpu --async-write' on GPU; with --methods the first set only)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per tool; the best is reported")
    parser.add_argument("--skip-mergekit", action="store_true")
    parser.add_argument("--methods", action="store_true", help="time every mergekit method through both tools")
    parser.add_argument("--only", action="append", help="with --methods: just this method (repeatable)")
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    return parser.parse_args()


def bench_models(args: argparse.Namespace, seeds: tuple[int, ...]) -> list[Path]:
    """The random models of the shape, one per seed, generated once under --models-dir."""
    models = []
    for seed in seeds:
        directory = Path(args.models_dir) / f"{args.shape}-{args.input_dtype}-seed{seed}"
        if not directory.is_dir():
            print(f"generating {directory} ...", flush=True)
            make_model(directory, SHAPES[args.shape], seed, args.input_dtype)
        models.append(directory)
    return models


def best(label: str, argv_for_run, repeat: int, work: Path) -> dict:
    """The fastest of ``repeat`` runs (with every run's wall time and the largest peak RSS)."""
    runs = []
    for k in range(repeat):
        out = work / f"out-{k}"
        runs.append(run_measured(argv_for_run(out), label))
        shutil.rmtree(out, ignore_errors=True)
        if out.with_suffix(".bin").exists():
            out.with_suffix(".bin").unlink()
    chosen = min(runs, key=lambda r: r["wall_s"])
    chosen["label"] = label
    chosen["walls"] = [round(r["wall_s"], 2) for r in runs]
    chosen["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    chosen.update(_json_in(chosen["stdout"]))
    return chosen


def sakura_argv(config: Path, out: Path, device: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sakura_core", "merge", str(config), str(out), "--device", device, "--json", *extra]


def mergekit_argv(config: Path, out: Path, flags: str, *extra: str) -> list[str]:
    return python_tool(MERGEKIT_CODE) + [str(config), str(out), "--no-write-model-card", "--quiet", *shlex.split(flags), *extra]


def slerp_benchmark(args: argparse.Namespace, device: str, work: Path) -> dict:
    """The Sakura SLERP of a pair against mergekit-yaml (each flag set), with the I/O floor."""
    shape = SHAPES[args.shape]
    pair = bench_models(args, (1, 2))
    config = work / "sakura-slerp.yml"
    config.write_text(CONFIG.format(a=pair[0], b=pair[1], layers=shape["num_hidden_layers"]))
    input_files = sorted(str(p) for d in pair for p in d.glob("*.safetensors"))
    rows = []

    def measure(label: str, argv_for_run) -> dict:
        row = best(label, argv_for_run, args.repeat, work)
        rows.append(row)
        print(f"  {label}: {row['wall_s']:.2f} s (runs {row['walls']}), peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
        return row

    # warm the page cache and measure the floor first
    floor = measure("I/O floor", lambda out: python_tool(IO_FLOOR_CODE) + input_files + [str(out.with_suffix(".bin"))])
    sakura_row = measure("sakura merge", lambda out: sakura_argv(config, out, device))
    if not args.skip_mergekit:
        for flags in args.mergekit_flags:
            measure(f"mergekit-yaml {flags}", lambda out, flags=flags: mergekit_argv(config, out, flags))

    mergekit_rows = [r for r in rows if r["label"].startswith("mergekit")]
    fastest = min(mergekit_rows, key=lambda r: r["wall_s"]) if mergekit_rows else None
    print()
    print("| run | wall s | vs sakura | peak host RSS MiB | peak GPU MiB |")
    print("|---|---|---|---|---|")
    for row in rows:
        gpu = row.get("peak_gpu_bytes")
        ratio = row["wall_s"] / sakura_row["wall_s"]
        print(f"| {row['label']} | {row['wall_s']:.2f} | {ratio:.2f}x | {row['peak_rss_mib']:.0f} | "
              f"{gpu / 2**20:.0f} |" if gpu else f"| {row['label']} | {row['wall_s']:.2f} | {ratio:.2f}x | {row['peak_rss_mib']:.0f} | - |")
    summary = {
        "sakura_wall_s": sakura_row["wall_s"], "io_floor_s": floor["wall_s"],
        "sakura_vs_io_floor": sakura_row["wall_s"] / floor["wall_s"],
        "rows": [{k: v for k, v in r.items() if k not in ("stdout",)} for r in rows],
    }
    if fastest:
        summary.update(fastest_mergekit=fastest["label"], speedup_vs_fastest_mergekit=fastest["wall_s"] / sakura_row["wall_s"],
                       rss_ratio=sakura_row["peak_rss_mib"] / fastest["peak_rss_mib"])
        print(f"\nsakura is {summary['speedup_vs_fastest_mergekit']:.2f}x faster than {fastest['label']}; "
              f"peak RSS {sakura_row['peak_rss_mib']:.0f} vs {fastest['peak_rss_mib']:.0f} MiB; "
              f"{summary['sakura_vs_io_floor']:.2f}x the I/O floor ({floor['wall_s']:.2f} s)")
    return summary


def method_configs() -> dict[str, tuple[str, list[str]]]:
    """The conformance suite's configuration of every method mergekit registers, and its flags."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_mergekit_conformance import METHODS

    return METHODS


def method_suite(args: argparse.Namespace, device: str, work: Path) -> dict:
    """Every method's configuration on three models of the shape, through sakura merge and mergekit-yaml."""
    import textwrap

    configs = method_configs()
    unknown = sorted(set(args.only or ()) - set(configs))
    if unknown:
        raise SystemExit(f"--only: no such method {', '.join(unknown)} (methods: {', '.join(configs)})")
    models = dict(zip("abc", bench_models(args, (1, 2, 3))))
    flags = args.mergekit_flags[0]
    rows = []
    print("| method | sakura engine | sakura s | mergekit s | mergekit / sakura | sakura RSS MiB | mergekit RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for method, (text, extra) in configs.items():
        if args.only and method not in args.only:
            continue
        config = work / f"{method}.yml"
        text = textwrap.dedent(text)
        for name, path in models.items():
            text = text.replace("{" + name + "}", str(path))
        config.write_text(text)
        ours = best(f"sakura {method}", lambda out, config=config, extra=extra: sakura_argv(
            config, out, device, *seed_flags(extra, "--seed")), args.repeat, work)
        row = {"method": method, "engine": ours.get("engine"), "sakura_s": ours["wall_s"], "sakura_runs": ours["walls"],
               "sakura_rss_mib": ours["peak_rss_mib"]}
        if not args.skip_mergekit:
            theirs = best(f"mergekit {method}", lambda out, config=config, extra=extra: mergekit_argv(
                config, out, flags, *extra), args.repeat, work)
            row.update({"mergekit_s": theirs["wall_s"], "mergekit_runs": theirs["walls"],
                        "mergekit_rss_mib": theirs["peak_rss_mib"]})
        rows.append(row)
        if args.skip_mergekit:
            print(f"| {method} | {row['engine']} | {row['sakura_s']:.2f} | - | - | {row['sakura_rss_mib']:.0f} | - |", flush=True)
        else:
            print(f"| {method} | {row['engine']} | {row['sakura_s']:.2f} | {row['mergekit_s']:.2f} | "
                  f"{row['mergekit_s'] / row['sakura_s']:.2f}x | {row['sakura_rss_mib']:.0f} | {row['mergekit_rss_mib']:.0f} |",
                  flush=True)
    return {"mergekit_flags": flags, "methods": rows}


def seed_flags(flags: list[str], seed_flag: str) -> list[str]:
    """mergekit-yaml's ``--random-seed N`` as the other tool's seed flag."""
    return [seed_flag if flag == "--random-seed" else flag for flag in flags]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child-report":
        child_main(Path(sys.argv[2]), sys.argv[4:])
        return
    args = parse_args()

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA asked for but not available: skipping the GPU benchmark")
        return
    cores = os.cpu_count() or 1
    if args.mergekit_flags is None:
        args.mergekit_flags = [f"-j {cores}"] if device == "cpu" else ["--cuda --async-write", "--cuda --read-to-gpu --async-write"]
    shape = SHAPES[args.shape]
    print(f"shape {args.shape} ({parameter_count(shape) / 1e6:.0f}M parameters per model, inputs {args.input_dtype}), "
          f"device {device}, {cores} CPU cores", flush=True)
    work = Path(tempfile.mkdtemp(prefix="sakura-bench-merge-"))
    try:
        results = method_suite(args, device, work) if args.methods else slerp_benchmark(args, device, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"shape": args.shape, "parameters_per_model": parameter_count(shape), "device": device, "cpu_cores": cores,
               "repeat": args.repeat, **results}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
