"""The eval stage: lm-eval's own numbers, trl's own preference metrics, greedy generations, a fingerprint that
covers the model, the options and the task definitions, results on the model card, and bad input in one line."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from sakura_core.engine import Engine
from sakura_core.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "recipes" / "tasks"
SMALL = {"layers": 2, "hidden": 32, "intermediate": 64, "heads": 2, "kv_heads": 1}


@pytest.fixture
def recipe_dir(tmp_path, tiny_model_factory):
    """A recipe folder with the demo's task, its data, and two tiny models (another seed, another model)."""
    shutil.copytree(TASKS, tmp_path / "tasks")
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    for name, seed in (("m1", 1), ("m2", 2)):
        shutil.copytree(tiny_model_factory(seed=seed, **SMALL), tmp_path / name)
    return tmp_path


def write(recipe_dir: Path, text: str) -> Path:
    path = recipe_dir / "r.toml"
    path.write_text(textwrap.dedent(text))
    return path


def run(path: Path, **kwargs):
    result = Engine(load_recipe(path)).run(**kwargs)
    assert result.ok, result.error
    return result


TRIVIA = """
[models]
m1 = "./m1"
m2 = "./m2"

[stages.trivia]
kind = "eval"
model = "m1"
evaluator = "lm-eval"
options = { tasks = ["sakura_trivia"], task_files = ["tasks/sakura_trivia.yaml"], num_fewshot = 2, batch_size = 8 }
"""


@pytest.mark.slow
def test_lm_eval_stage_gives_lm_evals_own_numbers(recipe_dir, monkeypatch):
    """The same model, task and settings through lm_eval.simple_evaluate directly: identical scores."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    result = run(write(recipe_dir, TRIVIA))
    stage = result.outcome("trivia")
    ours = json.loads((stage.artifact / "results.json").read_text())
    monkeypatch.chdir(recipe_dir)  # the task file's data path is relative to the recipe's folder
    direct = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(recipe_dir / "m1"), "dtype": "auto"}, tasks=["sakura_trivia"],
        num_fewshot=2, batch_size=8, device="cpu", task_manager=TaskManager(include_path=str(recipe_dir / "tasks")),
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0, log_samples=False,
    )["results"]["sakura_trivia"]
    assert ours["results"]["sakura_trivia"] == {
        "acc": direct["acc,none"], "acc_stderr": direct["acc_stderr,none"],
        "acc_norm": direct["acc_norm,none"], "acc_norm_stderr": direct["acc_norm_stderr,none"],
    }
    assert ours["settings"]["num_fewshot"] == {"sakura_trivia": 2} and ours["settings"]["n_samples"]["sakura_trivia"]["effective"] == 40
    assert ours["tasks"]["sakura_trivia"] == {"name": "sakura_trivia", "dataset": "json", "config": None, "split": "test",
                                             "num_fewshot": 2}
    manifest = json.loads((stage.artifact / "sakura-artifact.json").read_text())
    assert manifest["libraries"]["lm-eval"] and manifest["metrics"]["results"] == ours["results"]


@pytest.mark.slow
def test_the_fingerprint_covers_the_model_the_options_and_the_task_definitions(recipe_dir):
    path = write(recipe_dir, TRIVIA + """
[stages.trivia2]
kind = "eval"
model = "m2"
evaluator = "lm-eval"
options = { tasks = ["sakura_trivia"], task_files = ["tasks/sakura_trivia.yaml"], num_fewshot = 2, batch_size = 8 }
""")
    first = run(path)
    assert {o.name: o.status for o in first.outcomes} == {"trivia": "ran", "trivia2": "ran"}  # another model: its own
    assert first.outcome("trivia").fingerprint != first.outcome("trivia2").fingerprint
    assert {o.status for o in run(path).outcomes} == {"cached"}  # unchanged: nothing runs
    data = recipe_dir / "tasks" / "sakura_trivia.jsonl"
    data.write_text(data.read_text().replace("What color is the sky", "What colour is the sky"))
    assert {o.status for o in run(path).outcomes} == {"ran"}  # the task's data is part of its definition
    task = recipe_dir / "tasks" / "sakura_trivia.yaml"
    task.write_text(task.read_text().replace('"Question: {{question}}', '"Q: {{question}}'))
    assert {o.status for o in run(path).outcomes} == {"ran"}


PREFERENCE = """
[models]
m1 = "./m1"

