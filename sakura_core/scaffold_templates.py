"""The texts ``sakura new-plugin`` writes (``string.Template``: ``$module``, ``$registered``, ...).

One package layout for every kind (pyproject, README, module, tests); per kind, the module holds one
minimal working implementation and the tests run it through sakura's engine on tiny generated models.
"""

from __future__ import annotations

from string import Template
from typing import Any

# -- every kind ------------------------------------------------------------------------------------
TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"  # a generated model: seconds on a CPU

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
# Part of the fingerprint of every stage that uses the plugin: bump it when the output changes.
version = "0.1.0"
description = "$description"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["sakura-recipes"]

# sakura finds plugins through this entry-point group; the value is the module holding the hooks.
[project.entry-points.sakura]
$entry = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

GITIGNORE = '''\
__pycache__/
*.egg-info/
build/
dist/
.sakura/
.pytest_cache/
'''

CONFTEST = '''\
"""Let the tests import the package from its source tree when it is not pip-installed; keep them offline."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests generate their tiny models: nothing to download
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
'''

TEST_HEAD = '''\
"""$title through sakura's real engine, on tiny generated models."""

from __future__ import annotations

import json
${extra_imports}import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import $module
from sakura_core.engine import Engine
from sakura_core.errors import RecipeError
from sakura_core.plugins import Plugins
from sakura_core.recipe import load_recipe
${constants}

def plugins_with_this_package() -> Plugins:
    """sakura's built-in plugins plus this package's module, whether it is installed or not."""
    plugins = Plugins(entry_points=False)
    plugins.register_object($module, "$entry")
    return plugins


def run_recipe(tmp_path: Path, text: str):
    """Validate and run a recipe written into ``tmp_path`` (its store is ``tmp_path/.sakura``)."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(textwrap.dedent(text))
    return Engine(load_recipe(recipe, plugins=plugins_with_this_package())).run()
'''

TEST_TAIL = '''

def test_sakura_lists_this_plugin_when_installed():
    """After ``pip install -e .``, ``sakura plugins`` lists the plugin and what it registers."""
    # Asked in a fresh interpreter: this one also sees the source tree (conftest.py), which sakura does not.
    probe = [sys.executable, "-c", "import importlib.metadata as m; m.distribution('$dist')"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("$dist is not installed (pip install -e .)")
    out = subprocess.run([sys.executable, "-m", "sakura_core", "plugins", "--json"], capture_output=True, text=True, check=True)
    plugin = next(p for p in json.loads(out.stdout) if p["name"] == "$entry")
    assert plugin["registers"] == {"$registry": ["$registered"]}
'''

README = '''\
# $dist

$title for sakura, written by `sakura new-plugin $dist --kind $kind`.

$about

The package exposes its module through the entry-point group `sakura` (see `pyproject.toml`):

```toml
[project.entry-points.sakura]
$entry = "$module"
```

## Try it

```bash
pip install -e .
sakura plugins            # lists $entry with $registry: $registered
```

In a recipe:

```toml
$usage
```

## Test

```bash
pytest
```

$tests

## Make it yours

Edit `$module/__init__.py`. Keep the module cheap to import (import torch and friends inside the functions
that use them): sakura imports every installed plugin on each start, `sakura --help` included. The
package's version is part of the fingerprint of every stage that uses it: bump it in `pyproject.toml`
when the same recipe should give a different result, and sakura re-runs those stages instead of reusing
their cached artifacts. The whole plugin contract is sakura's `sakura_core/hookspecs.py`; `docs/hooks.md`
has an example per hook.
'''

