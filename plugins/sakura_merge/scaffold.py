"""What ``sakura new-plugin NAME --kind merge`` writes: a merge method package (``string.Template`` texts)."""

from sakura_core.scaffold_templates import ScaffoldKind

MERGE_MODULE = '''\
"""``$registered``: a merge method for sakura, in one class: an options model and ``run``.

It moves the base model's weights toward the average of the other models' weights by ``strength``
(0: the base unchanged, 1: the plain average of the others), tensor by tensor.

sakura's merge executor does everything else: it streams the tensors from safetensors, converts them to
the recipe's ``dtype``, resolves layer gradients and filters into one value per tensor, checks every value
against ``${camel}Options`` before any weights are read, and writes the merged model with its tokenizer.
"""

from __future__ import annotations

from pydantic import Field

from sakura_core.options import Options
from sakura_merge import MergeCall, MergeMethod


class ${camel}Options(Options):
    """Every parameter of the method, with its type, default and limits (a recipe's values are checked)."""

    strength: float = Field(0.5, ge=0, le=1, description="how far the base moves toward the others' average")


class ${camel}(MergeMethod):
    """The base model moved toward the average of the others by `strength`."""

    Options = ${camel}Options
    base = "required"  # base_model must be one of the models merged
    min_models = 2
    version = "1"  # bump when the output for the same input changes on purpose

    def run(self, call: MergeCall):
        """One output tensor: ``call.tensors`` in model order, ``call.base`` the base model's index."""
        import torch  # here, not at the top: importing the plugin stays cheap

        base = call.base_tensor
        work = torch.float64 if base.dtype == torch.float64 else torch.float32
        others = sum(call.tensors[i].to(work) for i in call.others) / len(call.others)
        return torch.lerp(base.to(work), others, call.params.strength).to(base.dtype)
'''

MERGE_PLUGIN = '''

@hookimpl
def sakura_register_merge_methods(register):
    from $module.method import ${camel}

    register("$registered", ${camel}())
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
**one class**: a pydantic options model for its parameters and `run(call)`, one output tensor from its
inputs; sakura's executor does the rest (streaming from safetensors, devices, dtypes, layer gradients and
filters, sharded output, tokenizer).'''

MERGE_TESTS = '''\
The tests merge two tiny generated models through sakura's engine and compare the result with the
formula, and check that a value out of range or a misspelt parameter fails before any weights are read.'''


SCAFFOLD = ScaffoldKind(
    title="A merge method",
    description="A merge method for sakura",
    implementation="method.py",
    module=MERGE_MODULE,
    plugin=MERGE_PLUGIN,
    test=MERGE_TEST,
    usage=MERGE_USAGE,
    about=MERGE_ABOUT,
    tests=MERGE_TESTS,
)
