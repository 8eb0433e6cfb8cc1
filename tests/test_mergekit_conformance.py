"""mergekit conformance: one configuration per method mergekit registers and mergekit's own example
configurations (its repository's ``examples/``, on tiny models), run through both ``mergekit-yaml`` and
``sakura merge`` on tiny llama, mistral and qwen2 models. Every tensor, the config and the tokenizer files are
compared: bit-identical tensors, equal configs, byte-identical tokenizer files, except where
docs/merge-conformance.md lists the case and says why.

Both CLIs run in this process (``mergekit.scripts.run_yaml.main`` and ``sakura_core.cli.main``), so the whole
corpus takes seconds rather than an import per merge.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "merge-conformance.md"
ARCHS = ("llama", "mistral", "qwen2")
TINY = {"layers": 4, "hidden": 32, "intermediate": 64, "heads": 2, "kv_heads": 1}
RECORD = "mergekit_config.yml"  # sakura's record of the configuration (mergekit writes it only with a card)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")

# One configuration per method mergekit registers ({a}..{d}: tiny models of one architecture, {lora}: a LoRA
# adapter for {a}); flags go to both CLIs.
METHODS: dict[str, tuple[str, list[str]]] = {
    "linear": ("""
        merge_method: linear
        models:
          - {model: "{a}", parameters: {weight: 0.6}}
          - {model: "{b}", parameters: {weight: [{filter: mlp, value: [0.2, 0.9]}, {value: 0.7}]}}
          - {model: "{c}", parameters: {weight: 0.3}}
        dtype: bfloat16
        """, []),
    "slerp": ("""
        merge_method: slerp
        base_model: "{a}"
        models: [{model: "{a}"}, {model: "{b}"}]
        parameters: {t: [{filter: self_attn, value: [0.1, 0.9]}, {value: 0.35}]}
        dtype: float16
        """, []),
    "nuslerp": ("""
        merge_method: nuslerp
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.3}}
          - {model: "{b}", parameters: {weight: 0.7}}
        parameters: {nuslerp_flatten: false}
        """, []),
    "multislerp": ("""
        merge_method: multislerp
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.6}}
          - {model: "{b}", parameters: {weight: 0.4}}
        """, []),
    "karcher": ("""
        merge_method: karcher
        models: [{model: "{a}"}, {model: "{b}"}, {model: "{c}"}]
        parameters: {max_iter: 5}
        """, []),
    "task_arithmetic": ("""
        merge_method: task_arithmetic
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.3}}
          - {model: "{b}", parameters: {weight: [{filter: self_attn, value: [0.2, 0.9]}, {value: 0.5}]}}
        parameters: {lambda: 0.8}
        dtype: float16
        """, []),
    "ties": ("""
        merge_method: ties
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.6, density: 0.5}}
          - {model: "{b}", parameters: {weight: 0.5, density: [0.3, 0.8]}}
        dtype: bfloat16
        """, []),
    "dare_ties": ("""
        merge_method: dare_ties
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.5, density: 0.4}}
          - {model: "{b}", parameters: {weight: 0.5, density: [0.3, 0.9]}}
        dtype: bfloat16
        """, ["--random-seed", "7"]),
    "dare_linear": ("""
        merge_method: dare_linear
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.7, density: 0.6}}
          - {model: "{b}", parameters: {weight: 0.4, density: 0.5}}
        parameters: {normalize: true}
        dtype: float16
        """, ["--random-seed", "11"]),
    "breadcrumbs": ("""
        merge_method: breadcrumbs
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.5, density: 0.8, gamma: 0.05}}
          - {model: "{b}", parameters: {weight: 0.5, density: 0.7}}
        """, []),
    "breadcrumbs_ties": ("""
        merge_method: breadcrumbs_ties
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.5, density: 0.8, gamma: 0.05}}
          - {model: "{b}", parameters: {weight: 0.5, density: 0.7}}
        """, []),
    "della": ("""
        merge_method: della
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.5, density: 0.6, epsilon: 0.2}}
          - {model: "{b}", parameters: {weight: 0.5, density: 0.5}}
        """, ["--random-seed", "3"]),
    "della_linear": ("""
        merge_method: della_linear
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.5, density: 0.6, epsilon: 0.2}}
          - {model: "{b}", parameters: {weight: 0.5, density: 0.5}}
        """, ["--random-seed", "3"]),
    "sce": ("""
        merge_method: sce
        base_model: "{c}"
        models: [{model: "{a}"}, {model: "{b}"}]
        parameters: {select_topk: 0.5}
        """, []),
    "model_stock": ("""
        merge_method: model_stock
        base_model: "{c}"
        models: [{model: "{a}"}, {model: "{b}"}, {model: "{c}"}]
        dtype: float32
        """, []),
    "nearswap": ("""
        merge_method: nearswap
        base_model: "{a}"
        models: [{model: "{a}"}, {model: "{b}"}]
        parameters: {t: 0.01}
        """, []),
    "ram": ("""
        merge_method: ram
        base_model: "{c}"
        models: [{model: "{a}"}, {model: "{b}"}]
        parameters: {epsilon: 0.01}
        """, []),
    "ramplus_tl": ("""
        merge_method: ramplus_tl
        base_model: "{c}"
        models: [{model: "{a}"}, {model: "{b}"}]
        parameters: {epsilon: 0.01, r: 0.2}
        """, []),
    "arcee_fusion": ("""
        merge_method: arcee_fusion
        base_model: "{a}"
        models: [{model: "{a}"}, {model: "{b}"}]
        """, []),
    "passthrough": ("""
        merge_method: passthrough
        slices:
          - sources: [{model: "{a}", layer_range: [0, 3]}]
          - sources: [{model: "{b}", layer_range: [1, 4], parameters: {scale: [{filter: o_proj, value: 0.5}, {value: 1.0}]}}]
        dtype: float16
        """, []),
}

# mergekit's examples/ (repository arcee-ai/mergekit), with tiny models for its Hub models and layer ranges
# scaled to four layers.
EXAMPLES: dict[str, tuple[str, list[str]]] = {
    "example-arcee_fusion": ("""
        models:
          - model: "{a}"
          - model: "{b}"
        merge_method: arcee_fusion
        base_model: "{a}"
        dtype: bfloat16
        """, []),
    "example-bio-merge": ("""
        models:
          - model: "{a}"
            parameters:
              density: 0.5
              weight: 0.5
          - model: "{b}"
            parameters:
              density: 0.5
              weight: 0.5
        merge_method: ties
        base_model: "{c}"
        parameters:
          normalize: false
          int8_mask: true
        dtype: float16
        """, []),
    "example-gradient-slerp": ("""
        slices:
          - sources:
              - model: "{a}"
                layer_range: [0, 4]
              - model: "{b}"
                layer_range: [0, 4]
        merge_method: slerp
        base_model: "{a}"
        parameters:
          t:
            - filter: self_attn
              value: [0, 0.5, 0.3, 0.7, 1]
            - filter: mlp
              value: [1, 0.5, 0.7, 0.3, 0]
            - value: 0.5 # fallback for rest of tensors
        dtype: float16
        """, []),
    "example-linear": ("""
        models:
          - model: "{a}"
            parameters:
              weight: 1.0
          - model: "{b}"
            parameters:
              weight: 0.3
          - model: "{c}"
            parameters:
              weight: 0.5
        merge_method: linear
        dtype: float16
        """, []),
    "example-orcamini-platy-44layer": ("""
        slices:
          - sources:
            - model: "{a}"
              layer_range: [0, 3]
          - sources:
            - model: "{b}"
              layer_range: [1, 4]
        merge_method: passthrough
        dtype: float16
        """, []),
    "example-ties": ("""
        models:
          - model: "{a}"
            parameters:
              density: [1, 0.7, 0.1] # density gradient
              weight: 1.0
          - model: "{b}"
            parameters:
              density: 0.5
              weight: [0, 0.3, 0.7, 1] # weight gradient
          - model: "{c}"
            parameters:
              density: 0.33
              weight:
                - filter: mlp
                  value: 0.5
                - value: 0
        merge_method: ties
        base_model: "{d}"
        parameters:
          normalize: true
          int8_mask: true
        dtype: float16
        """, []),
}

# What mergekit accepts that sakura used to refuse or merge differently (issue 16).
FEATURES: dict[str, tuple[str, list[str]]] = {
    "unused-parameters-and-name": ("""
        name: first-merge
        merge_method: slerp
        base_model: "{a}"
        models:
          - {model: "{a}", parameters: {weight: 1.0}}
          - {model: "{b}", parameters: {weight: 0.5, t: 0.9}}
        parameters: {t: 0.5, normalize: true}
        dtype: bfloat16
        """, []),
    "gradient-of-yaml-strings": ("""
        merge_method: slerp
        base_model: "{a}"
        models: [{model: "{a}"}, {model: "{b}"}]
        parameters: {t: ["0.2", "8e-1"]}
        """, []),
    "modules-default": ("""
        modules:
          default:
            slices:
              - sources:
                  - {model: "{a}", layer_range: [0, 4]}
                  - {model: "{b}", layer_range: [0, 4]}
            parameters: {t: [0.2, 0.8]}
        merge_method: slerp
        base_model: "{b}"
        parameters: {t: 0.5}
        """, []),
    "model-plus-lora": ("""
        merge_method: task_arithmetic
        base_model: "{a}"
        models:
          - {model: "{a}+{lora}", parameters: {weight: 0.7}}
          - {model: "{b}", parameters: {weight: 0.3}}
        dtype: float32
        """, ["--lora-merge-cache", "{cache}"]),
    "dare-repeated-layers": ("""
        merge_method: dare_ties
        base_model: "{c}"
        slices:
          - sources:
              - {model: "{a}", layer_range: [0, 3], parameters: {weight: 0.5, density: 0.4}}
              - {model: "{b}", layer_range: [0, 3], parameters: {weight: 0.5, density: 0.6}}
              - {model: "{c}", layer_range: [0, 3]}
          - sources:
              - {model: "{a}", layer_range: [1, 4], parameters: {weight: 0.5, density: 0.4}}
              - {model: "{b}", layer_range: [1, 4], parameters: {weight: 0.5, density: 0.6}}
              - {model: "{c}", layer_range: [1, 4]}
        """, ["--random-seed", "5"]),
    "tokenizer-source-base": ("""
        merge_method: linear
        models:
          - {model: "{a}", parameters: {weight: 0.5}}
          - {model: "{b}", parameters: {weight: 0.5}}
        tokenizer_source: base
        """, []),
    "chat-template-name": ("""
        merge_method: linear
        models:
          - {model: "{a}", parameters: {weight: 0.5}}
          - {model: "{b}", parameters: {weight: 0.5}}
        chat_template: chatml
        """, []),
    "allow-crimes": ("""
        merge_method: linear
        base_model: "{a}"  # without one, mergekit takes the config of whichever model its set yields first
        models:
          - {model: "{a}", parameters: {weight: 0.5}}
          - {model: "{other}", parameters: {weight: 0.5}}
        """, ["--allow-crimes"]),
    "out-dtype": ("""
        merge_method: task_arithmetic
        base_model: "{c}"
        models:
          - {model: "{a}", parameters: {weight: 0.3}}
          - {model: "{b}", parameters: {weight: 0.4}}
        dtype: float32
        out_dtype: bfloat16
        """, []),
}

CASES = {**METHODS, **EXAMPLES, **FEATURES}
# {other}: model a of another architecture with the same tensor names (qwen2 has attention biases llama lacks)
OTHER_ARCH = {"llama": "mistral", "mistral": "llama"}
ONLY_ON = {"allow-crimes": set(OTHER_ARCH)}

# The exceptions, each explained in docs/merge-conformance.md. Files sakura writes that mergekit does not:
# the donor's generation config, which mergekit drops when it saves the tokenizer itself.
EXTRA_FILES: dict[str, set[str]] = {
    "tokenizer-source-base": {"generation_config.json"},
    "chat-template-name": {"generation_config.json"},
}
# Depth up-scaling of qwen2, whose config lists a type per layer: mergekit writes the tensors, then fails to
# save the config (transformers refuses a layer count that its layer_types do not match). The tensors are
# compared; sakura's config has a layer type per output layer.
LAYER_COUNT_CHANGES = {"passthrough", "example-orcamini-platy-44layer", "dare-repeated-layers"}
MERGEKIT_FAILS = {(case, "qwen2") for case in LAYER_COUNT_CHANGES}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Per architecture: tiny models a, b, c, d (seeds 1 to 4) and a LoRA adapter for a."""
    from sakura_models.tiny import TinyOptions, generate_tiny_model

    root = tmp_path_factory.mktemp("conformance")
    zoo = {}
    for arch in ARCHS:
        models = {}
        for seed, name in enumerate("abcd", start=1):
            models[name] = root / f"{arch}-{name}"
            generate_tiny_model(TinyOptions(arch=arch, seed=seed, **TINY), models[name])
        models["lora"] = make_lora(models["a"], root / f"{arch}-lora")
        zoo[arch] = models
    return zoo