# -- merge -----------------------------------------------------------------------------------------
MERGE_MODULE = '''\
"""``$registered``: a merge method for sakura, in one tensor function and one options model.

It moves the base model's weights toward the average of the other models' weights by ``strength``
(0: the base unchanged, 1: the plain average of the others), tensor by tensor.

sakura's merge executor does everything else: it streams the tensors from safetensors, converts them to
the recipe's ``dtype``, resolves layer gradients and filters into one value per tensor, checks every value
against ``${camel}Options`` before any weights are read, and writes the merged model with its tokenizer.
"""

from __future__ import annotations

from pydantic import Field

from sakura_core import hookimpl
from sakura_core.stage import Options
from sakura_merge.methods import MergeCall, MergeMethod


class ${camel}Options(Options):
    """Every parameter of the method, with its type, default and limits (a recipe's values are checked)."""

    strength: float = Field(0.5, ge=0, le=1, description="how far the base moves toward the others' average")


def merge(call: MergeCall):
    """One output tensor: ``call.tensors`` in model order, ``call.base`` the base model's index."""
    import torch  # here, not at the top: importing the plugin stays cheap

    base = call.base_tensor
    work = torch.float64 if base.dtype == torch.float64 else torch.float32
    others = sum(call.tensors[i].to(work) for i in call.others) / len(call.others)
    return torch.lerp(base.to(work), others, call.params.strength).to(base.dtype)


METHOD = MergeMethod(
    merge,
    ${camel}Options,
    base="required",  # base_model must be one of the models merged
    min_models=2,
    description="the base model moved toward the average of the others by `strength`",
)


@hookimpl
def sakura_register_merge_methods(register):
    register("$registered", METHOD)
'''

MERGE_TEST = '''

@pytest.fixture
def two_models(tmp_path):
    """Two tiny Llamas with the same shapes and different weights, as local model folders."""
    from sakura_models.tiny import TinyOptions, generate_tiny_model

    for name, seed in (("a", 1), ("b", 2)):
        generate_tiny_model(TinyOptions(layers=2, hidden=32, intermediate=64, heads=2, kv_heads=1, seed=seed), tmp_path / name)
    return tmp_path / "a", tmp_path / "b"


MERGE = """
[models]
a = "./a"
b = "./b"

[stages.merge]
kind = "merge"
merge_method = "$registered"
base_model = "a"
models = [{ model = "a" }, { model = "b" }]
dtype = "float32"
"""


def test_merge_stage_moves_the_base_toward_the_other_model(tmp_path, two_models):
    import torch
    from safetensors.torch import load_file

    result = run_recipe(tmp_path, MERGE + "parameters = { strength = 0.25 }\\n")
    assert result.ok, result.error
    merged = load_file(result.outcome("merge").artifact / "model.safetensors")
    a, b = (load_file(model / "model.safetensors") for model in two_models)
    assert merged.keys() == a.keys()
    for name in ("model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight"):
        assert torch.allclose(merged[name], a[name] + 0.25 * (b[name] - a[name]), atol=1e-6)


def test_parameters_are_checked_before_any_work(tmp_path, two_models):
    for extra, expected in {
        "parameters = { strength = 2 }": "stages.merge.parameters.strength: input should be less than or equal to 1",
        "parameters = { strenght = 0.5 }":
            "stages.merge.parameters.strenght: unknown parameter for $registered (did you mean strength?)",
    }.items():
        with pytest.raises(RecipeError) as info:
            run_recipe(tmp_path, MERGE + extra + "\\n")
        assert expected in str(info.value)
    assert not (tmp_path / ".sakura").exists()
'''

MERGE_USAGE = '''\
[stages.merge]
kind = "merge"
merge_method = "$registered"
base_model = "solar"
models = [{ model = "solar" }, { model = "sauerkraut" }]
parameters = { strength = [0.2, 0.8] }   # a gradient over the layers, like any mergekit parameter
dtype = "bfloat16"'''

MERGE_ABOUT = '''\
It adds the merge method `$registered`: the base model's weights moved toward the average of the other
models' weights by `strength` (0 keeps the base, 1 gives the average of the others). A merge method is
**one tensor function and one pydantic options model**; sakura's executor does the rest (streaming from
safetensors, devices, dtypes, layer gradients and filters, sharded output, tokenizer).'''

MERGE_TESTS = '''\
The tests merge two tiny generated models through sakura's engine and compare the result with the
formula, and check that a value out of range or a misspelt parameter fails before any weights are read.'''

