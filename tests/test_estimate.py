"""`sakura plan`'s disk and memory estimates (sakura_core/estimate.py, sakura_models/shapes.py,
sakura_trl/estimate.py), checked against the real thing:
parameter counts against transformers, LoRA sizes against peft, activations against what autograd keeps,
merge outputs against a real merge, and the plan's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub_fixtures import hub  # noqa: F401 - fixture
from sakura_core import estimate as est
from sakura_models import shapes
from sakura_trl import estimate as train_est

REPO = Path(__file__).resolve().parent.parent

# upstage/SOLAR-10.7B-v1.0: Mistral's width with 48 layers (depth up-scaled), untied embeddings, float16.
SOLAR = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
    "tie_word_embeddings": False, "torch_dtype": "float16", "max_position_embeddings": 4096,
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


def numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"heads": 8, "kv_heads": 2, "hidden": 64, "intermediate": 96, "layers": 3},  # GQA, 4 queries per kv head
        {"tie_embeddings": True, "kv_heads": 4},
        {"arch": "mistral", "layers": 2, "dtype": "bfloat16"},
        {"arch": "qwen2", "layers": 2, "heads": 4, "kv_heads": 1},  # q, k, v biases
        {"vocab": 4096, "layers": 1},  # more than the tokenizer's corpus yields: the real vocabulary is smaller
    ],
    ids=["default", "gqa", "tied", "mistral-bf16", "qwen2", "vocab-capped"],
)
def test_tiny_model_config_and_parameter_count_match_the_generated_model(options, tmp_path):
    import transformers

    from sakura_models.tiny import TinyOptions, TinySource, generate_tiny_model
    from sakura_core.store import Store

    opts = TinyOptions(**options)
    env = type("Env", (), {"store": Store(tmp_path / "store")})()
    config = TinySource().config(opts, env, "not-in-the-store")
    generate_tiny_model(opts, tmp_path / "model")
    written = json.loads((tmp_path / "model" / "config.json").read_text())
    for key, value in config.items():
        assert written[key] == value, key
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert shapes.param_count(config) == numel(model)
    safetensors = sum(p.stat().st_size for p in (tmp_path / "model").glob("*.safetensors"))
    assert shapes.model_bytes(config) <= safetensors < shapes.model_bytes(config) + 64_000  # + the safetensors header


@pytest.mark.parametrize(
    "kind, extra",
    [
        ("LlamaConfig", {"attention_bias": True, "mlp_bias": True, "head_dim": 24}),
        ("Qwen3Config", {"tie_word_embeddings": True}),  # q/k norms, tied head
        ("MistralConfig", {}),
    ],
)
def test_parameter_count_of_transformers_configs(kind, extra):
    import transformers

    config = getattr(transformers, kind)(
        vocab_size=300, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, **extra,
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert shapes.param_count(config.to_dict()) == numel(model)


def test_solar_is_10_7b_and_unknown_architectures_have_no_estimate():
    assert shapes.param_count(SOLAR) == 10_731_524_096
    assert shapes.model_bytes(SOLAR) == 2 * 10_731_524_096  # float16
    assert shapes.param_count({**SOLAR, "model_type": "gpt2"}) is None
    assert shapes.param_count({"model_type": "llama"}) is None  # fields missing
    assert train_est.train_estimate({**SOLAR, "model_type": "mamba"}, train_est.TrainSetup()) is None


@pytest.mark.parametrize(
    "targets, bias",
    [(["embed_tokens", *TARGETS], "none"), ("all-linear", "none"), (["q_proj", "v_proj"], "all"), (["k_proj"], "lora_only")],
)
def test_lora_parameter_count_matches_peft(targets, bias):
    import peft
    import transformers

    config = transformers.Qwen2Config(  # q, k, v have biases: the bias settings count something
        vocab_size=300, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=targets, bias=bias, task_type="CAUSAL_LM"))
    trainable, _ = lora.get_nb_trainable_parameters()
    assert train_est.lora_params(config.to_dict(), 4, targets, bias) == trainable


def _saved_bytes(layers: int, tokens: int, weights: str, checkpointing: bool, targets: list[str], padded: bool = False) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of a LoRA Llama's decoder (parameters
    excluded), one batch of two sequences under bf16 autocast on the CPU."""
    import torch
    import peft
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=500, hidden_size=128, intermediate_size=352, num_hidden_layers=layers, num_attention_heads=8,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, weights))
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=targets, task_type="CAUSAL_LM"))
    for module in model.modules():  # trl disables dropout (lora_dropout included)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0
    model.train()
    if checkpointing:
        if hasattr(model.get_base_model(), "activation_checkpointing_enable"):  # transformers 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, 500, (2, tokens // 2))
    mask = torch.ones_like(ids)
    if padded:  # the shorter sequence of the batch is padded: attention gets a mask
        mask[0, -5:] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model.get_base_model().model(input_ids=ids, attention_mask=mask)
    return sum(kept.values())


