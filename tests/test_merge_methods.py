"""Native merge methods against mergekit 0.1.5, tensor by tensor, on tiny models: bit-identical (the wider
corpus, with mergekit-yaml itself, is tests/test_mergekit_conformance.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sakura_core.plugins import Plugins
from sakura_merge.config import MergeConfig
from sakura_merge.runner import execute_merge


def load_tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(Path(directory).glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def max_ulps(a, b) -> float:
    """Largest difference between a and b in units in the last place of their dtype (at a's magnitude)."""
    import torch

    assert a.dtype == b.dtype and a.shape == b.shape
    if torch.equal(a, b):
        return 0.0
    info = torch.finfo(a.dtype)
    x, y = a.double(), b.double()
    scale = torch.maximum(x.abs(), y.abs()).clamp(min=info.tiny)
    ulp = torch.exp2(torch.floor(torch.log2(scale))) * info.eps
    return float(((x - y).abs() / ulp).max())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from sakura_models.tiny import TinyOptions, generate_tiny_model

    root = tmp_path_factory.mktemp("merge-models")
    out = {}
    for name, options in {
        "a": TinyOptions(seed=1),
        "b": TinyOptions(seed=2),
        "c": TinyOptions(seed=3),
        "a16": TinyOptions(seed=1, dtype="bfloat16"),
        "b16": TinyOptions(seed=2, dtype="bfloat16"),
        "qa": TinyOptions(arch="qwen2", seed=1),
        "qb": TinyOptions(arch="qwen2", seed=2),
    }.items():
        generate_tiny_model(options, root / name)
        out[name] = str(root / name)
    return out


def merge(config: dict, models: dict, out: Path, **extra) -> dict:
    cfg = MergeConfig.model_validate({**config, **extra})
    out.mkdir(parents=True)
    method = Plugins(entry_points=False).merge_methods.get(cfg.merge_method)
    return execute_merge(cfg, method, models, out)


CASES = {
    "linear-bf16-gradient-weights": {
        "merge_method": "linear", "dtype": "bfloat16",
        "models": [{"model": "a", "parameters": {"weight": 0.3}},
                   {"model": "b", "parameters": {"weight": [{"filter": "mlp", "value": [0.2, 0.9]}, {"value": 0.7}]}}],
    },
    "linear-fp32-to-fp16": {
        "merge_method": "linear", "dtype": "float32", "out_dtype": "float16",
        "models": [{"model": "a", "parameters": {"weight": 1.0}}, {"model": "b", "parameters": {"weight": 3.0}},
                   {"model": "c", "parameters": {"weight": 0.5}}],
    },
    "slerp-bf16-inputs": {
        "merge_method": "slerp", "base_model": "a16", "models": [{"model": "a16"}, {"model": "b16"}],
        "parameters": {"t": [{"filter": "self_attn", "value": [0.1, 0.9]}, {"value": 0.35}]},
    },
    "task-arithmetic-fp16-filters": {
        "merge_method": "task_arithmetic", "base_model": "c", "dtype": "float16",
        "models": [{"model": "a", "parameters": {"weight": 0.3}},
                   {"model": "b", "parameters": {"weight": [{"filter": "self_attn", "value": [0.2, 0.9]}, {"value": 0.5}]}}],
        "parameters": {"lambda": 0.8},
    },
    "ties-bf16-density-gradient": {
        "merge_method": "ties", "base_model": "c", "dtype": "bfloat16",
        "models": [{"model": "a", "parameters": {"weight": 0.6, "density": 0.5}},
                   {"model": "b", "parameters": {"weight": 0.5, "density": [0.3, 0.8]}}],
    },
    "model-stock-fp32": {
        "merge_method": "model_stock", "base_model": "c", "models": [{"model": "a"}, {"model": "b"}, {"model": "c"}],
        "dtype": "float32",
    },
    "passthrough-dus-fp16-scale": {
        "merge_method": "passthrough", "dtype": "float16",
        "slices": [{"sources": [{"model": "a", "layer_range": [0, 3]}]},
                   {"sources": [{"model": "b", "layer_range": [1, 4],
                                 "parameters": {"scale": [{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]}}]}],
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_native_matches_mergekit(case, models, tmp_path):
    import torch

    config = CASES[case]
    ours = merge(config, models, tmp_path / "sakura")
    theirs = merge(config, models, tmp_path / "mergekit", engine="mergekit")
    assert ours["engine"] == "native" and theirs["engine"] == "mergekit"
    a, b = load_tensors(tmp_path / "sakura"), load_tensors(tmp_path / "mergekit")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name
    expected = config.get("out_dtype") or config.get("dtype") or "bfloat16"
    assert all(str(t.dtype) == f"torch.{expected}" for t in a.values())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_slerp_over_several_chunks_matches_mergekit(dtype):
    """The tiny models' tensors fit in one of SLERP's reduction chunks (2**20 values); these span three, end
    mid-chunk, and include the linear fallbacks (equal, opposite) and a zero tensor."""
    import torch
    from mergekit.merge_methods.slerp import slerp as mergekit_slerp

    from sakura_merge.methods import slerp_tensors

    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)
    n = 2 * 2**20 + 5
    a = (torch.randn(n, generator=generator) * 0.02).to(torch_dtype)
    b = (torch.randn(n, generator=generator) * 0.02).to(torch_dtype)
    t_dtype = torch.float64 if dtype == "float64" else torch.float32
    with torch.inference_mode():  # the executor's first call makes the reused scratch: usable outside it after
        slerp_tensors(0.5, b[:3].float(), a[:3].float())
    for v0, v1 in [(a, b), (a, a.clone()), (a, -a), (torch.zeros_like(a), b)]:
        for t in (0.0, 0.3, 1.0, 1.4):
            theirs = mergekit_slerp(torch.tensor([t], dtype=t_dtype), v0.unsqueeze(0), v1.unsqueeze(0)).squeeze(0)
            ours = slerp_tensors(t, v0, v1)
            assert ours.dtype == theirs.dtype
            assert torch.equal(ours, theirs), (t, v0 is v1)


def test_depth_upscaling_config_loads_in_transformers(models, tmp_path):
    """Qwen2 has layer_types: the 6-layer result of [0, 3] + [1, 4] must load (mergekit's own output does not)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = {"merge_method": "passthrough",
              "slices": [{"sources": [{"model": "qa", "layer_range": [0, 3]}]},
                         {"sources": [{"model": "qb", "layer_range": [1, 4]}]}]}
    merge(config, models, tmp_path / "dus", shard_size="100KB")
    out = tmp_path / "dus"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 6 and len(cfg["layer_types"]) == 6
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded, with an index
    model = AutoModelForCausalLM.from_pretrained(out)
    source = load_tensors(Path(models["qb"]))
    assert torch.equal(model.state_dict()["model.layers.3.mlp.up_proj.weight"], source["model.layers.1.mlp.up_proj.weight"])
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_dare_is_reproducible_with_a_seed(models, tmp_path):
    import torch

    config = {"merge_method": "dare_ties", "base_model": "c", "dtype": "float32",
              "models": [{"model": "a", "parameters": {"weight": 0.5, "density": 0.4}},
                         {"model": "b", "parameters": {"weight": 0.5, "density": 0.6}}]}
    merge(config, models, tmp_path / "one", seed=7)
    merge(config, models, tmp_path / "two", seed=7)
    merge(config, models, tmp_path / "other", seed=8)
    one, two, other = (load_tensors(tmp_path / n) for n in ("one", "two", "other"))
    name = "model.layers.1.mlp.up_proj.weight"
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not torch.equal(one[name], other[name])


def test_per_tensor_streams_do_not_depend_on_the_other_tensors(models, tmp_path):
    """random_stream = "per_tensor": a tensor's draws depend on the seed and its name only, so merging a slice
    of the layers gives the same tensors as the whole merge (mergekit's one stream would not)."""
    import torch

    parameters = {"weight": 0.5, "density": 0.4}
    whole = {"merge_method": "dare_linear", "base_model": "c", "dtype": "float32", "random_stream": "per_tensor",
             "slices": [{"sources": [{"model": "a", "layer_range": [0, 4], "parameters": parameters},
                                     {"model": "c", "layer_range": [0, 4]}]}]}
    part = {**whole, "slices": [{"sources": [{"model": "a", "layer_range": [0, 2], "parameters": parameters},
                                             {"model": "c", "layer_range": [0, 2]}]}]}
    merge(whole, models, tmp_path / "whole", seed=7)
    merge(part, models, tmp_path / "part", seed=7)
    merge({**whole, "random_stream": "mergekit"}, models, tmp_path / "stream", seed=7)
    a, b, c = (load_tensors(tmp_path / n) for n in ("whole", "part", "stream"))
    name = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(a[name], b[name])
    assert not torch.equal(a[name], c[name])


def test_bridge_runs_a_mergekit_only_method(models, tmp_path):
    import torch

    config = {"merge_method": "karcher", "models": [{"model": "a"}, {"model": "b"}], "dtype": "float32"}
    metrics = merge(config, models, tmp_path / "karcher")
    assert metrics["engine"] == "mergekit"
    merged, a = load_tensors(tmp_path / "karcher"), load_tensors(Path(models["a"]))
    assert merged.keys() == a.keys()
    assert not torch.equal(merged["model.norm.weight"], a["model.norm.weight"])


def test_mergekit_only_table_matches_mergekit():
    """The bridge's parameter table (used to check configs without importing mergekit) is mergekit's."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import ParameterScope

    from sakura_merge.bridge import MERGEKIT_ONLY, RANDOMIZED
    from sakura_merge.methods import NATIVE_METHODS
    from sakura_merge.params import parameter_names

    theirs = {m.spec.name: m.spec for m in registry.registered_methods()}
    assert set(theirs) == set(MERGEKIT_ONLY) | set(NATIVE_METHODS)
    plugins = Plugins(entry_points=False)
    for name, spec in theirs.items():
        ours = plugins.merge_methods.get(name)
        assert sorted(parameter_names(ours)) == sorted(p.name for p in spec.parameters), name
        per_model = {p.name for p in spec.parameters if p.scope != ParameterScope.SHARED}
        assert set(ours.per_model) == per_model, name
        contract = spec.contract
        assert ours.base == contract.base.value, name
        assert (ours.min_models, ours.max_models) == (contract.min_inputs, contract.max_inputs), name
        if name in MERGEKIT_ONLY:
            assert ours.non_base == (contract.min_non_base, contract.max_non_base), name
    assert {n for n in RANDOMIZED} <= set(MERGEKIT_ONLY)


def test_a_plugin_method_runs_natively(models, tmp_path):
    """A third-party method is one class (options model and run), registered through the hook."""
    import torch

    from sakura_core import hookimpl
    from sakura_core.options import Options
    from sakura_merge import MergeMethod

    class MaxOptions(Options):
        gain: float = 1.0

    class ElementwiseMax(MergeMethod):
        Options = MaxOptions

        def run(self, call):
            return torch.stack(call.tensors).amax(dim=0) * call.params.gain

    class Plugin:
        @hookimpl
        def sakura_register_merge_methods(self, register):
            register("max", ElementwiseMax())

    plugins = Plugins(entry_points=False)
    plugins.register_object(Plugin(), "max-plugin")
    cfg = MergeConfig.model_validate({"merge_method": "max", "models": [{"model": "a"}, {"model": "b"}],
                                      "parameters": {"gain": 2.0}})
    out = tmp_path / "max"
    out.mkdir()
    execute_merge(cfg, plugins.merge_methods.get("max"), models, out)
    merged, a, b = load_tensors(out), load_tensors(Path(models["a"])), load_tensors(Path(models["b"]))
    name = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(merged[name], torch.maximum(a[name], b[name]) * 2.0)


def test_union_tokenizer_over_different_vocabularies_goes_through_mergekit(models, tmp_path):
    from sakura_models.tiny import TinyOptions, generate_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    generate_tiny_model(TinyOptions(seed=5, vocab=600), tmp_path / "v600")
    config = {"merge_method": "linear", "tokenizer_source": "union",
              "models": [{"model": "a", "parameters": {"weight": 1.0}}, {"model": "v600", "parameters": {"weight": 1.0}}]}
    metrics = merge(config, {**models, "v600": str(tmp_path / "v600")}, tmp_path / "out")
    assert metrics["engine"] == "mergekit"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) >= 600
    assert (tmp_path / "out" / "generation_config.json").is_file()


def test_pickled_weights_only_when_allowed(models, tmp_path):
    import shutil

    import torch
    from sakura_merge.errors import MergeInputError

    pickled = tmp_path / "pickled"
    shutil.copytree(models["a"], pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(load_tensors(Path(models["a"])), pickled / "pytorch_model.bin")
    config = {"merge_method": "linear",
              "models": [{"model": "p", "parameters": {"weight": 1.0}}, {"model": "b", "parameters": {"weight": 1.0}}]}
    paths = {**models, "p": str(pickled)}
    with pytest.raises(MergeInputError, match="only pickled .bin weights"):
        merge(config, paths, tmp_path / "refused")
    metrics = merge(config, paths, tmp_path / "allowed", allow_bin=True)
    assert metrics["engine"] == "mergekit"
    reference = merge(config, models | {"p": models["a"]}, tmp_path / "reference")
    assert reference["engine"] == "native"
    ours, theirs = load_tensors(tmp_path / "allowed"), load_tensors(tmp_path / "reference")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_gpu_matches_cpu(models, tmp_path):
    import torch

    config = CASES["slerp-bf16-inputs"]
    gpu = merge(config, models, tmp_path / "gpu", device="cuda")
    merge(config, models, tmp_path / "cpu", device="cpu")
    assert gpu["device"] == "cuda" and gpu["peak_gpu_bytes"] > 0
    a, b = load_tensors(tmp_path / "gpu"), load_tensors(tmp_path / "cpu")
    for name in a:
        assert max_ulps(a[name], b[name]) <= 1.0, name