def make_lora(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights on the attention and MLP projections."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def write_config(case: str, models: dict[str, Path], directory: Path) -> tuple[Path, list[str]]:
    import textwrap

    text, flags = CASES[case]
    values = {**{k: str(v) for k, v in models.items()}, "cache": str(directory / "lora-cache")}
    text = textwrap.dedent(text)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    path = directory / f"{case}.yml"
    path.write_text(text)
    return path, [flag.format(**values) for flag in flags]


def run_mergekit(config: Path, out: Path, flags: list[str]) -> None:
    from mergekit.scripts.run_yaml import main

    main([str(config), str(out), "--no-write-model-card", "--quiet", *flags], standalone_mode=False)


def run_sakura(config: Path, out: Path, flags: list[str], capsys) -> str:
    """``sakura merge`` with mergekit-yaml's flags (``--random-seed`` is ``--seed``); the engine that ran."""
    from sakura_core import cli

    flags = ["--seed" if flag == "--random-seed" else flag for flag in flags]
    cli._PLUGINS = None
    try:
        cli.main(["merge", str(config), str(out), "--device", "cpu", "--json", *flags])
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["engine"]


def expected_engine(config: Path) -> str:
    """Native for every method sakura ports, mergekit's executor for the bridged ones."""
    import yaml

    from sakura_merge.bridge import MERGEKIT_ONLY

    return "mergekit" if yaml.safe_load(config.read_text())["merge_method"] in MERGEKIT_ONLY else "native"


def load_tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def max_ulps(a, b) -> float:
    """Largest difference between a and b in units in the last place of their dtype (at their magnitude)."""
    import torch

    if torch.equal(a, b):
        return 0.0
    info = torch.finfo(a.dtype)
    x, y = a.double(), b.double()
    scale = torch.maximum(x.abs(), y.abs()).clamp(min=info.tiny)
    ulp = torch.exp2(torch.floor(torch.log2(scale))) * info.eps
    return float(((x - y).abs() / ulp).max())


def compare_tensors(case: str, ours: Path, theirs: Path) -> None:
    a, b = load_tensors(ours), load_tensors(theirs)
    assert a.keys() == b.keys()
    for name in sorted(a):
        assert (a[name].dtype, a[name].shape) == (b[name].dtype, b[name].shape), name
        assert torch_equal(a[name], b[name]), f"{case}: {name} differs by {max_ulps(a[name], b[name])} ulp"


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def compare_files(case: str, ours: Path, theirs: Path) -> None:
    files = {p.name for p in ours.iterdir()} - {RECORD}
    assert files == {p.name for p in theirs.iterdir()} | EXTRA_FILES.get(case, set()), case
    assert json.loads((ours / "config.json").read_text()) == json.loads((theirs / "config.json").read_text())
    for name in TOKENIZER_FILES:
        if (theirs / name).exists():
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), f"{case}: {name}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case", list(CASES))
def test_sakura_merge_matches_mergekit_yaml(case, arch, zoo, tmp_path, capsys):
    if arch not in ONLY_ON.get(case, ARCHS):
        pytest.skip(f"{case} needs another architecture with {arch}'s tensor names")
    other = {"other": zoo[OTHER_ARCH[arch]]["a"]} if arch in OTHER_ARCH else {}
    config, flags = write_config(case, {**zoo[arch], **other}, tmp_path)
    if (case, arch) in MERGEKIT_FAILS:
        with pytest.raises(Exception, match="layer_types"):  # transformers: StrictDataclassClassValidationError
            run_mergekit(config, tmp_path / "mergekit", flags)
    else:
        run_mergekit(config, tmp_path / "mergekit", flags)
    shutil.rmtree(tmp_path / "lora-cache", ignore_errors=True)  # sakura applies the LoRA again
    assert run_sakura(config, tmp_path / "sakura", flags, capsys) == expected_engine(config)
    compare_tensors(case, tmp_path / "sakura", tmp_path / "mergekit")
    if (case, arch) not in MERGEKIT_FAILS:
        compare_files(case, tmp_path / "sakura", tmp_path / "mergekit")


def test_every_method_mergekit_registers_has_a_case():
    from mergekit.merge_methods import registry

    assert {m.spec.name for m in registry.registered_methods()} == set(METHODS)


def test_every_exception_is_documented():
    text = DOC.read_text(encoding="utf-8")
    for case in set(EXTRA_FILES) | LAYER_COUNT_CHANGES:
        assert f"`{case}`" in text, f"{case} is an exception the conformance page does not explain"