@pytest.mark.parametrize("weights", ["bfloat16", "float16"])
def test_activation_formula_matches_what_autograd_keeps(weights):
    """Per decoder layer: the per-token activations and the autocast weight copies, without and with
    gradient checkpointing, within 15% of what autograd actually keeps (they are equal with torch 2.13)."""
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = {"model_type": "llama", "vocab_size": 500, "hidden_size": 128, "intermediate_size": 352,
              "num_hidden_layers": 1, "num_attention_heads": 8, "num_key_value_heads": 2, "dtype": weights}
    shape = shapes.shape_of(config)

    def per_layer(tokens: int, checkpointing: bool) -> int:
        return (_saved_bytes(4, tokens, weights, checkpointing, targets) - _saved_bytes(2, tokens, weights, checkpointing, targets)) // 2

    small, large = per_layer(128, False), per_layer(256, False)
    per_token, constant = (large - small) / 128, 2 * small - large
    assert per_token == pytest.approx(train_est.layer_activation_bytes(shape, 2, targets, 8), rel=0.15)
    # bf16 copies of the LoRA weights, and of every base weight when they are stored in float16
    lora = sum(8 * (n_in + n_out) for n_in, n_out in shape.linears().values())
    base = sum(n_in * n_out for n_in, n_out in shape.linears().values()) if weights == "float16" else 0
    assert constant == pytest.approx(2 * (lora + base), rel=0.15)
    # Checkpointing: each layer keeps its input, the residual stream (float32 when fp16 meets bf16)
    stream = 2 if weights == "bfloat16" else 4
    assert per_layer(256, True) / 256 == pytest.approx(stream * shape.hidden, rel=0.15)
    # A padded batch: k and v repeated to every head, and each layer's copy of the mask
    padded = (_saved_bytes(4, 256, weights, False, targets, True) - _saved_bytes(2, 256, weights, False, targets, True)) // 2
    assert (padded - large) / 256 == pytest.approx(
        train_est.layer_activation_bytes(shape, 2, targets, 8, padded_length=128) - train_est.layer_activation_bytes(shape, 2, targets, 8),
        rel=0.15)


def test_solar_dpo_estimate_with_and_without_checkpointing():
    """The Sakura-SOLAR DPO stage: LoRA r=16 on every projection and the head, micro batch 2 x 4096 tokens."""

    def setup(checkpointing: bool) -> train_est.TrainSetup:
        return train_est.TrainSetup(micro_batch=2, max_length=4096, lora_r=16, lora_targets=TARGETS, checkpointing=checkpointing,
                              reference="precompute", fused_head=True)

    with_gc, without = train_est.train_estimate(SOLAR, setup(True)), train_est.train_estimate(SOLAR, setup(False))
    assert with_gc.memory["weights"] == 2 * 10_731_524_096
    assert with_gc.output["trainable_params"] == 63_492_096
    assert with_gc.memory["LoRA+Adam"] == 16 * 63_492_096  # fp32 adapter, gradient and two moments
    # 48 layers x 16384 tokens x 4096 x 4 bytes (fp32 residual stream) + one layer recomputed, and the rest
    assert 30e9 < with_gc.memory_bytes < 60e9  # fits an 80 GB GPU, as the recipe says
    assert without.memory_bytes > 150e9 and without.memory["activations"] > 8 * with_gc.memory["activations"]
    assert with_gc.phases["reference pass"] < with_gc.phases["train step"]