# -- dataset ---------------------------------------------------------------------------------------
DATASET_MODULE = '''\
"""``$registered``: a dataset adapter for sakura, in one class.

It reads preference pairs laid out as ``instruction`` / ``good`` / ``bad`` columns (and an optional
``system`` column) and maps each row to trl's conversational preference format: ``prompt`` (system, then
user message), ``chosen`` and ``rejected`` (one assistant message each). Change ``columns`` and
``convert`` to your data's layout.

sakura does the rest: it reads local jsonl / json / parquet / csv files, saved datasets or Hub datasets,
fails before any work when a column is missing, drops rows with a null or empty required column, counts
token lengths with the model's chat template, deduplicates, mixes, splits, and counts every dropped row
with its reason in the dataset's ``stats.json``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sakura_core import hookimpl
from sakura_core.stage import Options
from sakura_data import Adapter, Skip, preference


class ${camel}Options(Options):
    """The adapter's own keys, written flat in a source's table (checked when the recipe loads)."""

    skip_ties: bool = Field(True, description="drop rows whose good and bad answers are the same text")


class ${camel}Adapter(Adapter):
    description = "instruction / good / bad columns, optional system"
    Options = ${camel}Options
    columns = ("instruction", "good", "bad")  # every row needs them
    optional_columns = ("system",)  # read when the source has it
    version = "1"  # bump when the output for the same input changes: it is part of the stage's fingerprint

    def convert(self, row: dict[str, Any], options: ${camel}Options) -> dict[str, Any]:
        if options.skip_ties and str(row["good"]).strip() == str(row["bad"]).strip():
            raise Skip("good equals bad")  # the reason is counted in stats.json
        return preference(row["instruction"], row["good"], row["bad"], system=row.get("system"))


@hookimpl
def sakura_register_dataset_adapters(register):
    register("$registered", ${camel}Adapter())
'''

DATASET_DATA = '''\
{"system": "", "instruction": "Name a primary color.", "good": "Red is a primary color.", "bad": "Purple."}
{"system": "Answer with the sum only.", "instruction": "What is 2 + 3?", "good": "5", "bad": "6"}
{"system": "", "instruction": "Translate 'hello' into Spanish.", "good": "Hola.", "bad": "Bonjour."}
{"system": "", "instruction": "Is water wet?", "good": "Yes.", "bad": "Yes."}
'''

DATASET_TEST = '''

def run_dataset(tmp_path: Path, options: str = ""):
    shutil.copy(DATA / "pairs.jsonl", tmp_path / "pairs.jsonl")
    return run_recipe(tmp_path, """
        [stages.data]
        kind = "dataset"
        sources = [{ adapter = "$registered", path = "pairs.jsonl"%s }]
        shuffle = false
    """ % options)


def load(result):
    import datasets

    artifact = result.outcome("data").artifact
    return datasets.load_from_disk(str(artifact / "dataset"))["train"], json.loads((artifact / "stats.json").read_text())


def test_rows_map_to_trl_preference_format(tmp_path):
    result = run_dataset(tmp_path)
    assert result.ok, result.error
    rows, stats = load(result)
    assert len(rows) == 3
    assert rows[1] == {
        "prompt": [{"role": "system", "content": "Answer with the sum only."}, {"role": "user", "content": "What is 2 + 3?"}],
        "chosen": [{"role": "assistant", "content": "5"}],
        "rejected": [{"role": "assistant", "content": "6"}],
    }
    assert rows[0]["prompt"] == [{"role": "user", "content": "Name a primary color."}]  # an empty system is left out
    assert stats["dropped"] == {"good equals bad": 1}


def test_adapter_option(tmp_path):
    result = run_dataset(tmp_path, ", skip_ties = false")
    assert result.ok, result.error
    rows, stats = load(result)
    assert len(rows) == 4 and stats["dropped"] == {}


def test_options_are_checked_before_any_work(tmp_path):
    with pytest.raises(RecipeError) as info:
        run_dataset(tmp_path, ", skip_tie = false")
    assert "stages.data.sources[0].skip_tie: unknown option (did you mean skip_ties?)" in str(info.value)
    assert not (tmp_path / ".sakura").exists()
'''

DATASET_USAGE = '''\
[stages.data]
kind = "dataset"
sources = [{ adapter = "$registered", path = "data/pairs.jsonl", skip_ties = true }]
tokenizer = "merge"       # lengths counted with this model's chat template
max_length = 1024'''

DATASET_ABOUT = '''\
It adds the dataset adapter `$registered`, for preference pairs in `instruction` / `good` / `bad`
columns (and an optional `system` column), mapped to trl's conversational preference format. An adapter
is **one class**: the columns it needs, an options model for its own keys, and `convert`, which maps one
row (or drops it with `Skip("reason")`, counted in the dataset's `stats.json`).'''