[stages.data]
kind = "dataset"
sources = [{ adapter = "orca", path = "data/tiny_orca.jsonl" }]
tokenizer = "m1"
max_length = 256
test_size = 8

[stages.dpo]
kind = "train"
model = "m1"
dataset = "data"
lora = { r = 4, alpha = 8, dropout = 0.0 }
args = { learning_rate = 1e-3, beta = 0.2, per_device_train_batch_size = 4, max_steps = 3, seed = 1 }

[stages.heldout]
kind = "eval"
model = "dpo"
evaluator = "preference"
inputs = { dataset = "data" }
"""


@pytest.mark.slow
def test_preference_accuracy_is_trls_own_dpo_eval_on_the_held_out_pairs(recipe_dir):
    """The reference and beta default to the train stage's; the numbers are trl's DPOTrainer.evaluate's."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    recipe = load_recipe(write(recipe_dir, PREFERENCE))
    heldout = recipe.stages["heldout"]
    assert heldout.options.inputs == {"dataset": "data", "reference": "m1"} and heldout.options.options["beta"] == 0.2
    result = Engine(recipe).run()
    assert result.ok, result.error
    ours = json.loads((result.outcome("heldout").artifact / "results.json").read_text())
    pairs = datasets.load_from_disk(str(result.outcome("data").artifact / "dataset"))["test"]
    assert ours["settings"]["pairs"] == len(pairs) == 8 and ours["settings"]["reference"] == "m1"

    policy_dir = result.outcome("dpo").artifact
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy_dir), ref_model=AutoModelForCausalLM.from_pretrained(recipe_dir / "m1"),
        args=DPOConfig(output_dir=str(recipe_dir / "trl-direct"), beta=0.2, max_length=256, per_device_eval_batch_size=8,
                       report_to="none", use_cpu=True, bf16=False, precompute_ref_log_probs=False),  # as trained on a CPU
        train_dataset=pairs, eval_dataset=pairs, processing_class=tokenizer,
    )
    direct = trainer.evaluate()
    assert ours["results"]["preference"] == pytest.approx({
        "reward_accuracy": direct["eval_rewards/accuracies"], "reward_margin": direct["eval_rewards/margins"],
        "reward_chosen": direct["eval_rewards/chosen"], "reward_rejected": direct["eval_rewards/rejected"],
        "logps_chosen": direct["eval_logps/chosen"], "logps_rejected": direct["eval_logps/rejected"],
        "loss": direct["eval_loss"],
    }, rel=1e-6)
    assert 0.0 <= ours["results"]["preference"]["reward_accuracy"] <= 1.0


