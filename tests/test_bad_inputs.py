"""Bad models and data files through the real CLI in a subprocess: one line naming the file (and the row or
the model's key), the exit code, no traceback, nothing in the store's artifacts/.

The malformed recipes are tests/test_bad_recipes.py; this table holds what is wrong in the files a recipe
names. Model cases stop at ``sakura validate`` (no work: exit 2); data-file cases need ``sakura run`` of a
dataset stage (no model, a few rows: exit 1, the stage's error).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_sakura

ORCA = {"system": "", "question": "Name a book.", "chosen": "Paws on the Long Road Home", "rejected": "A book."}
STAGE = '[stages.p]\nkind = "publish"\npublisher = "local"\nmodel = "m"\npath = "out"\n'


def safetensors(config: dict, layers: int, embed: tuple[int, int]) -> tuple[str, bytes]:
    """A config.json and a safetensors file holding ``layers`` layers and an embedding of shape ``embed`` (a
    header and zeros: what the checks read)."""
    import struct

    names = {"model.embed_tokens.weight": list(embed)}
    names |= {f"model.layers.{i}.mlp.down_proj.weight": [embed[1], embed[1]] for i in range(layers)}
    header, offset = {}, 0
    for name, shape in names.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return json.dumps({"model_type": "llama", **config}), struct.pack("<Q", len(raw)) + raw + bytes(offset)


def disagreeing(config: dict, layers: int = 2, embed: tuple[int, int] = (16, 8)) -> dict:
    text, weights = safetensors(config, layers, embed)
    return {"config.json": text, "model.safetensors": weights}


def index(*shards: str) -> str:
    return json.dumps({"metadata": {}, "weight_map": {f"t{i}": shard for i, shard in enumerate(shards)}})


# (id, files of the model directory m/, words the line must hold); the line names models.m and the directory
MODELS = [
    ("pickle beside a stray safetensors", {"pytorch_model.bin": "p", "extra.safetensors": "s"},
     "would load pickled weights (pytorch_model.bin), not extra.safetensors"),
    ("pickle shards beside stray safetensors", {"pytorch_model.bin.index.json": index("p1.bin"), "p1.bin": "p",
                                                "model-00001-of-00001.safetensors": "s"}, "pickled weights"),
    ("only a pickle", {"pytorch_model.bin": "p"}, "has only pickled weights (pytorch_model.bin)"),
    ("config names a pickle", {"config.json": json.dumps({"transformers_weights": "adapter_model.bin"}),
                               "model.safetensors": "s", "adapter_model.bin": "p"}, "adapter_model.bin"),
    ("only a stray safetensors", {"extra.safetensors": "s"}, "no weights transformers loads"),
    ("a shard missing", {"model.safetensors.index.json": index("a.safetensors", "b.safetensors"), "a.safetensors": "s"},
     "b.safetensors is listed in model.safetensors.index.json but missing"),
    ("index without weight_map", {"model.safetensors.index.json": "{}"}, "not a readable index"),
    ("no config.json", {"config.json": None, "model.safetensors": "s"}, "has no config.json"),
    ("config.json not JSON", {"config.json": '{"model_type": ', "model.safetensors": "s"},
     "config.json is not valid JSON (Expecting value at line 1, column 16)"),
    ("config.json a list", {"config.json": "[1]", "model.safetensors": "s"}, "config.json is not a JSON object"),
    ("config.json not UTF-8", {"config.json": b"\xff\xfe{}", "model.safetensors": "s"}, "config.json is not UTF-8 text"),
    ("config with more layers than the weights", disagreeing({"num_hidden_layers": 4, "hidden_size": 8, "vocab_size": 16}),
     "config.json says num_hidden_layers = 4, the weights hold 2 layers"),
    ("config with another hidden size", disagreeing({"num_hidden_layers": 2, "hidden_size": 16, "vocab_size": 16}),
     "config.json says hidden_size = 16, the embeddings are 16 x 8"),
    ("config with another vocabulary", disagreeing({"num_hidden_layers": 2, "hidden_size": 8, "vocab_size": 32}),
     "config.json says vocab_size = 32, the embeddings have 16 rows"),
]

# (id, the rows of data/x.jsonl, adapter, words the line must hold after "row N: ")
ROWS = [
    ("question a list", [ORCA, dict(ORCA, question=["a", "b"], chosen={"x": 1})], "orca", "row 2: question is a list"),
    ("chosen an object", [ORCA, dict(ORCA, chosen={"text": "x"})], "orca", "row 2: chosen is an object"),
    ("rejected a number", [ORCA, ORCA, dict(ORCA, rejected=3)], "orca", "row 3: rejected is a number (3)"),
    ("system a boolean", [dict(ORCA, system=True)], "orca", "row 1: system is a boolean"),
    ("every chosen a number", [dict(ORCA, chosen=i) for i in range(3)], "orca", "row 1: chosen is a number (0)"),
    ("math response a list", [{"instruction": "1 + 1?", "chosen_response": ["Two."], "rejected_response": "Three."}],
     "math", "row 1: chosen_response is a list"),
    ("toxic prompt an object", [{"prompt": {"q": 1}, "chosen": "c", "rejected": "r"}], "toxic", "row 1: prompt is an object"),
    ("columns prompt a number", [{"prompt": 7, "chosen": "c", "rejected": "r"}], "columns", "row 1: prompt is a number (7)"),
    ("messages not a list", [{"messages": "hello"}], "messages", "row 1: messages is text"),
]


def assert_one_line(done, code: int, *words: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, f"exit {done.returncode}: {done.stderr}"
    assert len(lines) == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("what, files, words", MODELS, ids=[m[0] for m in MODELS])
def test_a_bad_model_directory(tmp_path, what, files, words):
    model = tmp_path / "m"
    model.mkdir()
    files = {"config.json": json.dumps({"model_type": "llama"}), **files}
    for name, content in files.items():
        if isinstance(content, bytes):
            (model / name).write_bytes(content)
        elif content is not None:
            (model / name).write_text(content)
    (tmp_path / "r.toml").write_text('[models]\nm = "./m"\n' + STAGE)
    done = run_sakura("validate", "r.toml", cwd=tmp_path, timeout=120)
    line = assert_one_line(done, 2, words)
    assert line.startswith(f"r.toml: models.m: {model}"), line
    assert not (tmp_path / ".sakura").exists()


@pytest.mark.parametrize("what, rows, adapter, words", ROWS, ids=[r[0] for r in ROWS])
def test_a_row_of_the_wrong_type(tmp_path, what, rows, adapter, words):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = f'[{{ adapter = "{adapter}", path = "data/x.jsonl" }}]'
    (tmp_path / "r.toml").write_text(f'name = "t"\n[stages.data]\nkind = "dataset"\nsources = {sources}\n')
    store = tmp_path / "store"
    done = run_sakura("run", "r.toml", "-q", "--store", store, cwd=tmp_path, timeout=300)
    assert_one_line(done, 1, f"stage data: source 0 (data/x.jsonl, adapter {adapter}): {words}")
    assert not list((store / "artifacts").glob("*")) if (store / "artifacts").exists() else True


def test_the_tables_are_distinct():
    names = [m[0] for m in MODELS] + [r[0] for r in ROWS]
    assert len(names) == len(set(names))
    assert Path(__file__).name == "test_bad_inputs.py"  # tests/test_bad_recipes.py counts on this file's cases
