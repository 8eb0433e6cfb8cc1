"""A corpus of malformed recipes, fed to `sakura validate` and `sakura run`: every one ends in one line that
names the file and the key, exit code 2, no traceback, and nothing in the store.

Each case mutates a realistic four-stage recipe (the demo's shape: merge, data, dpo, publish) with a
``-s`` override, a text replacement or a whole text, the way users get it wrong.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sakura_core import cli

REPO = Path(__file__).resolve().parent.parent
TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"

BASE = f"""
name = "corpus"

[models]
solar = "{TINY}&seed=1"
sauerkraut = "{TINY}&seed=2"

[stages.merge]
kind = "merge"
merge_method = "slerp"
base_model = "solar"
slices = [{{ sources = [{{ model = "sauerkraut", layer_range = [0, 2] }}, {{ model = "solar", layer_range = [0, 2] }}] }}]
parameters = {{ t = [0, 0.5, 1] }}
dtype = "float32"

[stages.data]
kind = "dataset"
sources = [{{ adapter = "orca", path = "data/tiny_orca.jsonl" }}]
tokenizer = "merge"
max_length = 256

[stages.dpo]
kind = "train"
trainer = "dpo"
model = "merge"
dataset = "data"
lora = {{ r = 8, alpha = 16 }}
args = {{ learning_rate = 5e-5, beta = 0.1, max_steps = 1 }}

