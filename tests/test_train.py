"""The train stage: DPO/SFT with LoRA on trl through the engine, on tiny models and a few CPU steps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sakura_core.engine import Engine
from sakura_core.recipe import load_recipe

TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"

# A recipe-local plugin that writes a dataset artifact per the contract (dataset/ DatasetDict + stats.json),
# so these tests depend on no other helper's stage.
DATA_PLUGIN = '''
import json
from sakura_core import hookimpl
from sakura_core.options import Options
from sakura_core.stage import StageKind


class PrefOptions(Options):
    rows: int = 8
    shape: str = "preference"   # "preference", "sft", or "no_rejected"


class PrefData(StageKind):
    Options = PrefOptions

    def run(self, ctx):
        import datasets
        o = ctx.options
        rows = []
        for i in range(o.rows):
            prompt = [{"role": "system", "content": "You are helpful."},
                      {"role": "user", "content": f"What is {i} plus {i}? Answer briefly."}]
            good = [{"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]
            bad = [{"role": "assistant", "content": f"I think it is {2 * i + 1}, the sky is blue today."}]
            if o.shape == "sft":
                rows.append({"messages": prompt + good})
            elif o.shape == "no_rejected":
                rows.append({"prompt": prompt, "chosen": good})
            else:
                rows.append({"prompt": prompt, "chosen": good, "rejected": bad})
        dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
        dd.save_to_disk(str(ctx.output_dir / "dataset"))
        (ctx.output_dir / "stats.json").write_text(json.dumps({"train": len(rows)}))
        return {"rows": len(rows)}


@hookimpl
def sakura_register_stage_kinds(register):
    register("test_prefs", PrefData())
'''


def write_recipe(tmp_path: Path, body: str, name: str = "r.toml") -> Path:
    (tmp_path / "prefs_plugin.py").write_text(DATA_PLUGIN)
    head = f'''
name = "train-test"
plugins = ["prefs_plugin.py"]
[models]
base = "{TINY}"
[stages.data]
kind = "test_prefs"
'''
    path = tmp_path / name
    path.write_text(textwrap.dedent(head) + textwrap.dedent(body))
    return path


DPO = '''
[stages.dpo]
kind = "train"
trainer = "dpo"
model = "base"
dataset = "data"
lora = { r = 4, alpha = 8, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }
args = { learning_rate = 1e-3, beta = 0.1, per_device_train_batch_size = 2, max_steps = 3, max_length = 128, seed = 1 }
'''


def run(path: Path, overrides=(), **kw):
    return Engine(load_recipe(path, list(overrides))).run(**kw)


def test_dpo_lora_through_engine(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run(write_recipe(tmp_path, DPO))
    assert result.ok, result.error
    out = result.outcome("dpo")
    art = out.artifact
    assert (art / "adapter" / "adapter_config.json").is_file()
    assert list(art.glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(art)
    assert not any("lora" in n for n, _ in model.named_parameters())  # merged
    tok = AutoTokenizer.from_pretrained(art)
    assert "### Assistant" in tok.chat_template
    m = out.metrics
    assert m["steps"] == 3
    for key in ("loss", "reward_accuracy", "reward_margin", "tokens_per_s", "mfu", "peak_memory_gib"):
        assert isinstance(m[key], (int, float)), key
    manifest = json.loads((art / "sakura-artifact.json").read_text())
    assert manifest["metrics"]["steps"] == 3
    # What trl's DPOConfig received, recorded in the artifact and in the metrics, with the optimizer that ran.
    recorded = json.loads((art / "trainer_config.json").read_text())
    assert recorded == m["trainer_config"] and recorded["beta"] == 0.1 and recorded["max_length"] == 128
    assert recorded["optim"] and "output_dir" not in recorded
    assert m["trainer_config_recipe"]["learning_rate"] == 1e-3
    # The merged weights differ from the base model: the adapter trained and was merged.
    base = AutoModelForCausalLM.from_pretrained(_base_path(result))
    q_base = base.model.layers[0].self_attn.q_proj.weight
    q_new = model.model.layers[0].self_attn.q_proj.weight
    assert not q_base.allclose(q_new)


def _base_path(result) -> Path:
    store = result.recipe.store_dir
    fp = result.plan.sources["base"].fingerprint
    return store / "artifacts" / fp


def _count_reference_passes(monkeypatch) -> list[int]:
    """Counts reference forwards: with LoRA, trl runs each one (precomputed or live) inside
    ``use_adapter(model, None)``, which disables the adapter. The wrapper calls the real context manager."""
    import trl.trainer.dpo_trainer as dpo

    calls: list[int] = []
    real = dpo.use_adapter

    def counted(model, adapter_name):
        calls.append(1)
        return real(model, adapter_name)

    monkeypatch.setattr(dpo, "use_adapter", counted)
    return calls


TWO_DPO = DPO + '''
[stages.dpo_ipo]
kind = "train"
trainer = "dpo"
model = "base"
dataset = "data"
lora = { r = 8, alpha = 16, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }
args = { learning_rate = 5e-4, beta = 0.2, loss_type = ["ipo"], per_device_train_batch_size = 2, max_steps = 2, max_length = 128, seed = 3 }
'''


def test_reference_cache_is_computed_once_and_reused(tmp_path, monkeypatch):
    calls = _count_reference_passes(monkeypatch)
    path = write_recipe(tmp_path, TWO_DPO)
    first = run(path)
    assert first.ok, first.error
    dpo, ipo = first.outcome("dpo").metrics, first.outcome("dpo_ipo").metrics
    # The first DPO stage ran the reference over the 8 rows once; the second stage (other LoRA, loss, beta,
    # learning rate) reused the stored log-probs with no reference forward at all.
    assert len(calls) == 2  # 8 rows in reference batches of 4 (twice the training batch), once
    assert dpo["ref_forward_splits"] == ["train"] and not dpo["ref_cache_hit"]
    assert ipo["ref_cache_hit"] and ipo["ref_forward_splits"] == [] and ipo["ref_cache"] == dpo["ref_cache"]
    cache_dir = first.recipe.store_dir / "artifacts" / dpo["ref_cache"]
    assert json.loads((cache_dir / "sakura-artifact.json").read_text())["kind"] == "ref-logprobs"

    # A re-run with other hyperparameters: no reference pass, and the same first loss as a run that
    # computed the reference live during training (ref_cache = false).
    calls.clear()
    again = run(path, ["stages.dpo.args.learning_rate=2e-3"], only=["data", "dpo"])
    assert again.ok, again.error
    assert calls == [] and again.outcome("dpo").metrics["ref_cache_hit"]
    live = run(path, ["stages.dpo.ref_cache=false"], only=["data", "dpo"])
    assert live.ok, live.error
    assert calls, "without the cache trl computes the reference during training"
    cached_first = first.outcome("dpo").metrics["log"][0]
    live_first = live.outcome("dpo").metrics["log"][0]
    assert cached_first["loss"] == pytest.approx(live_first["loss"], rel=1e-4, abs=1e-6)
    assert cached_first["rewards/margins"] == pytest.approx(live_first["rewards/margins"], rel=1e-3, abs=1e-6)

    # Another tokenization setting is another cache entry.
    calls.clear()
    other = run(path, ["stages.dpo.args.max_length=100"], only=["data", "dpo"])
    assert other.ok and not other.outcome("dpo").metrics["ref_cache_hit"] and calls


def test_reference_cache_follows_the_bytes_of_a_rebuilt_input(tmp_path):
    """--force rebuilds the data stage under the same fingerprint with other rows (its plugin reads a file the
    fingerprint does not cover): the DPO stage runs again and must not reuse the old rows' reference log-probs."""
    path = write_recipe(tmp_path, DPO.replace("max_steps = 3", "max_steps = 1"))
    plugin = tmp_path / "prefs_plugin.py"
    plugin.write_text(plugin.read_text().replace('"You are helpful."', '(ctx.recipe_dir / "system.txt").read_text()'))
    (tmp_path / "system.txt").write_text("You are helpful.")
    first = run(path)
    assert first.ok, first.error
    (tmp_path / "system.txt").write_text("You answer in one short sentence, always.")
    again = run(path, force=["data"])
    assert again.ok, again.error
    assert again.plan.stages["data"].fingerprint == first.plan.stages["data"].fingerprint
    assert again.outcome("dpo").status == "ran"  # the engine saw the data's new bytes
    before, after = first.outcome("dpo").metrics, again.outcome("dpo").metrics
    assert after["ref_cache"] != before["ref_cache"] and not after["ref_cache_hit"]
    assert after["ref_forward_splits"] == ["train"]


