"""Wall time of the light CLI commands against `python -c "import torch"`, measured in the same run.

Target (issues 2 and 12): each at most 0.15x of the torch import, with the built-in plugins only and with
the two example plugin packages installed (pip, into a private site directory put on PYTHONPATH).
Usage: python bench/cli_startup.py [--repeat 10]

Both sides are timed from compiled bytecode, as a user runs them: pip compiles torch's modules (and
sakura's, on a regular install) when it installs them. An editable install under
PYTHONDONTWRITEBYTECODE=1 (set on the development VM) would otherwise recompile every sakura module from
source on each start, a cost no installed copy pays; so the sources are compiled once before timing.
"""

from __future__ import annotations

import argparse
import compileall
import json
import statistics
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = 0.15


def wall(cmd: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def install_examples(site: Path) -> dict[str, str]:
    """Both example packages pip-installed (built as wheels) into ``site``; the environment that sees them."""
    packages = [str(REPO / "examples" / name) for name in ("sakura-example-merge", "sakura-example-dataset")]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
                    *packages], check=True, capture_output=True)
    compileall.compile_dir(site, quiet=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    listed = subprocess.run([sys.executable, "-m", "sakura_core", "plugins", "--json"], env=env, check=True,
                            capture_output=True, text=True).stdout
    names = {p["name"] for p in json.loads(listed)["plugins"]}
    assert {"example_merge", "example_dataset"} <= names, names
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    sakura = [sys.executable, "-m", "sakura_core"]
    commands = {
        "sakura --help": sakura + ["--help"],
        "sakura plugins": sakura + ["plugins"],
        "sakura validate recipes/tiny.toml": sakura + ["validate", str(REPO / "recipes" / "tiny.toml")],
    }
    for package in ("sakura_core", "plugins"):
        compileall.compile_dir(REPO / package, quiet=1)
    with tempfile.TemporaryDirectory(prefix="sakura-bench-site-") as site:
        setups = {"built-ins": None, "+ 2 example packages": install_examples(Path(site))}
        wall([sys.executable, "-c", "import torch"], 1)  # warm the page cache before timing anything
        for env in setups.values():
            for cmd in commands.values():
                wall(cmd, 1, env)
        torch_s = wall([sys.executable, "-c", "import torch"], args.repeat)
        rows = []
        for setup, env in setups.items():
            for name, cmd in commands.items():
                seconds = wall(cmd, args.repeat, env)
                rows.append({"plugins": setup, "command": name, "seconds": round(seconds, 3),
                             "ratio_to_torch_import": round(seconds / torch_s, 3)})
    baseline = wall([sys.executable, "-c", "pass"], args.repeat)
    print(f"python -c 'import torch': {torch_s:.3f} s (median of {args.repeat}); bare interpreter: {baseline:.3f} s")
    print(f"{'plugins':22} {'command':36} {'seconds':>8} {'x torch':>8}  target <= {TARGET}")
    for row in rows:
        ok = "ok" if row["ratio_to_torch_import"] <= TARGET else "MISS"
        print(f"{row['plugins']:22} {row['command']:36} {row['seconds']:8.3f} {row['ratio_to_torch_import']:8.3f}  {ok}")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_startup.json").write_text(
        json.dumps({"torch_import_s": round(torch_s, 3), "python_s": round(baseline, 3), "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
