"""The pickle refusal judges the weight files transformers will load, not whether any *.safetensors is present.

A directory with ``pytorch_model.bin`` and a stray ``extra.safetensors`` used to pass the check (it stopped at
the first safetensors file) and transformers then loaded the pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sakura_models.local import check_model_dir
from sakura_models.weights import weights_to_load

from sakura_core.errors import RecipeError, StageError
from sakura_core.recipe import load_recipe

STAGE = '[stages.p]\nkind = "publish"\npublisher = "local"\nmodel = "m"\npath = "out"\n'


def model_dir(tmp_path: Path, files: dict[str, bytes], config: dict | None = None) -> Path:
    path = tmp_path / "m"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def index(*shards: str) -> bytes:
    return json.dumps({"metadata": {}, "weight_map": {f"t{i}": shard for i, shard in enumerate(shards)}}).encode()


# (layout, files, transformers_weights in config.json, the file transformers picks, pickled?)
LAYOUTS = [
    ("safetensors", {"model.safetensors": b"s"}, None, "model.safetensors", False),
    ("safetensors beside a pickle", {"model.safetensors": b"s", "pytorch_model.bin": b"p"}, None, "model.safetensors", False),
    ("pickle beside a stray safetensors", {"pytorch_model.bin": b"p", "extra.safetensors": b"s"}, None, "pytorch_model.bin", True),
    ("sharded safetensors", {"model.safetensors.index.json": index("a.safetensors"), "a.safetensors": b"s",
                             "pytorch_model.bin": b"p"}, None, "model.safetensors.index.json", False),
    ("sharded pickle beside stray shards", {"pytorch_model.bin.index.json": index("p1.bin"), "p1.bin": b"p",
                                            "model-00001-of-00002.safetensors": b"s"}, None, "pytorch_model.bin.index.json", True),
    ("config names a pickle", {"model.safetensors": b"s", "adapter_model.bin": b"p"}, "adapter_model.bin", "adapter_model.bin", True),
]


@pytest.mark.parametrize("what, files, explicit, chosen, pickled", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
def test_the_weights_judged_are_those_transformers_picks(tmp_path, what, files, explicit, chosen, pickled):
    from transformers.modeling_utils import _get_resolved_checkpoint_files

    config = {"model_type": "llama", **({"transformers_weights": explicit} if explicit else {})}
    path = model_dir(tmp_path, files, config)
    weights = weights_to_load(path)
    assert (weights.chosen, weights.pickled) == (chosen, pickled)
    # transformers itself, on the same directory (it reads transformers_weights from the config it loaded)
    picked, _ = _get_resolved_checkpoint_files(
        str(path), variant=None, gguf_file=None, use_safetensors=None, user_agent={}, is_remote_code=False,
        transformers_explicit_filename=explicit,
    )
    assert Path(picked[0]).name in weights.files


def test_a_pickle_beside_a_stray_safetensors_is_refused_unless_allowed(tmp_path):
    path = model_dir(tmp_path, {"pytorch_model.bin": b"p", "extra.safetensors": b"s"})
    recipe = tmp_path / "r.toml"
    recipe.write_text('[models]\nm = "./m"\n' + STAGE)
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    assert str(info.value) == (
        f"r.toml: models.m: {path} would load pickled weights (pytorch_model.bin), not extra.safetensors (neither "
        "model.safetensors nor in an index: transformers ignores it); they can run code when loaded. Convert them "
        "to safetensors, or set allow_pickle = true for this model"
    )
    recipe.write_text('[models]\nm = { source = "local", path = "./m", allow_pickle = true }\n' + STAGE)
    load_recipe(recipe)


@pytest.mark.parametrize(
    "files, message",
    [
        ({"pytorch_model.bin": b"p"}, "has only pickled weights (pytorch_model.bin)"),
        ({"extra.safetensors": b"s"}, "has no weights transformers loads"),
        ({"model.safetensors.index.json": index("a.safetensors", "b.safetensors"), "a.safetensors": b"s"},
         "b.safetensors is listed in model.safetensors.index.json but missing"),
        ({"model.safetensors.index.json": b"{}"}, "model.safetensors.index.json is not a readable index"),
    ],
)
def test_other_weight_layouts_are_one_line(tmp_path, files, message):
    with pytest.raises(StageError) as info:
        check_model_dir(model_dir(tmp_path, files))
    assert message in str(info.value)


def test_the_merge_reads_the_same_files(tmp_path):
    from sakura_merge.inputs import weight_files

    path = model_dir(tmp_path, {"pytorch_model.bin": b"p", "extra.safetensors": b"s"})
    assert weight_files(path) == ([], [path / "pytorch_model.bin"])  # the stray file is not taken for the model


def test_a_pickle_torch_refuses_is_one_line_naming_what_it_blocked(tmp_path, tiny_model_factory):
    """torch's refusal opens with a paragraph on torch 2.6's defaults; the line kept is the one naming the global."""
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from conftest import RunsCode
    from sakura_models.loading import from_pretrained

    model = tmp_path / "m"
    shutil.copytree(tiny_model_factory(seed=3), model)
    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save({**tensors, "payload": RunsCode()}, model / "pytorch_model.bin")
    with pytest.raises(StageError) as info:
        from_pretrained(AutoModelForCausalLM, model, "m")
    assert str(info.value) == (f"cannot load the model of m ({model}): UnpicklingError: Trying to load unsupported GLOBAL "
                               "posix.system whose module posix is blocked.")
