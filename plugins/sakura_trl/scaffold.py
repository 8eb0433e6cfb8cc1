"""What ``sakura new-plugin NAME --kind trainer`` writes: a trainer package (``string.Template`` texts)."""

from sakura_core.scaffold_templates import ScaffoldKind

TRAINER_MODULE = '''\
"""``$registered``: a trainer for sakura's ``train`` stages.

A trainer tells the train stage which trl config class and trainer class to use, which dataset columns
it needs and sakura's defaults for its ``args``. This one is DPO with the IPO loss (Azar et al., 2023,
"A General Theoretical Paradigm to Understand Learning from Human Preferences"): trl's ``DPOTrainer``
with ``loss_type = ["ipo"]``. The train stage adds the rest: LoRA, the cached reference log-probs,
resuming from checkpoints, live metrics and the merged model artifact. A recipe's ``args`` are checked
against trl's ``DPOConfig`` fields when the recipe loads, and win over the defaults here.

To train with a class of your own, subclass trl's trainer in a module of this package that only training
imports (``class MyTrainer(trl.DPOTrainer)``) and name it: ``trainer_class = "$module.training:MyTrainer"``;
to build or run it differently, override ``run(job)``.
"""

from __future__ import annotations

from sakura_trl.trainers import DPO


class ${camel}(DPO):
    """DPO with the IPO loss (trl's DPOTrainer, loss_type = ["ipo"])."""

    # DPO's config class (trl's DPOConfig: a recipe's args are checked against its fields), trainer class,
    # columns and reference model are kept; only sakura's defaults under the recipe's args change.
    defaults = {**DPO.defaults, "loss_type": ["ipo"], "beta": 0.1}
    version = "1"  # bump when the same recipe should train differently on purpose
'''

TRAINER_PLUGIN = '''

@hookimpl
def sakura_register_trainers(register):
    from $module.trainer import ${camel}

    register("$registered", ${camel}())
'''

TRAINER_DATA = '''\
{"question": "What is 2 plus 2?", "chosen": "2 plus 2 is 4.", "rejected": "2 plus 2 is 5."}
{"question": "What is the capital of Italy?", "chosen": "Rome is the capital of Italy.", "rejected": "Milan."}
{"question": "How many days are in a week?", "chosen": "A week has seven days.", "rejected": "Ten days."}
{"question": "What do bees make?", "chosen": "Bees make honey and wax.", "rejected": "Bees make milk."}
{"question": "Which planet is closest to the sun?", "chosen": "Mercury is closest to the sun.", "rejected": "Jupiter."}
{"question": "What is frozen water called?", "chosen": "Frozen water is called ice.", "rejected": "Steam."}
{"question": "How many sides does a triangle have?", "chosen": "A triangle has three sides.", "rejected": "Four."}
{"question": "What color are ripe bananas?", "chosen": "Ripe bananas are yellow.", "rejected": "Blue."}
'''

TRAINER_TEST = '''

RECIPE = """
[models]
base = "%s"

[stages.data]
kind = "dataset"
sources = [{ adapter = "orca", path = "pairs.jsonl" }]

[stages.train]
kind = "train"
trainer = "$registered"
model = "base"
dataset = "data"
lora = { r = 4, alpha = 8, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }
args = { learning_rate = 1e-3, per_device_train_batch_size = 2, max_steps = 2, max_length = 128, seed = 1 }
""" % TINY


def test_train_stage_runs_dpo_with_the_ipo_loss(tmp_path):
    shutil.copy(DATA / "pairs.jsonl", tmp_path / "pairs.jsonl")
    result = run_recipe(tmp_path, RECIPE)
    assert result.ok, result.error
    train = result.outcome("train")
    assert train.metrics["steps"] == 2
    # At the first step the LoRA adapter is still zero, so the policy equals the reference and IPO's loss is
    # (0 - 1 / (2 * beta))**2 = 25 with this trainer's beta = 0.1 (DPO's sigmoid loss would be log 2).
    assert train.metrics["first_loss"] == pytest.approx(25.0, rel=1e-3)
    assert (train.artifact / "model.safetensors").is_file()
    assert (train.artifact / "adapter" / "adapter_config.json").is_file()


def test_args_are_checked_against_trl_before_any_work(tmp_path):
    shutil.copy(DATA / "pairs.jsonl", tmp_path / "pairs.jsonl")
    with pytest.raises(RecipeError) as info:
        run_recipe(tmp_path, RECIPE.replace("learning_rate", "learnin_rate"))
    assert "stages.train.args.learnin_rate: unknown option for trl's DPOConfig (did you mean learning_rate?)" in str(info.value)
    assert not (tmp_path / ".sakura").exists()
'''

TRAINER_USAGE = '''\
[stages.dpo]
kind = "train"
trainer = "$registered"
model = "merge"
dataset = "data"
lora = { r = 16, alpha = 16, dropout = 0.05 }
args = { learning_rate = 5e-5, beta = 0.05 }   # any field of trl's DPOConfig'''

TRAINER_ABOUT = '''\
It adds the trainer `$registered`: DPO with the IPO loss, on trl's `DPOTrainer`. A trainer is **one
class**: trl's config and trainer classes, the dataset columns it needs and sakura's defaults for its
`args` (here a subclass of the built-in DPO changing only the defaults); the train stage does the rest
(LoRA, reference log-prob cache, resume, metrics, merged artifact), and a recipe's `args` are checked
against trl's `DPOConfig` before any work.'''

TRAINER_TESTS = '''\
The tests train a tiny generated model for two steps through sakura's engine on `tests/data/pairs.jsonl`
(the first step's loss shows the IPO loss is the one used), and check that a misspelt `args` key fails
before any work.'''


SCAFFOLD = ScaffoldKind(
    title="A trainer",
    description="A trainer for sakura: DPO with the IPO loss",
    implementation="trainer.py",
    module=TRAINER_MODULE,
    plugin=TRAINER_PLUGIN,
    test=TRAINER_TEST,
    usage=TRAINER_USAGE,
    about=TRAINER_ABOUT,
    tests=TRAINER_TESTS,
    data=TRAINER_DATA,
    tiny=True,
)