@pytest.mark.slow
def test_generate_keeps_greedy_completions_and_the_card_shows_results(recipe_dir):
    (recipe_dir / "prompts.jsonl").write_text('{"prompt": "Name a color."}\n{"prompt": "Count to three."}\n')
    path = write(recipe_dir, TRIVIA + """
[stages.say]
kind = "eval"
model = "m1"
evaluator = "generate"
options = { prompts = ["Hello!"], prompts_file = "prompts.jsonl", max_new_tokens = 6 }

[stages.ship]
kind = "publish"
publisher = "local"
model = "m1"
path = "dist/m1"
""")
    result = run(path)
    assert result.recipe.stages["ship"].options.evals == ["trivia", "say"]  # every eval stage of its model
    samples = [json.loads(line) for line in (result.outcome("say").artifact / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == ["Hello!", "Name a color.", "Count to three."]
    again = json.loads((result.outcome("say").artifact / "results.json").read_text())
    assert again["results"]["generate"]["prompts"] == 3.0

    from huggingface_hub import ModelCard

    card_text = (recipe_dir / "dist" / "m1" / "README.md").read_text()
    card = ModelCard(card_text)
    evals = card.data.eval_results
    assert [(e.dataset_type, e.metric_type, e.dataset_split) for e in evals] == [("sakura_trivia", "acc", "test"),
                                                                               ("sakura_trivia", "acc_norm", "test")]
    assert evals[0].metric_value == result.outcome("trivia").metrics["results"]["sakura_trivia"]["acc"]
    assert "## Evaluation (stage `trivia`, lm-eval)" in card_text and "| sakura_trivia | acc |" in card_text
    assert "### Sample generations (stage `say`)" in card_text and "**Prompt:** Hello!" in card_text
    lineage = json.loads((recipe_dir / "dist" / "m1" / "sakura-lineage.json").read_text())
    assert [e["name"] for e in lineage["evaluations"]] == ["trivia", "say"]


def test_tasks_snapshot_matches_the_installed_lm_eval():
    from importlib.metadata import version

    from sakura_eval.tasks import load_snapshot

    assert load_snapshot()["lm_eval"] == version("lm-eval"), "run: python -m sakura_eval.tasks"


BAD = [
    ("unknown task", 'options = { tasks = ["hellaswg"] }', "stages.e.options.tasks[0]",
     "unknown lm-eval task 'hellaswg' (did you mean hellaswag?)"),
    ("no task", "options = {}", "stages.e.options", "name tasks"),
    ("unknown preset", 'options = { preset = "openllm2" }', "stages.e.options.preset", "input should be"),
    ("task file missing", 'options = { tasks = ["x"], task_files = ["tasks/nope.yaml"] }', "stages.e.options.task_files[0]",
     "no such task file"),
    ("task file not yaml", 'options = { tasks = ["x"], task_files = ["bad.yaml"] }', "stages.e.options.task_files[0]",
     "is not valid YAML"),
    ("evaluator unknown", 'evaluator = "lm_eval"', "stages.e.evaluator", "did you mean lm-eval"),
    ("input unknown", 'inputs = { data = "m1" }\noptions = { tasks = ["sakura_trivia"], task_files = ["tasks"] }', "stages.e.inputs.data",
     "reads no input 'data'"),
    ("preference without dataset", 'evaluator = "preference"', "stages.e.inputs", "needs inputs.dataset"),
    ("generate without prompts", 'evaluator = "generate"', "stages.e.options", "prompts"),
    ("prompts file with a bad line", 'evaluator = "generate"\noptions = { prompts_file = "bad.jsonl" }', "stages.e.options.prompts_file",
     "line 2: malformed JSON"),
    ("limit zero", 'options = { tasks = ["sakura_trivia"], task_files = ["tasks"], limit = 0 }', "stages.e.options.limit",
     "greater than 0"),
]


@pytest.mark.parametrize("what, table, key, message", BAD, ids=[b[0] for b in BAD])
def test_bad_eval_stages_are_one_line_at_validate(recipe_dir, sakura, what, table, key, message):
    (recipe_dir / "bad.yaml").write_text("task: [unclosed\n")
    (recipe_dir / "bad.jsonl").write_text('{"prompt": "fine"}\n{"prompt": \n')
    lines = ['[models]', 'm1 = "./m1"', "[stages.e]", 'kind = "eval"', 'model = "m1"']
    if "evaluator" not in table:
        lines.append('evaluator = "lm-eval"')
    path = write(recipe_dir, "\n".join(lines) + "\n" + table + "\n")
    result = sakura("validate", path, check=2)
    assert result.stderr.strip() == f"r.toml: {key}: {message}" or (
        result.stderr.startswith(f"r.toml: {key}: ") and message in result.stderr), result.stderr


@pytest.mark.slow
def test_a_generation_needing_a_chat_template_the_model_lacks_is_one_line(recipe_dir, sakura):
    config = recipe_dir / "m1" / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data))
    (recipe_dir / "m1" / "chat_template.jinja").unlink(missing_ok=True)
    path = write(recipe_dir, """
        [models]
        m1 = "./m1"
        [stages.say]
        kind = "eval"
        model = "m1"
        evaluator = "generate"
        options = { prompts = ["Hi"] }
    """)
    result = sakura("run", path, check=1)
    assert result.stderr.strip().splitlines()[-1] == (
        "stage say: model m1 has no chat template, which evaluator generate prompts through: set apply_chat_template "
        "= false, or evaluate a model with a chat template"
    )
    assert not (recipe_dir / ".sakura" / "artifacts").exists()