def test_reference_cache_key_is_the_inputs_content_not_their_fingerprints():
    from types import SimpleNamespace

    from sakura_trl.options import TrainOptions
    from sakura_trl.refcache import RefCache

    options = TrainOptions(model="m", dataset="d")
    args = SimpleNamespace(max_length=128, truncation_mode="keep_end", ld_alpha=None, bf16=False, fp16=False)
    tokenizer, model = SimpleNamespace(chat_template="{{ x }}"), SimpleNamespace(dtype="torch.float32")
    spec = {"store_root": "/nowhere", "model_fingerprint": "m-fp", "dataset_fingerprint": "d-fp",
            "model_digest": "m-1", "dataset_digest": "d-1"}

    def key(**changes):
        return RefCache.for_run({**spec, **changes}, options, args, tokenizer, model).key

    assert key() == key(model_fingerprint="other", dataset_fingerprint="other")  # the same bytes
    assert key(model_digest="m-2") != key() and key(dataset_digest="d-2") != key()  # rebuilt with other bytes
    assert RefCache.for_run(spec, options, args, tokenizer, model).kept_with == ["m-fp", "d-fp"]  # cache gc


def test_killed_training_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from sakura_trl.metrics import SakuraCallback

    body = DPO.replace("max_steps = 3", "max_steps = 4, save_steps = 1")
    path = write_recipe(tmp_path, body)
    real = SakuraCallback.on_step_end

    def crash_after_two(self, args, state, control, **kw):
        real(self, args, state, control, **kw)
        if state.global_step == 2:
            raise RuntimeError("simulated crash at step 2")

    monkeypatch.setattr(SakuraCallback, "on_step_end", crash_after_two)
    crashed = run(path)
    assert not crashed.ok and "simulated crash" in str(crashed.error)
    fp = crashed.plan.stages["dpo"].fingerprint
    store = crashed.recipe.store_dir
    assert not (store / "artifacts" / fp).exists()  # nothing half-written
    assert (store / "work" / fp / "checkpoints" / "checkpoint-1").is_dir()

    monkeypatch.setattr(SakuraCallback, "on_step_end", real)
    resumed = run(path)
    assert resumed.ok, resumed.error
    m = resumed.outcome("dpo").metrics
    assert m["resumed_from_step"] == 1 and m["steps"] == 4
    assert [entry["step"] for entry in m["log"]] == [2, 3, 4]  # steps 2..4 trained in the second run
    assert not (store / "work" / fp).exists()  # work area dropped once the artifact is complete

    # Same result as a run that was never interrupted.
    (tmp_path / "straight").mkdir()
    straight = run(write_recipe(tmp_path / "straight", body))
    assert straight.ok, straight.error
    a = load_file(str(resumed.outcome("dpo").artifact / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(straight.outcome("dpo").artifact / "adapter" / "adapter_model.safetensors"))
    for key in a:
        assert a[key].allclose(b[key], atol=1e-5), key


def test_a_checkpoint_left_half_written_is_dropped_and_the_run_resumes_before_it(tmp_path, monkeypatch):
    """A kill while transformers writes checkpoint-2 (before its trainer_state.json) used to break the stage for
    good: every re-run tried to resume from it. Now the re-run drops it, says so, and resumes from checkpoint-1."""
    from sakura_trl.metrics import SakuraCallback

    from sakura_core.progress import Reporter

    body = DPO.replace("max_steps = 3", "max_steps = 3, save_steps = 1")
    path = write_recipe(tmp_path, body)
    real = SakuraCallback.on_step_end

    def crash_at_three(self, args, state, control, **kw):
        real(self, args, state, control, **kw)
        if state.global_step == 3:
            raise RuntimeError("simulated crash at step 3")

    monkeypatch.setattr(SakuraCallback, "on_step_end", crash_at_three)
    crashed = run(path)
    assert not crashed.ok
    checkpoints = crashed.recipe.store_dir / "work" / crashed.plan.stages["dpo"].fingerprint / "checkpoints"
    (checkpoints / "checkpoint-2" / "trainer_state.json").unlink()  # the kill came before the last file

    lines: list[str] = []

    class Lines(Reporter):
        def log(self, message: str) -> None:
            lines.append(message)

    monkeypatch.setattr(SakuraCallback, "on_step_end", real)
    resumed = Engine(load_recipe(path), reporter=Lines()).run()
    assert resumed.ok, resumed.error
    m = resumed.outcome("dpo").metrics
    assert m["resumed_from_step"] == 1 and [entry["step"] for entry in m["log"]] == [2, 3]
    assert "dpo: dropping incomplete checkpoint-2 (no trainer_state.json): a run stopped while writing it" in lines


def test_max_lengths_reach_the_trainer(tmp_path):
    from sakura_trl.config import build_config, resolve_args
    from sakura_trl.options import TrainOptions
    from sakura_trl.trainers import DPO as DPO_TRAINER
    from sakura_trl.trainers import SFT as SFT_TRAINER

    def config(trainer, options, has_eval=False, data_max_length=None):
        values = resolve_args(trainer, options, cuda=False, data_max_length=data_max_length, has_eval=has_eval)
        return build_config(trainer, values, tmp_path)

    opts = TrainOptions(model="m", dataset="d", args={"max_length": 77, "truncation_mode": "keep_start"})
    assert config(DPO_TRAINER, opts).max_length == 77
    assert config(SFT_TRAINER, opts).max_length == 77
    # No args.max_length: the limit the dataset stage filtered with, not trl's default of 1024.
    bare = TrainOptions(model="m", dataset="d")
    assert config(DPO_TRAINER, bare, data_max_length=300).max_length == 300
    assert config(DPO_TRAINER, opts, data_max_length=300).max_length == 77
    # A named eval split is evaluated (each epoch) unless args.eval_strategy says otherwise.
    assert config(DPO_TRAINER, bare, has_eval=True).eval_strategy == "epoch"
    assert config(DPO_TRAINER, bare).eval_strategy == "no"

    # Through the engine: every step's sequences are cut to max_length (2 pairs x 2 sequences x 60 tokens).
    long = run(write_recipe(tmp_path, DPO), ["stages.dpo.args.max_length=60"])
    assert long.ok, long.error
    log = long.outcome("dpo").metrics["log"]
    per_step = [b["num_tokens"] - a["num_tokens"] for a, b in zip([{"num_tokens": 0}] + log, log)]
    assert max(per_step) <= 2 * 2 * 60
    full = run(write_recipe(tmp_path, DPO), ["stages.dpo.args.max_length=128"], only=["data", "dpo"])
    assert full.outcome("dpo").metrics["tokens"] > long.outcome("dpo").metrics["tokens"]



def test_one_resolved_configuration_for_trl_the_plan_and_the_artifact(tmp_path, monkeypatch):
    """resolve_args is the one place the trainer configuration is made: build_config hands trl exactly its
    values, and the plan's estimate sizes the same configuration for a CUDA GPU."""
    import sakura_trl.config as trl_config
    from sakura_core.plugins import Plugins
    from sakura_core.stage import CheckEnv
    from sakura_trl.options import TrainOptions
    from sakura_trl.stage import TrainStage
    from sakura_trl.trainers import DPO as DPO_TRAINER

    options = TrainOptions(model="m", dataset="d", eval_split="test", lora={"r": 4}, args={
        "gradient_checkpointing": True, "optim": "paged_adamw_32bit", "per_device_train_batch_size": 2})
    values = trl_config.resolve_args(DPO_TRAINER, options, cuda=False, data_max_length=300, has_eval=True)
    assert "gradient_checkpointing" not in values and values["activation_checkpointing"] is True
    assert values["optim"] == "adamw_torch"  # paged_adamw_32bit needs CUDA and bitsandbytes
    assert values["use_cpu"] is True and values["bf16"] is False and values["max_length"] == 300
    assert values["precompute_ref_batch_size"] == 4 and values["precompute_ref_log_probs"] is True
    assert values["eval_strategy"] == "epoch"
    built = trl_config.build_config(DPO_TRAINER, values, tmp_path)
    for key, value in values.items():
        got = getattr(built, key)
        got = getattr(got, "value", got)  # transformers' enums (optim, eval_strategy, save_strategy)
        assert got == ([] if key == "report_to" and value == "none" else value), key  # "none" becomes []

    on_gpu = trl_config.resolve_args(DPO_TRAINER, options, cuda=True, data_max_length=300, has_eval=True)
    assert on_gpu["bf16"] is True and "use_cpu" not in on_gpu and on_gpu["dataloader_pin_memory"] is True
    calls, real = [], trl_config.resolve_args

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(trl_config, "resolve_args", recorded)
    config = {"model_type": "llama", "vocab_size": 500, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "dtype": "bfloat16"}
    env = CheckEnv(plugins=Plugins(), recipe_dir=tmp_path, names={"m", "d"})
    found = TrainStage().estimate(options, {"m": {"config": config}, "d": {"max_length": 300}}, env)
    assert calls == [{"cuda": True, "data_max_length": 300, "has_eval": True}]
    assert found.notes[0].startswith("4 sequences x 300 tokens")  # 2 pairs of the resolved batch, at its max_length
    assert any("gradient checkpointing" in note for note in found.notes)  # the renamed key reached the estimate
    assert any("reference log-probs: a pass of their own" in note for note in found.notes)


SFT = '''
[stages.sft]
kind = "train"
trainer = "sft"
model = "base"
dataset = "data"
lora = { r = 4, alpha = 8, dropout = 0.0 }
args = { learning_rate = 1e-3, per_device_train_batch_size = 2, max_steps = 2, max_length = 96, assistant_only_loss = false }
'''


def test_sft_lora_through_engine(tmp_path):
    from transformers import AutoModelForCausalLM

    path = write_recipe(tmp_path, SFT.replace("[stages.sft]", 'shape = "sft"\n[stages.sft]'))
    result = run(path)
    assert result.ok, result.error
    out = result.outcome("sft")
    assert out.metrics["steps"] == 2 and out.metrics["loss"] > 0 and "ref_cache" not in out.metrics
    assert (out.artifact / "adapter" / "adapter_model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(out.artifact)


def test_launcher_runs_ddp_with_two_cpu_processes(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU DDP check")
    body = DPO.replace("max_steps = 3", "max_steps = 2") + "launcher = { num_processes = 2 }\n"
    result = run(write_recipe(tmp_path, body))
    assert result.ok, result.error
    m = result.outcome("dpo").metrics
    assert m["num_processes"] == 2 and m["distributed_type"] == "MULTI_CPU"
    assert m["steps"] == 2 and m["ref_forward_splits"] == ["train"]
    assert (result.outcome("dpo").artifact / "adapter" / "adapter_config.json").is_file()
    # The reference cache written by the 2-process run serves a single-process run.
    single = run(write_recipe(tmp_path, DPO.replace("max_steps = 3", "max_steps = 1")))
    assert single.ok and single.outcome("dpo").metrics["ref_cache_hit"]


class Recorder:
    """A reporter that keeps every progress bar: its description, unit, total and the values it took."""

    def __init__(self):
        from sakura_core.progress import Reporter

        class Recording(Reporter):
            def _task_started(inner, task):
                self.bars.append((task.description, task.unit, task.total, []))

            def _task_updated(inner, task):
                next(bar for bar in reversed(self.bars) if bar[0] == task.description)[3].append(task.completed)

        self.bars: list[tuple[str, str, float, list[float]]] = []
        self.reporter = Recording()


def test_the_reference_pass_has_a_progress_bar_and_the_model_keeps_its_dtype(tmp_path):
    """8 pairs through the reference in batches of 4; a float16 model trained in float32 on the CPU is saved
    in float16 (save_dtype says otherwise)."""
    path = write_recipe(tmp_path, DPO)
    path.write_text(path.read_text().replace(TINY, TINY + "&dtype=float16"))
    recorder = Recorder()
    result = Engine(load_recipe(path), recorder.reporter).run()
    assert result.ok, result.error
    reference = [bar for bar in recorder.bars if "reference" in bar[0]]
    assert reference == [("dpo: reference log-probs (train)", "pairs", 8, [4, 8])]
    assert [bar[:3] for bar in recorder.bars if bar[0] == "dpo: training"] == [("dpo: training", "steps", 3)]
    artifact = result.outcome("dpo").artifact
    assert json.loads((artifact / "config.json").read_text())["dtype"] == "float16"
    from safetensors import safe_open

    with safe_open(str(next(artifact.glob("*.safetensors"))), "pt") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"F16"}
    wide = run(path, ["stages.dpo.save_dtype=float32"], only=["dpo"])
    assert wide.ok, wide.error
    assert json.loads((wide.outcome("dpo").artifact / "config.json").read_text())["dtype"] == "float32"


def test_sigterm_during_training_saves_a_checkpoint_and_says_so(tmp_path, monkeypatch):
    import os
    import signal

    from sakura_trl.metrics import SakuraCallback

    body = DPO.replace("max_steps = 3", "max_steps = 4, save_steps = 100")
    path = write_recipe(tmp_path, body)
    real = SakuraCallback.on_step_end

    def terminated_in_step_two(self, args, state, control, **kw):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what a cluster sends before it takes the machine back
        real(self, args, state, control, **kw)

    monkeypatch.setattr(SakuraCallback, "on_step_end", terminated_in_step_two)
    stopped = run(path)
    fp = stopped.plan.stages["dpo"].fingerprint
    checkpoints = stopped.recipe.store_dir / "work" / fp / "checkpoints"
    assert not stopped.ok and stopped.error.exit_code == 143
    assert str(stopped.error) == (f"stage dpo: stopped by SIGTERM after step 2 of 4: saved checkpoint-2 in {checkpoints}; "
                                  "run again to resume from it")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler lives as long as the training

    monkeypatch.setattr(SakuraCallback, "on_step_end", real)
    resumed = run(path)
    assert resumed.ok, resumed.error
    assert resumed.outcome("dpo").metrics["resumed_from_step"] == 2


def test_sigterm_before_the_first_step_stops_at_once(tmp_path, monkeypatch):
    import os
    import signal

    from sakura_trl.metrics import SakuraCallback

    def terminated(self, args, state, control, **kw):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(SakuraCallback, "on_train_begin", terminated)
    stopped = run(write_recipe(tmp_path, DPO))
    assert not stopped.ok and stopped.error.exit_code == 143
    assert str(stopped.error) == ("stage dpo: stopped by SIGTERM before the first training step: nothing to save; "
                                  "a re-run starts training over")
