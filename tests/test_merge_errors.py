"""Bad input to ``sakura merge`` and to a recipe's merge stage: one clear line, exit 2, nothing written."""

from __future__ import annotations

import textwrap

import pytest

from conftest import RunsCode, run_sakura


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    import torch
    from safetensors.torch import load_file

    from sakura_models.tiny import TinyOptions, generate_tiny_model

    root = tmp_path_factory.mktemp("merge-errors")
    for name, options in {"a": TinyOptions(seed=1), "b": TinyOptions(seed=2), "mistral": TinyOptions(arch="mistral", seed=2),
                          "narrow": TinyOptions(seed=3, hidden=32, intermediate=64)}.items():
        generate_tiny_model(options, root / name)
    (root / "pickled").mkdir()
    (root / "pickled" / "config.json").write_text((root / "a" / "config.json").read_text())
    (root / "pickled" / "pytorch_model.bin").write_bytes(b"not really a pickle")
    (root / "unsafe").mkdir()
    (root / "unsafe" / "config.json").write_text((root / "a" / "config.json").read_text())
    torch.save({"model.norm.weight": torch.ones(4), "payload": RunsCode()}, root / "unsafe" / "pytorch_model.bin")
    (root / "partial").mkdir()
    (root / "partial" / "config.json").write_text((root / "a" / "config.json").read_text())
    tensors = load_file(root / "a" / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    torch.save(tensors, root / "partial" / "pytorch_model.bin")
    return root


SLERP = """
merge_method: slerp
base_model: {b}
models: [{{model: {a}}}, {{model: {b}}}]
parameters: {{t: 0.5}}
"""

# della with a one-layer middle slice: its layer is merged at depth t = 1 only (mergekit's planner), so an epsilon
# gradient is checked there, not at t = 0
DELLA_SLICES = """
merge_method: della
base_model: {b}
slices:
  - sources: [{{model: {a}, layer_range: [0, 2]}}, {{model: {b}, layer_range: [0, 2]}}]
  - sources: [{{model: {a}, layer_range: [2, 3]}}, {{model: {b}, layer_range: [2, 3]}}]
    parameters: {{epsilon: EPSILON}}
  - sources: [{{model: {a}, layer_range: [3, 4]}}, {{model: {b}, layer_range: [3, 4]}}]
parameters: {{weight: 0.5, density: 0.5, epsilon: 0.1}}
"""

BAD = {
    "missing model path": (
        SLERP.replace("{b}", "{root}/nowhere"), "no such directory"),
    "mismatched shapes": (
        SLERP.replace("{b}", "{root}/narrow"), "tensor model.embed_tokens.weight: shape [512, 64]"),
    "unknown parameter": (
        SLERP.replace("{{t: 0.5}}", "{{tt: 0.5}}"), "parameters.tt: unknown parameter for slerp (did you mean t?)"),
    "layer range out of bounds": (
        """
merge_method: slerp
base_model: {b}
slices: [{{sources: [{{model: {a}, layer_range: [0, 6]}}, {{model: {b}, layer_range: [0, 6]}}]}}]
parameters: {{t: 0.5}}
""", "slices[0].sources[0].layer_range: [0, 6] is out of bounds"),
    "t not a number": (
        SLERP.replace("{{t: 0.5}}", "{{t: [{{filter: mlp, value: [0, half]}}, {{value: 0.5}}]}}"),
        "parameters.t[0].value[1]: input should be a valid number"),
    "della epsilon beyond the density": (
        SLERP.replace("slerp", "della").replace("{{t: 0.5}}", "{{weight: 0.5, density: 0.5, epsilon: 0.6}}"),
        "parameters.epsilon: density ± epsilon must lie strictly between 0 and 1 (density 0.5, epsilon 0.6)"),
    "della epsilon beyond a filtered density": (
        SLERP.replace("slerp", "della").replace(
            "{{t: 0.5}}", "{{weight: 0.5, epsilon: 0.2, density: [{{filter: mlp, value: 0.9}}, {{value: 0.5}}]}}"),
        "tensor model.layers.0.mlp.down_proj.weight of model"),
    "della epsilon beyond the density, numbers as YAML strings": (
        SLERP.replace("slerp", "della").replace("{{t: 0.5}}", '{{weight: 0.5, density: "0.5", epsilon: "0.6"}}'),
        "parameters.epsilon: density ± epsilon must lie strictly between 0 and 1 (density 0.5, epsilon 0.6)"),
    "della epsilon beyond the density at a one-layer slice's depth 1": (
        DELLA_SLICES.replace("EPSILON", "[0.1, 0.6]"),
        "slices[1].parameters.epsilon: density ± epsilon must lie strictly between 0 and 1 (density 0.5, epsilon 0.6)"),
    "unknown chat template": (
        SLERP + "chat_template: chatmll\n", "chat_template: unknown template name 'chatmll' (did you mean chatml?)"),
    "unknown module": (
        """
merge_method: slerp
base_model: {b}
modules: {{decoder: {{models: [{{model: {a}}}, {{model: {b}}}]}}}}
parameters: {{t: 0.5}}
""", "modules.decoder: the models' architecture has modules default"),
    "architectures differ": (
        SLERP.replace("{b}", "{root}/mistral"), "differ in architectures: ['MistralForCausalLM'] vs ['LlamaForCausalLM'] (allow_crimes merges them anyway)"),
    "misspelt key": (
        SLERP.replace("base_model", "base_modle"), "base_modle: unknown key (did you mean base_model?)"),
    "unused parameter in strict mode": (
        SLERP.replace("{{t: 0.5}}", "{{t: 0.5, weight: 1}}") + "strict: true\n",
        "parameters.weight: slerp has no parameter weight"),
    "misspelt required key": (
        SLERP.replace("merge_method", "merge_methd"), "merge_methd: unknown key (did you mean merge_method?)"),
    "unknown method": (
        SLERP.replace("slerp", "slurp"), "merge_method: unknown merge method 'slurp' (did you mean slerp?)"),
    "pickled weights": (
        SLERP.replace("{b}", "{root}/pickled"), "only pickled .bin weights"),
    "pickled weights allowed, but not a pickle": (
        SLERP.replace("{b}", "{root}/pickled") + "allow_bin: true\n",
        "/pickled: torch will not load pytorch_model.bin safely (UnpicklingError: "),
    "pickled weights allowed, but the pickle runs code": (
        SLERP.replace("{b}", "{root}/unsafe") + "allow_bin: true\n",
        "/unsafe: torch will not load pytorch_model.bin safely (UnpicklingError: Trying to load unsupported GLOBAL "
        "posix.system whose module posix is blocked.); convert the weights to safetensors"),
    "pickled weights allowed, a tensor missing": (
        SLERP.replace("{b}", "{root}/partial") + "allow_bin: true\n",
        "layer 1: tensor mlp.up_proj.weight is in one of models "),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_output(case, pair, tmp_path):
    text, expected = BAD[case]
    config = tmp_path / "merge.yml"
    config.write_text(text.format(a=pair / "a", b=pair / "b", root=pair))
    out = tmp_path / "out"
    result = run_sakura("merge", config, out)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["merge.yml"]  # no partial directory either


def test_mergekit_yaml_runs_unchanged(pair, tmp_path):
    config = tmp_path / "sakura-slerp.yml"
    config.write_text(textwrap.dedent(f"""\
        slices:
          - sources:
              - model: {pair / 'a'}
                layer_range: [0, 4]
              - model: {pair / 'b'}
                layer_range: [0, 4]
        merge_method: slerp
        base_model: {pair / 'b'}
        parameters:
          t:
            - filter: self_attn
              value: [0, 0.5, 0.3, 0.7, 1]
            - filter: mlp
              value: [1, 0.5, 0.7, 0.3, 0]
            - value: 0.5
        tokenizer_source: union
        dtype: float16
        """))
    out = tmp_path / "merged"
    result = run_sakura("merge", config, out, "--json", check=0)
    assert '"engine": "native"' in result.stdout
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "mergekit_config.yml"} <= {
        p.name for p in out.iterdir()
    }
    again = run_sakura("merge", config, out)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr


def test_della_epsilon_is_checked_only_at_the_depths_a_slice_takes(pair, tmp_path):
    # t = 0 would give epsilon 0.6 (density 0.5): mergekit never evaluates it there, and merges this config
    config = tmp_path / "della.yml"
    config.write_text(DELLA_SLICES.replace("EPSILON", "[0.6, 0.1]").format(a=pair / "a", b=pair / "b"))
    result = run_sakura("merge", config, tmp_path / "out", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "must lie strictly between" not in result.stderr


def test_seed_zero_on_the_command_line_is_kept(pair, tmp_path):
    """``--seed 0`` is a seed (not an unset option): the output is mergekit-yaml --random-seed 0's."""
    import subprocess

    import torch
    from safetensors.torch import load_file

    config = tmp_path / "dare.yml"
    config.write_text(SLERP.replace("slerp", "dare_linear").replace("{{t: 0.5}}", "{{weight: 0.5, density: 0.5}}")
                      .format(a=pair / "a", b=pair / "b"))
    run_sakura("merge", config, tmp_path / "ours", "--seed", "0", "--engine", "native", check=0)
    subprocess.run(["mergekit-yaml", str(config), str(tmp_path / "theirs"), "--random-seed", "0"],
                   check=True, capture_output=True)
    ours, theirs = load_file(tmp_path / "ours" / "model.safetensors"), load_file(tmp_path / "theirs" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_recipe_errors_name_the_key(tmp_path):
    recipe = tmp_path / "r.toml"
    base = """
    [models]
    a = "tiny:llama?seed=1"
    b = "tiny:llama?seed=2"
    [stages.merge]
    kind = "merge"
    merge_method = "slerp"
    base_model = "b"
    """
    cases = {
        'models = [{ model = "c" }, { model = "b" }]\nparameters.t = 0.5':
            "r.toml: stages.merge.models[0].model: no stage or model named 'c'",
        'models = [{ model = "a" }, { model = "b", parameters = { t = 0.5 } }]\nparameters.t = 0.5\nstrict = true':
            "stages.merge.models[1].parameters.t: t is shared by all models",
        'models = [{ model = "a" }, { model = "b" }]':
            "stages.merge.parameters: slerp needs parameter 't'",
        'models = [{ model = "a" }, { model = "b" }]\nparameters.t = 0.5\ndevice = "gpu"':
            "stages.merge.device: expected auto, cpu, cuda or cuda:N",
    }
    for extra, expected in cases.items():
        recipe.write_text(textwrap.dedent(base) + extra + "\n")
        result = run_sakura("validate", recipe)
        assert result.returncode == 2, (extra, result.stdout, result.stderr)
        assert expected in result.stderr.strip().splitlines()[0], (extra, result.stderr)
