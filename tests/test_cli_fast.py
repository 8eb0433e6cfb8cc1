"""`sakura --help`, `plugins` and `validate` must not import the heavy libraries (torch and friends)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "mergekit", "huggingface_hub", "safetensors")

PROBE = """
import sys
from sakura_core.cli import main
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = [m for m in {heavy!r} if m in sys.modules]
print("EXIT", code, "HEAVY", ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["plugins"], ["plugins", "--json"], ["validate", str(REPO / "recipes" / "tiny.toml")]],
    ids=["help", "plugins", "plugins-json", "validate"],
)
def test_light_commands_import_no_heavy_library(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], capture_output=True, text=True, timeout=120
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last.split() == ["EXIT", "0", "HEAVY"], result.stderr