def test_passthrough_depth_upscaling_merge(tiny_model_factory, tmp_path):
    """Slices [0, 3] + [1, 4] of a 4-layer model: the estimate has 6 layers and the real merge's size."""
    from sakura_core.plugins import Plugins
    from sakura_core.stage import CheckEnv
    from sakura_merge.config import MergeConfig
    from sakura_merge.runner import execute_merge
    from sakura_merge.stage import MergeStage

    model = tiny_model_factory(seed=3, layers=4)
    config = MergeConfig(
        merge_method="passthrough", dtype="float16",
        slices=[{"sources": [{"model": "m", "layer_range": [0, 3]}]}, {"sources": [{"model": "m", "layer_range": [1, 4]}]}],
    )
    plugins = Plugins()
    env = CheckEnv(plugins=plugins, recipe_dir=tmp_path, names={"m"})
    found = MergeStage().estimate(config, {"m": {"config": json.loads((model / "config.json").read_text())}}, env)
    assert found.output["config"]["num_hidden_layers"] == 6
    out = tmp_path / "out"
    out.mkdir()
    execute_merge(config, plugins.merge_methods.get("passthrough"), {"m": str(model)}, out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    assert found.disk["weights"] <= weights < found.disk["weights"] + 64_000
    assert found.memory and found.device == "gpu"  # the native executor's working set
    # SOLAR's own recipe: Mistral 7B's 32 layers, [0, 24] + [8, 32]
    mistral = {**SOLAR, "model_type": "mistral", "num_hidden_layers": 32}
    dus = MergeConfig(merge_method="passthrough", dtype="bfloat16", slices=[
        {"sources": [{"model": "m", "layer_range": [0, 24]}]}, {"sources": [{"model": "m", "layer_range": [8, 32]}]}])
    found = MergeStage().estimate(dus, {"m": {"config": mistral}}, env)
    assert found.output["config"]["num_hidden_layers"] == 48 and est.dtype_of(found.output["config"]) == "bfloat16"
    assert found.disk["weights"] == 2 * 10_731_524_096
    assert found.memory_bytes < 3e9  # a few tensors, not the model


PROBE = """
import sys
from sakura_core.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = [m for m in ("torch", "transformers", "trl", "peft", "datasets", "huggingface_hub") if m in sys.modules]
print("HEAVY", ",".join(heavy), file=sys.stderr)
"""


def test_plan_prints_the_estimates_and_imports_no_heavy_library(tmp_path):
    recipe = str(REPO / "recipes" / "tiny.toml")
    store = str(tmp_path / "store")
    shown = subprocess.run([sys.executable, "-c", PROBE, "plan", recipe, "--store", store],
                           capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.strip().splitlines()[-1] == "HEAVY", shown.stderr
    header = next(line for line in shown.stdout.splitlines() if "fingerprint" in line)
    assert "disk" in header and "memory" in header
    assert "dpo: GPU ~" in shown.stdout and "weights" in shown.stdout and "activations" in shown.stdout
    assert "merge: GPU ~" in shown.stdout and "disk " in shown.stdout
    # The sources' footprints: tiny models are generated here, nothing to download.
    assert "models: solar 213.6K params, 854 kB; sauerkraut 213.6K params, 854 kB" in shown.stdout
    assert "to download" not in shown.stdout

    done = subprocess.run([sys.executable, "-m", "sakura_core", "plan", recipe, "--store", store, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    stages = {row["stage"]: row for row in plan["stages"]}
    size = plan["models"]["solar"]["bytes"]
    assert plan["models"]["solar"]["params"] > 0 and size == 4 * plan["models"]["solar"]["params"]  # float32
    merge, dpo, publish = stages["merge"]["estimate"], stages["dpo"]["estimate"], stages["publish"]["estimate"]
    assert merge["disk"] == {"weights": size} and merge["memory_bytes"] == sum(merge["memory"].values())
    assert dpo["memory_device"] == "gpu" and {"weights", "activations", "logits"} <= set(dpo["memory"])
    assert dpo["disk"]["model"] == size and dpo["disk"]["adapter"] > 0
    assert publish["disk"] == {"model copy": size}
    assert stages["data"]["estimate"]["memory_bytes"] is None  # no sizes for a dataset before it is built


def test_unknown_architecture_is_no_estimate_not_an_error(tmp_path):
    from sakura_core.engine import Engine
    from sakura_core.plugins import Plugins
    from sakura_core.recipe import load_recipe

    model = tmp_path / "odd"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "rwkv", "hidden_size": 64}))
    (model / "model.safetensors").write_bytes(b"")
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "odd"\n[models]\nodd = "./odd"\n[stages.out]\nkind = "publish"\npublisher = "local"\n'
                      'model = "odd"\npath = "dist"\n')
    loaded = load_recipe(recipe, [], plugins=Plugins())
    engine = Engine(loaded)
    found = est.estimate_plan(engine.plan(), engine.env)
    assert found.models == {"odd": None} and found.stages == {"out": None}
    assert est.describe("out", est.Estimate()) is None