DATASET_TESTS = '''\
The tests run a dataset stage through sakura's engine on `tests/data/pairs.jsonl` and check the rows,
the option and the dropped-row counts in `stats.json`.'''

# -- trainer ---------------------------------------------------------------------------------------
TRAINER_MODULE = '''\
"""``$registered``: a trainer for sakura's ``train`` stages.

A trainer tells the train stage which trl config class and trainer class to use, which dataset columns
it needs and sakura's defaults for its ``args``. This one is DPO with the IPO loss (Azar et al., 2023,
"A General Theoretical Paradigm to Understand Learning from Human Preferences"): trl's ``DPOTrainer``
with ``loss_type = ["ipo"]``. The train stage adds the rest: LoRA, the cached reference log-probs,
resuming from checkpoints, live metrics and the merged model artifact. A recipe's ``args`` are checked
against trl's ``DPOConfig`` fields when the recipe loads, and win over the defaults here.

To train with a class of your own, subclass trl's trainer in a module of this package that only training
imports (``class MyTrainer(trl.DPOTrainer)``) and name it: ``trainer_class="$module.training:MyTrainer"``.
"""

from __future__ import annotations

from sakura_core import hookimpl
from sakura_trl.trainers import COMMON_DEFAULTS, Trainer

TRAINER = Trainer(
    name="$registered",
    config_class="DPOConfig",  # trl's config class: a recipe's args are checked against its fields
    trainer_class="DPOTrainer",  # an attribute of trl, or "package.module:Class"
    columns=("prompt", "chosen", "rejected"),  # a dataset without them fails before training starts
    defaults={**COMMON_DEFAULTS, "loss_type": ["ipo"], "beta": 0.1},
    preference=True,  # it has a reference model: sakura computes its log-probs once and caches them
    version="1",  # bump when the same recipe should train differently: it is part of the stage's fingerprint
)


@hookimpl
def sakura_register_trainers(register):
    register("$registered", TRAINER)
'''

TRAINER_DATA = '''\
{"question": "What is 2 plus 2?", "chosen": "2 plus 2 is 4.", "rejected": "2 plus 2 is 5."}
{"question": "What is the capital of Italy?", "chosen": "Rome is the capital of Italy.", "rejected": "Milan."}
{"question": "How many days are in a week?", "chosen": "A week has seven days.", "rejected": "Ten days."}
{"question": "What do bees make?", "chosen": "Bees make honey and wax.", "rejected": "Bees make milk."}
{"question": "Which planet is closest to the sun?", "chosen": "Mercury is closest to the sun.", "rejected": "Jupiter."}
{"question": "What is frozen water called?", "chosen": "Frozen water is called ice.", "rejected": "Steam."}
{"question": "How many sides does a triangle have?", "chosen": "A triangle has three sides.", "rejected": "Four."}
{"question": "What color are ripe bananas?", "chosen": "Ripe bananas are yellow.", "rejected": "Blue."}
'''

TRAINER_TEST = '''

RECIPE = """
[models]
base = "%s"

[stages.data]
kind = "dataset"
sources = [{ adapter = "orca", path = "pairs.jsonl" }]

[stages.train]
kind = "train"
trainer = "$registered"
model = "base"
dataset = "data"
lora = { r = 4, alpha = 8, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }
args = { learning_rate = 1e-3, per_device_train_batch_size = 2, max_steps = 2, max_length = 128, seed = 1 }
""" % TINY


def test_train_stage_runs_dpo_with_the_ipo_loss(tmp_path):
    shutil.copy(DATA / "pairs.jsonl", tmp_path / "pairs.jsonl")
    result = run_recipe(tmp_path, RECIPE)
    assert result.ok, result.error
    train = result.outcome("train")
    assert train.metrics["steps"] == 2
    # At the first step the LoRA adapter is still zero, so the policy equals the reference and IPO's loss is
    # (0 - 1 / (2 * beta))**2 = 25 with this trainer's beta = 0.1 (DPO's sigmoid loss would be log 2).
    assert train.metrics["first_loss"] == pytest.approx(25.0, rel=1e-3)
    assert (train.artifact / "model.safetensors").is_file()
    assert (train.artifact / "adapter" / "adapter_config.json").is_file()


def test_args_are_checked_against_trl_before_any_work(tmp_path):
    shutil.copy(DATA / "pairs.jsonl", tmp_path / "pairs.jsonl")
    with pytest.raises(RecipeError) as info:
        run_recipe(tmp_path, RECIPE.replace("learning_rate", "learnin_rate"))
    assert "stages.train.args.learnin_rate: unknown option for trl's DPOConfig (did you mean learning_rate?)" in str(info.value)
    assert not (tmp_path / ".sakura").exists()
'''

