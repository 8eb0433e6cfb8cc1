"""Built-in plugin sakura_trl: the ``train`` stage kind and the ``dpo`` / ``sft`` trainers (trl + peft)."""

from sakura_core import hookimpl


@hookimpl
def sakura_declare_registries(declare):
    from sakura_trl.hooks import TRAINERS

    declare(TRAINERS)


@hookimpl
def sakura_register_stage_kinds(register):
    from sakura_trl.stage import TrainStage

    register("train", TrainStage())


@hookimpl
def sakura_register_trainers(register):
    from sakura_trl.trainers import DPO, SFT

    register("dpo", DPO())
    register("sft", SFT())