def test_hub_model_estimate_fetches_only_its_config(hub, tmp_path):
    config = {**SOLAR, "num_hidden_layers": 2}
    hub.seed_repo("tester/solar-ish", {"config.json": json.dumps(config).encode(), "model.safetensors": b"x" * 1000})
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "h"\n[models]\nbase = "tester/solar-ish"\n[stages.publish]\nkind = "publish"\n'
                      'publisher = "hub"\nmodel = "base"\nrepo_id = "tester/out"\n')
    done = hub.run("plan", str(recipe), "--store", str(tmp_path / "store"), "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["models"]["base"]["params"] == shapes.param_count(config)
    assert plan["stages"][0]["estimate"]["upload_bytes"] == shapes.model_bytes(config)
    assert any("/resolve/" in path and path.endswith("/config.json") for _, path, _ in hub.state.log)
    assert not any("model.safetensors" in path for _, path, _ in hub.state.log)  # no weights downloaded
    shown = hub.run("plan", str(recipe), "--store", str(tmp_path / "store"), COLUMNS="200")
    assert shown.returncode == 0, shown.stderr
    assert f"models: base {est.count(shapes.param_count(config))} params" in shown.stdout
    assert "to download" in shown.stdout  # the hub source says it downloads (ModelSource.downloads)


def test_a_model_source_without_a_footprint_has_no_model_summary(tmp_path):
    """The core knows no architecture: the model summary is the source's footprint, and a source that gives
    none (the default) has none; the stages' estimates still use its config."""
    from sakura_core import hookimpl
    from sakura_core.engine import Engine
    from sakura_core.plugins import Plugins
    from sakura_core.recipe import load_recipe
    from sakura_core.stage import ModelSource
    from sakura_models.local import LocalSource

    assert ModelSource().footprint(SOLAR) is None and ModelSource.downloads is False

    class Opaque(LocalSource):
        footprint = ModelSource.footprint

    model = tmp_path / "solar"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(SOLAR))
    (model / "model.safetensors").write_bytes(b"")

    class Plugin:
        @hookimpl
        def sakura_register_model_sources(self, register):
            register("opaque", Opaque())

    plugins = Plugins()
    plugins.register_object(Plugin(), "opaque-source")
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "o"\n[models]\nbase = { source = "opaque", path = "solar" }\n[stages.out]\n'
                      'kind = "publish"\npublisher = "local"\nmodel = "base"\npath = "dist"\n')
    engine = Engine(load_recipe(recipe, [], plugins=plugins))
    found = est.estimate_plan(engine.plan(), engine.env)
    assert found.models == {"base": None}
    assert found.stages["out"].disk == {"model copy": 2 * 10_731_524_096}