TRAINER_USAGE = '''\
[stages.dpo]
kind = "train"
trainer = "$registered"
model = "merge"
dataset = "data"
lora = { r = 16, alpha = 16, dropout = 0.05 }
args = { learning_rate = 5e-5, beta = 0.05 }   # any field of trl's DPOConfig'''

TRAINER_ABOUT = '''\
It adds the trainer `$registered`: DPO with the IPO loss, on trl's `DPOTrainer`. A trainer is **one
record**: trl's config and trainer classes, the dataset columns it needs and sakura's defaults for its
`args`; the train stage does the rest (LoRA, reference log-prob cache, resume, metrics, merged artifact),
and a recipe's `args` are checked against trl's `DPOConfig` before any work.'''

TRAINER_TESTS = '''\
The tests train a tiny generated model for two steps through sakura's engine on `tests/data/pairs.jsonl`
(the first step's loss shows the IPO loss is the one used), and check that a misspelt `args` key fails
before any work.'''

# -- publisher -------------------------------------------------------------------------------------
PUBLISHER_MODULE = '''\
"""``$registered``: a publisher for sakura's ``publish`` stages.

It writes the published files into one ``.tar.gz`` archive: the model (weights, config, tokenizer, chat
template), its model card, ``sakura-lineage.json`` and the recipe. The publish stage chooses the files and
writes the card and the lineage; a publisher only puts ``bundle.files`` somewhere and says where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field

from sakura_core import OptionError, hookimpl
from sakura_core.stage import Options
from sakura_publish.publisher import Publisher


class ${camel}Options(Options):
    """The publisher's keys, written flat in the publish stage's table (checked when the recipe loads)."""

    archive: str = Field(description="the .tar.gz file to write, relative to the recipe's directory")


class ${camel}Publisher(Publisher):
    Options = ${camel}Options

    def target(self, options: ${camel}Options, recipe_dir: Path) -> Path:
        path = Path(options.archive).expanduser()
        return Path(os.path.abspath(path if path.is_absolute() else Path(recipe_dir) / path))

    def check(self, options: ${camel}Options, env: Any) -> None:
        if not options.archive.endswith((".tar.gz", ".tgz")):
            raise OptionError("archive", f"must name a .tar.gz or .tgz file (got {options.archive!r})")

    def external_inputs(self, options: ${camel}Options, recipe_dir: Path) -> dict[str, Any]:
        return {"archive": str(self.target(options, recipe_dir))}  # another place is another publication

    def load_reference(self, options: ${camel}Options, recipe_dir: Path) -> str:
        return f"the folder {Path(options.archive).name} is unpacked into"  # shown in the model card

    def publish(self, bundle: Any, options: ${camel}Options, env: Any) -> dict[str, Any]:
        import tarfile

        target = self.target(options, env.recipe_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with tarfile.open(partial, "w:gz") as tar:
                for name, path in bundle.files.items():
                    tar.add(path, arcname=name)
            os.replace(partial, target)  # complete or absent, never half-written
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        env.log(f"published {len(bundle.files)} files to {target}")
        return {"path": str(target)}


@hookimpl
def sakura_register_publishers(register):
    register("$registered", ${camel}Publisher())
'''

PUBLISHER_TEST = '''

RECIPE = """
name = "tiny-published"

[models]
base = "%s"

[stages.ship]
kind = "publish"
publisher = "$registered"
model = "base"
archive = "dist/model.tar.gz"
""" % TINY


def test_publish_stage_writes_the_model_its_card_and_lineage(tmp_path):
    import tarfile

    result = run_recipe(tmp_path, RECIPE)
    assert result.ok, result.error
    archive = tmp_path / "dist" / "model.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        card = tar.extractfile("README.md").read().decode()
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "sakura-lineage.json",
            "sakura-recipe.toml"} <= names
    assert "tiny-published" in card
    assert result.outcome("ship").metrics["path"] == str(archive)
    assert [p.name for p in archive.parent.iterdir()] == ["model.tar.gz"]  # no partial file left


def test_options_are_checked_before_any_work(tmp_path):
    for change, expected in {
        ("model.tar.gz", "model.zip"): "stages.ship.archive: must name a .tar.gz or .tgz file",
        ("archive =", "archiv ="): "stages.ship.archiv: unknown option for publisher '$registered' (did you mean archive?)",
    }.items():
        with pytest.raises(RecipeError) as info:
            run_recipe(tmp_path, RECIPE.replace(*change))
        assert expected in str(info.value)
    assert not (tmp_path / ".sakura").exists()
'''

