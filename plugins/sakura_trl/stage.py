"""The ``train`` stage kind: checks a recipe's train table without importing torch or trl."""

from __future__ import annotations

from typing import Any

from sakura_core.errors import OptionError, PluginError
from sakura_core.stage import CheckEnv, StageContext, StageKind

from sakura_trl.options import TrainOptions


class TrainStage(StageKind):
    Options = TrainOptions
    produces = "model"

    def references(self, options: TrainOptions) -> dict[str, str]:
        return {"model": options.model, "dataset": options.dataset}

    def check(self, options: TrainOptions, env: CheckEnv) -> None:
        try:
            trainer = env.plugins.trainers.get(options.trainer)
        except PluginError as exc:
            raise OptionError("trainer", str(exc)) from None
        trainer.check_args(options.args)
        if options.launcher and options.launcher.config_file:
            path = env.recipe_dir / options.launcher.config_file
            if not path.is_file():
                raise OptionError("launcher.config_file", f"file not found: {path}")

    def external_inputs(self, options: TrainOptions, env: CheckEnv) -> dict[str, Any]:
        if options.launcher and options.launcher.config_file:
            from sakura_core.hashing import hash_path

            return {"launcher_config": hash_path(env.recipe_dir / options.launcher.config_file)}
        return {}

    def implementation_versions(self, options: TrainOptions, plugins: Any) -> dict[str, str]:
        entry = plugins.trainers.entry(options.trainer)
        return {f"trainer:{options.trainer}": f"{entry.plugin.name}@{entry.plugin.version}/{entry.implementation.version}"}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from sakura_trl.run import run_stage

        return run_stage(ctx)
