"""Train stage: recipe checks without torch/trl, the trl config snapshot, and every bad input as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sakura_core.errors import RecipeError, StageError
from sakura_core.recipe import load_recipe

from test_train import DPO, run, write_recipe

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.dpo.args.learnin_rate=1e-5", "stages.dpo.args.learnin_rate: unknown option for trl's DPOConfig (did you mean learning_rate?)"),
        ("stages.dpo.args.learning_rate=0", "stages.dpo.args.learning_rate: must be positive (got 0)"),
        ("stages.dpo.args.learning_rate=-1e-5", "stages.dpo.args.learning_rate: must be positive (got -1e-05)"),
        ("stages.dpo.args.beta=\"high\"", "stages.dpo.args.beta: must be a number (got 'high')"),
        ("stages.dpo.args.per_device_train_batch_size=0", "stages.dpo.args.per_device_train_batch_size: must be positive"),
        ("stages.dpo.args.output_dir=\"x\"", "stages.dpo.args.output_dir: set by sakura"),
        ("stages.dpo.trainer=\"dop\"", "stages.dpo.trainer: unknown trainer 'dop' (did you mean dpo?)"),
        ("stages.dpo.lora.rank=4", "stages.dpo.lora.rank: unknown option"),
        ("stages.dpo.launcher.config_file=\"nope.yaml\"", "stages.dpo.launcher.config_file: file not found"),
    ],
)
def test_bad_options_are_rejected_at_validate_time(tmp_path, override, message):
    path = write_recipe(tmp_path, DPO)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, [override])
    assert message in str(err.value)
    assert str(err.value).startswith("r.toml: ")
    assert "\n" not in str(err.value)


def test_sft_args_are_checked_against_sftconfig(tmp_path):
    body = DPO.replace('trainer = "dpo"', 'trainer = "sft"').replace("beta = 0.1, ", "")
    path = write_recipe(tmp_path, body)
    load_recipe(path)  # max_length, learning_rate... exist in SFTConfig
    with pytest.raises(RecipeError, match=r"args.beta: unknown option for trl's SFTConfig"):
        load_recipe(path, ["stages.dpo.args.beta=0.1"])
    with pytest.raises(RecipeError, match=r"args.packing: must be a boolean"):
        load_recipe(path, ["stages.dpo.args.packing=3"])


def test_validate_imports_no_torch_or_trl(tmp_path):
    path = write_recipe(tmp_path, DPO)
    code = (
        "import sys; from sakura_core.recipe import load_recipe; "
        f"load_recipe({str(path)!r}, ['stages.dpo.args.loss_type=[\"robust\"]']); "
        "heavy = [m for m in ('torch', 'trl', 'transformers', 'peft', 'datasets') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_config_snapshot_matches_installed_trl():
    from sakura_trl.snapshot import build_snapshot, load_snapshot

    assert load_snapshot() == json.loads(json.dumps(build_snapshot())), (
        "trl changed: regenerate with python -m sakura_trl.snapshot"
    )


def _assert_failed_cleanly(result, stage: str, needle: str):
    assert not result.ok
    message = str(result.error)
    assert needle in message, message
    assert "\n" not in message and "Traceback" not in message and "traceback in" not in message
    store = result.recipe.store_dir
    assert result.outcome("data").artifact.is_dir()  # the earlier artifact is intact
    assert not (store / "artifacts" / result.plan.stages[stage].fingerprint).exists()
    assert not list((store / "tmp").glob("*")) if (store / "tmp").exists() else True


def test_dataset_without_needed_columns(tmp_path):
    path = write_recipe(tmp_path, DPO.replace("[stages.dpo]", 'shape = "no_rejected"\n[stages.dpo]'))
    result = run(path)
    _assert_failed_cleanly(result, "dpo", "lacks column(s) rejected that trainer dpo needs")


def test_model_without_chat_template(tmp_path):
    path = write_recipe(tmp_path, DPO)
    text = path.read_text().replace('base = "tiny:', 'base = { source = "tiny", chat_template = "" }\nold = "tiny:')
    path.write_text(text)
    result = run(path)
    _assert_failed_cleanly(result, "dpo", "has no chat template: set chat_template in the train stage")


def test_prompts_longer_than_max_length(tmp_path):
    result = run(write_recipe(tmp_path, DPO), ["stages.dpo.args.max_length=8"])
    _assert_failed_cleanly(result, "dpo", "prompts are longer than args.max_length (8)")


def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
    path = write_recipe(tmp_path, DPO.replace("[stages.dpo]", 'shape = "sft"\n[stages.dpo]'))
    done = subprocess.run(
        [sys.executable, "-m", "sakura_core.cli", "run", str(path)], capture_output=True, text=True, timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "lacks column" in line]
    assert len(errors) == 1 and "prompt, chosen, rejected" in errors[0], done.stdout + done.stderr


def test_out_of_memory_says_which_settings_to_change():
    import torch

    from sakura_trl.config import resolve_args
    from sakura_trl.options import TrainOptions
    from sakura_trl.oom import oom_guard
    from sakura_trl.trainers import DPO

    options = TrainOptions(model="m", dataset="d", args={"per_device_train_batch_size": 16})
    values = resolve_args(DPO, options, cuda=True, data_max_length=4096)
    with pytest.raises(StageError) as err:
        with oom_guard(options, values):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    message = str(err.value)
    assert message.startswith("out of GPU memory: lower args.per_device_train_batch_size (now 16)")
    assert "activation_checkpointing = true" in message and "lora" in message
    assert message.endswith("lower args.max_length (now 4096)")  # the dataset's limit, which the run used
    # The recipe's gradient_checkpointing is the activation_checkpointing the run had on: no hint for it.
    options = TrainOptions(model="m", dataset="d", args={"gradient_checkpointing": True})
    with pytest.raises(StageError) as err:
        with oom_guard(options, resolve_args(DPO, options, cuda=True)):
            raise torch.OutOfMemoryError("CUDA out of memory.")
    assert "activation_checkpointing" not in str(err.value) and "(now 8)" in str(err.value)


@pytest.mark.skipif(sys.platform == "darwin", reason="CPU-only check")
def test_qlora_without_cuda_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA can run")
    path = write_recipe(tmp_path, DPO.replace("dropout = 0.0,", 'dropout = 0.0, quantize = "4bit",'))
    result = run(path)
    _assert_failed_cleanly(result, "dpo", 'lora.quantize = "4bit" (QLoRA) needs a CUDA GPU')


def test_launch_command_keeps_the_config_files_port_unless_one_is_set(tmp_path):
    from sakura_trl.launch import launch_command
    from sakura_trl.options import LauncherOptions

    def port(**options):
        cmd = launch_command(tmp_path / "spec.json", LauncherOptions(**options), tmp_path)
        return cmd[cmd.index("--main_process_port") + 1] if "--main_process_port" in cmd else None

    assert port(num_processes=2) == "0"  # no config file: any free port
    assert port(num_processes=2, config_file="ds.yaml") is None  # the file's main_process_port applies
    assert port(num_processes=2, config_file="ds.yaml", main_process_port=29511) == "29511"


def _command(tmp_path, **options) -> list[str]:
    from sakura_trl.launch import launch_command
    from sakura_trl.options import LauncherOptions

    return launch_command(tmp_path / "spec.json", LauncherOptions(**options), tmp_path)


def _flags(cmd: list[str]) -> dict[str, str | None]:
    """``--key value`` pairs of an accelerate command line (``None`` for a bare flag), up to ``-m``."""
    args = cmd[cmd.index("accelerate.commands.launch") + 1:cmd.index("sakura_trl.worker") - 1]
    out: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else None
            out[arg] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def test_launch_command_single_node_n_processes(tmp_path):
    flags = _flags(_command(tmp_path, num_processes=4))
    assert flags["--num_processes"] == "4" and flags["--num_machines"] == "1" and "--multi_gpu" in flags
    assert "--machine_rank" not in flags and "--main_process_ip" not in flags and flags["--main_process_port"] == "0"


def test_launch_command_leaves_a_config_files_machines_and_processes_alone(tmp_path):
    flags = _flags(_command(tmp_path, config_file="multi.yaml"))
    # the file holds num_machines, num_processes, machine_rank, the address: nothing overrides them
    assert flags == {"--config_file": str(tmp_path / "multi.yaml")}
    flags = _flags(_command(tmp_path, config_file="multi.yaml", num_processes=16, num_machines=2))
    assert flags["--num_processes"] == "16" and flags["--num_machines"] == "2" and "--machine_rank" not in flags


def test_launch_command_explicit_multi_node_flags(tmp_path):
    cmd = _command(tmp_path, num_processes=16, num_machines=2, machine_rank=0, main_process_ip="10.0.0.1")
    flags = _flags(cmd)
    assert flags["--num_processes"] == "16" and flags["--num_machines"] == "2" and flags["--machine_rank"] == "0"
    assert flags["--main_process_ip"] == "10.0.0.1" and flags["--main_process_port"] == "29500"  # fixed: all must know it
    from sakura_trl.launch import other_machines

    assert "--machine_rank K --main_process_ip 10.0.0.1" in other_machines(cmd)


def test_launch_command_under_srun_gives_each_node_its_rank(tmp_path):
    cmd = _command(tmp_path, num_processes=16, num_machines=2, main_process_ip="node001", main_process_port=29600,
                   srun=True)
    assert cmd[:8] == ["srun", "--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit", "1", "bash"]
    shell = cmd[-1]
    assert shell.startswith(f"exec {sys.executable} -m accelerate.commands.launch --machine_rank \"$SLURM_NODEID\" ")
    assert "--num_machines 2" in shell and "--main_process_ip node001" in shell and "--main_process_port 29600" in shell
    assert shell.endswith(f"-m sakura_trl.worker {tmp_path / 'spec.json'}")


@pytest.mark.parametrize(
    ("launcher", "message"),
    [
        ("{ num_machines = 0 }", "launcher.num_machines: input should be greater than or equal to 1"),
        ("{ num_machines = \"two\" }", "launcher.num_machines: input should be a valid integer"),
        ("{ num_machines = 2, machine_rank = -1, main_process_ip = \"h\", num_processes = 2 }",
         "launcher.machine_rank: input should be greater than or equal to 0"),
        ("{ num_machines = 2, machine_rank = 2, main_process_ip = \"h\", num_processes = 2 }",
         "launcher.machine_rank: must be below num_machines (2), got 2"),
        ("{ machine_rank = 0 }", "launcher.machine_rank: needs num_machines"),
        ("{ num_machines = 2, machine_rank = 0, num_processes = 2 }", "launcher.main_process_ip: num_machines = 2 needs"),
        ("{ num_machines = 2, main_process_ip = \"h\", num_processes = 2 }", "launcher.machine_rank: num_machines = 2 needs"),
        ("{ num_machines = 2, machine_rank = 0, main_process_ip = \"h\", num_processes = 3 }",
         "launcher.num_processes: is the total over all machines: a multiple of num_machines (2), got 3"),
        ("{ num_machines = 2, main_process_ip = \"h\", num_processes = 2, srun = true, machine_rank = 0 }",
         "launcher.machine_rank: set by srun"),
        ("{ num_machines = 1, srun = true }", "launcher.srun: srun starts one launcher per machine"),
        ("{ main_process_ip = \"a b\" }", "launcher.main_process_ip: must be a host name or an IP address (got 'a b')"),
        ("{ main_process_ip = \"\" }", "launcher.main_process_ip: must be a host name or an IP address (got '')"),
        ("{ main_process_port = 70000 }", "launcher.main_process_port: input should be less than or equal to 65535"),
    ],
)
def test_bad_launcher_settings_are_one_line_errors(tmp_path, launcher, message):
    path = write_recipe(tmp_path, DPO)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, [f"stages.dpo.launcher={launcher}"])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_good_multi_node_launcher_validates(tmp_path):
    path = write_recipe(tmp_path, DPO)
    srun = 'stages.dpo.launcher={ num_machines = 2, num_processes = 16, main_process_ip = "node001", srun = true }'
    load_recipe(path, [srun])
    (tmp_path / "multi.yaml").write_text("num_machines: 2\nmachine_rank: 0\nmain_process_ip: node001\n")
    load_recipe(path, ['stages.dpo.launcher={ config_file = "multi.yaml" }'])
    load_recipe(path, ['stages.dpo.launcher={ config_file = "multi.yaml", srun = true }'])
def test_launched_workers_do_not_import_from_the_working_directory(tmp_path):
    """``python -m`` puts the working directory first on sys.path: a ``json.py`` there (or any module named like
    one the launcher or worker imports) would run. The launcher and its workers start with a safe path."""
    from sakura_trl.launch import launch_command, launch_env
    from sakura_trl.options import LauncherOptions

    marker = tmp_path / "shadow-ran"
    (tmp_path / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit('shadow module ran')\n")
    launcher = LauncherOptions(num_processes=1, config_file="accel.yaml")
    (tmp_path / "accel.yaml").write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_processes: 1\n")
    spec = tmp_path / "no-such-spec.json"  # the worker gets as far as reading its spec, after its imports
    done = subprocess.run(launch_command(spec, launcher, tmp_path), env=launch_env(launcher), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert not marker.exists(), output
    assert "no-such-spec.json" in output  # the worker did start: it failed on the missing spec, not on json.py


def test_a_model_that_needs_its_own_code_is_one_line_and_asks_nothing(tmp_path, tiny_model_factory):
    """transformers asks on the terminal whether to run a model's own code; sakura never does and says so."""
    import json
    import shutil

    from conftest import run_sakura

    model = tmp_path / "custom"
    shutil.copytree(tiny_model_factory(seed=3), model)
    config = json.loads((model / "config.json").read_text())
    config.update(auto_map={"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"},
                  model_type="xmodel", architectures=["XForCausalLM"])
    (model / "config.json").write_text(json.dumps(config))
    (tmp_path / "data").mkdir()
    shutil.copy(REPO / "recipes" / "data" / "tiny_orca.jsonl", tmp_path / "data")
    (tmp_path / "r.toml").write_text(
        'name = "custom"\n[models]\nm = "./custom"\n\n[stages.data]\nkind = "dataset"\n'
        'sources = [{ adapter = "orca", path = "data/tiny_orca.jsonl", max_rows = 8 }]\n\n'
        '[stages.dpo]\nkind = "train"\nmodel = "m"\ndataset = "data"\nargs = { max_steps = 1 }\n')
    done = run_sakura("run", "r.toml", "-q", cwd=tmp_path, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0] == (f"stage dpo: cannot load the model of m ({model}): it needs Python code of its own (auto_map in "
                        "config.json), which sakura does not run")
    assert "[y/N]" not in done.stdout + done.stderr