PUBLISHER_USAGE = '''\
[stages.ship]
kind = "publish"
publisher = "$registered"
model = "dpo"                      # a train or merge stage, or a model of [models]
archive = "dist/model.tar.gz"      # relative to the recipe'''

PUBLISHER_ABOUT = '''\
It adds the publisher `$registered`, which writes a published model into one `.tar.gz` archive: its
weights, config and tokenizer, the model card, `sakura-lineage.json` and the recipe. A publisher is **an
options model and `publish(bundle, options, env)`**; the publish stage chooses the files and writes the
card and the lineage.'''

PUBLISHER_TESTS = '''\
The tests publish a tiny generated model through sakura's engine and look inside the archive, and check
that a bad or misspelt option fails before any work.'''

# -- assembly --------------------------------------------------------------------------------------
KIND_TEXTS: dict[str, dict[str, Any]] = {
    "merge": {
        "title": "A merge method", "description": "A merge method for sakura",
        "module": MERGE_MODULE, "test": MERGE_TEST, "usage": MERGE_USAGE, "about": MERGE_ABOUT,
        "tests": MERGE_TESTS, "data": None,
    },
    "dataset": {
        "title": "A dataset adapter", "description": "A dataset adapter for sakura",
        "module": DATASET_MODULE, "test": DATASET_TEST, "usage": DATASET_USAGE, "about": DATASET_ABOUT,
        "tests": DATASET_TESTS, "data": DATASET_DATA,
    },
    "trainer": {
        "title": "A trainer", "description": "A trainer for sakura: DPO with the IPO loss",
        "module": TRAINER_MODULE, "test": TRAINER_TEST, "usage": TRAINER_USAGE, "about": TRAINER_ABOUT,
        "tests": TRAINER_TESTS, "data": TRAINER_DATA,
    },
    "publisher": {
        "title": "A publisher", "description": "A publisher for sakura: a .tar.gz archive of the model",
        "module": PUBLISHER_MODULE, "test": PUBLISHER_TEST, "usage": PUBLISHER_USAGE, "about": PUBLISHER_ABOUT,
        "tests": PUBLISHER_TESTS, "data": None,
    },
}


def render(kind: str, names: Any) -> dict[str, str]:
    """Every file of the package for ``kind``: relative path -> text."""
    from sakura_core.scaffold import KINDS

    texts = KIND_TEXTS[kind]
    values = {
        "dist": names.dist, "module": names.module, "entry": names.entry, "registered": names.registered,
        "camel": names.camel, "kind": kind, "registry": KINDS[kind][0],
        "title": f"{texts['title']} ({names.registered})", "description": texts["description"],
    }

    def fill(text: str) -> str:
        return Template(text).substitute(values)

    for key in ("usage", "about", "tests"):
        values[key] = fill(texts[key])
    data = texts["data"] is not None
    values["extra_imports"] = "import shutil\n" if data else ""
    constants = ['DATA = Path(__file__).parent / "data"'] if data else []
    if kind in ("trainer", "publisher"):
        constants.append(f'TINY = "{TINY}"')
    values["constants"] = "".join(f"\n{line}" for line in constants) + ("\n" if constants else "")
    files = {
        "pyproject.toml": fill(PYPROJECT),
        ".gitignore": GITIGNORE,
        "README.md": fill(README),
        f"{names.module}/__init__.py": fill(texts["module"]),
        "tests/conftest.py": CONFTEST,
        f"tests/test_{names.module}.py": fill(TEST_HEAD + texts["test"] + TEST_TAIL),
    }
    if texts["data"] is not None:
        files["tests/data/pairs.jsonl"] = texts["data"]
    return files