[stages.publish]
kind = "publish"
publisher = "local"
model = "dpo"
path = "dist/out"
"""

# (id, how to break it, the key path (or file) the one line must name, words it must contain)
# "how": a list of -s overrides, a (old, new) replacement of the base text, or a whole recipe text (str).
CASES: list[tuple[str, object, str, str]] = [
    # -- the file and its top level
    ("invalid toml", "[stages.a\nkind = 1", "r.toml", "invalid TOML"),
    ("not utf-8", b"name = \"caf\xe9\"\n", "r.toml", "not UTF-8"),
    ("empty file", "", "stages", "no stages"),
    ("unknown top-level key", ("name = ", "nmae = "), "nmae", "did you mean name"),
    ("name not a string", ["name=3"], "name", "must be a string"),
    ("name with a slash", ["name=\"a/b\""], "name", "a name, not a path"),
    ("name with dot dot", ["name=\"..\""], "name", "a name, not a path"),
    ("name empty", ["name=\"\""], "name", "a name, not a path"),
    ("description not a string", ["description=[1]"], "description", "must be a string"),
    ("store not a string", ["store=1"], "store", "must be a string"),
    ("plugins not a list", ["plugins=\"x.py\""], "plugins", "must be a list"),
    ("plugins entry not a string", ["plugins=[1]"], "plugins[0]", "path to a plugin file"),
    ("plugin file missing", ["plugins=[\"nope.py\"]"], "plugins[0]", "does not exist"),
    ("plugin file fails to import", ["plugins=[\"broken_plugin.py\"]"], "plugins[0]", "failed to load"),
    ("stages not a table", ["stages=3"], "stages", "must be a table"),
    ("models not a table", ["models=[1]"], "models", "must be a table"),
    # -- models
    ("model as a list", ["models.solar=[1, 2]"], "models.solar", "string or a table"),
    ("model as a number", ["models.solar=3"], "models.solar", "string or a table"),
    ("model alias with a space", ("[models]\n", "[models]\n\"my model\" = \"tiny:llama\"\n"), "models.my model", "letters, digits"),
    ("model table without source", ["models.solar={ layers = 2 }"], "models.solar", "'source' key"),
    ("unknown model source", ["models.solar={ source = \"tinny\" }"], "models.solar.source", "did you mean tiny"),
    ("tiny option misspelt", ["models.solar=\"tiny:llama?layerz=2\""], "models.solar", "layerz"),
    ("tiny option not a number", ["models.solar=\"tiny:llama?layers=two\""], "models.solar.layers", "valid integer"),
    ("tiny option out of range", ["models.solar=\"tiny:llama?layers=0\""], "models.solar.layers", "greater than or equal to 1"),
    ("tiny architecture unknown", ["models.solar=\"tiny:gpt9\""], "models.solar.arch", "input should be"),
    ("local directory missing", ["models.solar=\"./no-such-model\""], "models.solar", "does not exist"),
    ("hub id malformed", ["models.solar=\"org//name\""], "models.solar", "org/name"),
    ("hub id with spaces", ["models.solar=\"my org/my model\""], "models.solar", "org/name"),
    # -- stages in general
    ("stage as a string", ["stages.merge=\"merge\""], "stages.merge", "must be a table"),
    ("stage name with a dot", ("[stages.publish]", "[stages.\"pub.lish\"]"), "stages.pub.lish", "letters, digits"),
    ("stage named like a model", ("[stages.publish]", "[stages.solar]"), "stages.solar", "same name as a model"),
    ("kind missing", ("kind = \"publish\"\n", ""), "stages.publish", "missing 'kind'"),
    ("kind misspelt", ["stages.publish.kind=\"publsh\""], "stages.publish.kind", "did you mean publish"),
    ("kind as a list", ["stages.publish.kind=[\"publish\"]"], "stages.publish.kind", "must be a string"),
    ("kind as a table", ["stages.publish.kind={ name = \"publish\" }"], "stages.publish.kind", "must be a string"),
    ("reference to nothing", ["stages.dpo.model=\"merg\""], "stages.dpo.model", "did you mean merge"),
    ("reference to itself", ["stages.dpo.model=\"dpo\""], "stages.dpo.model", "its own output"),
    ("cycle", ["stages.data.tokenizer=\"dpo\""], "stages.data.tokenizer", "cycle"),
    # -- merge
    ("merge method misspelt", ["stages.merge.merge_method=\"slep\""], "stages.merge.merge_method", "did you mean slerp"),
    ("merge method as a number", ["stages.merge.merge_method=1"], "stages.merge.merge_method", "valid string"),
    ("merge models and slices", ["stages.merge.models=[{ model = \"solar\" }]"], "stages.merge", "exactly one of"),
    ("slerp without base model", ("base_model = \"solar\"\n", ""), "stages.merge.slices[0]", "needs base_model"),
    ("merge parameter unknown", ["stages.merge.parameters={ tt = 0.5 }"], "stages.merge.parameters.tt", "did you mean t"),
    ("merge parameter out of range", ["stages.merge.merge_method=\"della\"", "stages.merge.parameters={ weight = 0.5, density = 0.5, epsilon = 0.6 }"],
     "stages.merge.parameters.epsilon", "density ± epsilon must lie strictly between 0 and 1"),
    ("merge parameter of the wrong type", ["stages.merge.parameters={ t = \"half\" }"], "stages.merge.parameters.t", "valid number"),
    ("merge parameter ignored in strict mode", ["stages.merge.parameters={ t = 0.5, weight = 1 }", "stages.merge.strict=true"],
     "stages.merge.parameters.weight", "slerp has no parameter weight"),
    ("merge chat template unknown", ["stages.merge.chat_template=\"chatmll\""], "stages.merge.chat_template", "did you mean chatml"),
    ("merge lora missing", ("{ model = \"sauerkraut\"", "{ model = \"sauerkraut+./no-lora\""),
     "stages.merge.slices[0].sources[0].model", "LoRA './no-lora': no such directory"),
    ("merge parameter missing", ["stages.merge.parameters={}"], "stages.merge.slices[0]", "needs parameter 't'"),
    ("merge gradient of strings", ["stages.merge.parameters={ t = [\"a\", \"b\"] }"], "stages.merge.parameters.t[0]", "valid number"),
    ("layer range reversed", ("layer_range = [0, 2] }, { model = \"solar\"", "layer_range = [2, 0] }, { model = \"solar\""),
     "stages.merge.slices[0].sources[0].layer_range", "0 <= start < end"),
    ("layer range of one number", ("layer_range = [0, 2] }, { model = \"solar\"", "layer_range = [2] }, { model = \"solar\""),
     "stages.merge.slices[0].sources[0].layer_range[1]", "missing"),
    ("slice sources of different lengths", ("layer_range = [0, 2] }, { model = \"solar\"", "layer_range = [0, 1] }, { model = \"solar\""),
     "stages.merge.slices[0]", "same number of layers"),
    ("slice with an unknown model", ("{ model = \"sauerkraut\"", "{ model = \"sauerkrat\""), "stages.merge.slices[0].sources[0].model",
     "did you mean sauerkraut"),
    ("merge dtype unknown", ["stages.merge.dtype=\"float8\""], "stages.merge.dtype", "input should be"),
    ("merge device unknown", ["stages.merge.device=\"gpu\""], "stages.merge.device", "cuda"),
    ("merge shard size unreadable", ["stages.merge.shard_size=\"big\""], "stages.merge.shard_size", "cannot read a size"),
    ("merge shard size zero", ["stages.merge.shard_size=\"0\""], "stages.merge.shard_size", "must be positive"),
    ("merge engine unknown", ["stages.merge.engine=\"fast\""], "stages.merge.engine", "input should be"),
    ("merge seed as text", ["stages.merge.seed=\"x\""], "stages.merge.seed", "valid integer"),
    # -- dataset
    ("adapter misspelt", ["stages.data.sources=[{ adapter = \"orka\", path = \"data/tiny_orca.jsonl\" }]"],
     "stages.data.sources[0].adapter", "did you mean orca"),
    ("adapter option flat", ["stages.data.sources=[{ adapter = \"orca\", path = \"data/tiny_orca.jsonl\", system = false }]"],
     "stages.data.sources[0].system", "options table"),
    ("adapter option misspelt", ["stages.data.sources=[{ adapter = \"orca\", path = \"data/tiny_orca.jsonl\", options = { sytem = false } }]"],
     "stages.data.sources[0].options.sytem", "did you mean system"),
    ("adapter option wrong type", ["stages.data.sources=[{ adapter = \"orca\", path = \"data/tiny_orca.jsonl\", options = { system = [1] } }]"],
     "stages.data.sources[0].options.system", "valid boolean"),
    ("data file missing", ["stages.data.sources=[{ adapter = \"orca\", path = \"data/none.jsonl\" }]"],
     "stages.data.sources[0].path", "no such file"),
    ("data file of unknown format", ["stages.data.sources=[{ adapter = \"orca\", path = \"r.toml\" }]"],
     "stages.data.sources[0].path", "cannot tell the format"),
    ("data format unknown", ["stages.data.sources=[{ adapter = \"orca\", path = \"data/tiny_orca.jsonl\", format = \"xml\" }]"],
     "stages.data.sources[0].format", "unknown file format"),
    ("source without path", ["stages.data.sources=[{ adapter = \"orca\" }]"], "stages.data.sources[0].path", "missing"),
    ("sources empty", ["stages.data.sources=[]"], "stages.data.sources", "at least 1"),
    ("weight and max_rows", ["stages.data.sources=[{ adapter = \"orca\", path = \"data/tiny_orca.jsonl\", weight = 1, max_rows = 2 }]"],
     "stages.data.sources[0]", "either weight or max_rows"),
    ("weight zero", ["stages.data.sources=[{ adapter = \"orca\", path = \"data/tiny_orca.jsonl\", weight = 0 }]"],
     "stages.data.sources[0].weight", "greater than 0"),
    ("max_length without tokenizer", ("tokenizer = \"merge\"\n", ""), "stages.data", "set tokenizer"),
    ("test_size of 1.5", ["stages.data.test_size=1.5"], "stages.data", "test_size"),
    ("test_size negative", ["stages.data.test_size=-3"], "stages.data", "test_size"),
    ("num_proc negative", ["stages.data.num_proc=-2"], "stages.data.num_proc", "greater than or equal to 1"),
    ("num_proc absurd", ["stages.data.num_proc=100000"], "stages.data.num_proc", "less than or equal to"),
    ("batch_size zero", ["stages.data.batch_size=0"], "stages.data.batch_size", "greater than or equal to 1"),
    ("mixed preference and sft adapters", ["stages.data.sources=[{ adapter = \"orca\", path = \"data/tiny_orca.jsonl\" }, "
                                           "{ adapter = \"messages\", path = \"data/tiny_orca.jsonl\" }]"],
     "stages.data.sources", "cannot mix"),
    # -- train
    ("trainer misspelt", ["stages.dpo.trainer=\"dop\""], "stages.dpo.trainer", "did you mean dpo"),
    ("args key misspelt", ["stages.dpo.args.learnin_rate=1e-6"], "stages.dpo.args.learnin_rate", "did you mean learning_rate"),
    ("args wrong kind", ["stages.dpo.args.learning_rate=\"fast\""], "stages.dpo.args.learning_rate", "must be a number"),
    ("learning rate negative", ["stages.dpo.args.learning_rate=-1e-5"], "stages.dpo.args.learning_rate", "must be positive"),
    ("learning rate nan", ["stages.dpo.args.learning_rate=nan"], "stages.dpo.args.learning_rate", "finite"),
    ("learning rate inf", ["stages.dpo.args.learning_rate=inf"], "stages.dpo.args.learning_rate", "finite"),
    ("beta nan", ["stages.dpo.args.beta=nan"], "stages.dpo.args.beta", "finite"),
    ("beta zero", ["stages.dpo.args.beta=0"], "stages.dpo.args.beta", "must be positive"),
    ("batch size zero", ["stages.dpo.args.per_device_train_batch_size=0"], "stages.dpo.args.per_device_train_batch_size", "must be positive"),
    ("reserved arg", ["stages.dpo.args.output_dir=\"out\""], "stages.dpo.args.output_dir", "set by sakura"),
    ("lora rank zero", ["stages.dpo.lora.r=0"], "stages.dpo.lora.r", "greater than or equal to 1"),
    ("lora key misspelt", ["stages.dpo.lora.rank=8"], "stages.dpo.lora.rank", "unknown option"),
    ("lora dropout one", ["stages.dpo.lora.dropout=1.0"], "stages.dpo.lora.dropout", "less than 1"),
    ("lora quantize unknown", ["stages.dpo.lora.quantize=\"2bit\""], "stages.dpo.lora.quantize", "input should be"),
    ("launcher config missing", ["stages.dpo.launcher={ config_file = \"accel.yaml\" }"], "stages.dpo.launcher.config_file", "not found"),
    ("launcher processes zero", ["stages.dpo.launcher={ num_processes = 0 }"], "stages.dpo.launcher.num_processes", "greater than or equal to 1"),
    ("train model missing", ("model = \"merge\"\ndataset", "dataset"), "stages.dpo.model", "missing"),
    ("train args not a table", ["stages.dpo.args=3"], "stages.dpo.args", "valid dictionary"),
    # -- publish
    ("publisher misspelt", ["stages.publish.publisher=\"locl\""], "stages.publish.publisher", "did you mean local"),
    ("publisher option misspelt", ["stages.publish.pth=\"x\""], "stages.publish.pth", "did you mean path"),
    ("publisher option missing", ("path = \"dist/out\"\n", ""), "stages.publish.path", "missing"),
    ("hub repo id malformed", ('publisher = "local"\nmodel = "dpo"\npath = "dist/out"', 'publisher = "hub"\nmodel = "dpo"\nrepo_id = "a/b/c"'),
     "stages.publish.repo_id", "a/b/c"),
    ("hub retries zero", ('publisher = "local"\nmodel = "dpo"\npath = "dist/out"', 'publisher = "hub"\nmodel = "dpo"\nrepo_id = "me/x"\nretries = 0'),
     "stages.publish.retries", "greater than or equal to 1"),
    ("hub option of the local publisher", ('path = "dist/out"', 'path = "dist/out"\nrepo_id = "me/x"'), "stages.publish.repo_id",
     "unknown option for publisher 'local'"),
    ("card tags not a list", ["stages.publish.tags=\"x\""], "stages.publish.tags", "valid list"),
    # -- overrides themselves
    ("override without value", ["stages.dpo.args.beta"], "r.toml", "not KEY=VALUE"),
    ("override into a value", ["stages.dpo.kind.x=1"], "stages.dpo.kind", "non-table value"),
]


def case_ids() -> list[str]:
    return [c[0] for c in CASES]


def write_case(tmp_path: Path, how: object) -> tuple[Path, list[str]]:
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    shutil.copy(REPO / "tests" / "core_plugins" / "broken_plugin.py", tmp_path / "broken_plugin.py")
    path = tmp_path / "r.toml"
    overrides: list[str] = []
    if isinstance(how, list):
        overrides = how
        path.write_text(BASE)
    elif isinstance(how, tuple):
        old, new = how
        assert old in BASE, old
        path.write_text(BASE.replace(old, new, 1))
    elif isinstance(how, bytes):
        path.write_bytes(how)
    else:
        path.write_text(str(how))
    return path, overrides


def sakura(capsys, *args: str) -> tuple[int, str]:
    """The real CLI, in this process (fast: each case imports nothing new); (exit code, stderr)."""
    cli._PLUGINS = None  # a fresh plugin manager: a case's plugin files must not leak into the next
    try:
        cli.main([*args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.err


def test_the_base_recipe_is_valid(tmp_path, capsys):
    path, _ = write_case(tmp_path, [])
    code, err = sakura(capsys, "validate", str(path))
    assert (code, err) == (0, "")


def test_the_corpus_is_large_and_its_cases_distinct():
    assert len(CASES) >= 100 - 10  # with the bad models and data files of tests/test_bad_inputs.py: over 100
    assert len(set(case_ids())) == len(CASES)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("what, how, key, words", CASES, ids=case_ids())
def test_a_bad_recipe_is_one_line_exit_2_and_nothing_stored(tmp_path, capsys, command, what, how, key, words):
    path, overrides = write_case(tmp_path, how)
    args = [command, str(path), *[part for o in overrides for part in ("-s", o)]]
    if command == "run":
        args += ["-q", "--store", str(tmp_path / "store")]
    code, err = sakura(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    line = lines[0]
    assert line.startswith("r.toml: "), line
    named = line.split(": ")[1] if key != "r.toml" else "r.toml"  # the key path the line names, after the file
    assert named == key or named.startswith((f"{key}.", f"{key}[")), f"{key!r} not named in: {line}"
    assert words.lower() in line.lower(), f"{words!r} not in: {line}"
    assert not (tmp_path / "store" / "artifacts").exists() and not (tmp_path / ".sakura").exists()
