"""Runs a recipe's plan: cache look-ups, stage execution, artifacts, lifecycle hooks, run records.

A stage is served from the cache when an artifact with its fingerprint exists and every input it was made
from is still the same content: the manifest records each input's digest, so after ``--force merge``
rebuilds the merge, the stages reading it run again unless the new merge has the very same bytes.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sakura_core.errors import RecipeError, SakuraError, StageError, did_you_mean
from sakura_core.plan import Plan, build_plan, stage_libraries
from sakura_core.progress import Reporter
from sakura_core.recipe import Recipe
from sakura_core.stage import InputArtifact, SourceEnv, StageContext, StageInfo, StageOutcome
from sakura_core.store import Store


@dataclass
class RunResult:
    recipe: Recipe
    plan: Plan
    outcomes: list[StageOutcome] = field(default_factory=list)
    error: SakuraError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def outcome(self, name: str) -> StageOutcome:
        return next(o for o in self.outcomes if o.name == name)

    def as_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name,
            "recipe_path": str(self.recipe.path),
            "store": str(self.recipe.store_dir),
            "ok": self.ok,
            "error": str(self.error) if self.error else None,
            "stages": [o.as_json() for o in self.outcomes],
        }


def select_stages(plan: Plan, only: list[str], from_: list[str], force: list[str]) -> tuple[list[str], set[str]]:
    """Which stages this run looks at, and which of them must run even if cached."""
    file = plan.recipe.file
    for option, names in (("--only", only), ("--from", from_), ("--force", force)):
        for name in names:
            if name not in plan.stages:
                raise RecipeError(f"{option} {name}: no such stage{did_you_mean(name, plan.stages)}", file=file)
    forced = set(force)
    for name in from_:
        forced.update(plan.downstream(name))
    if only:
        selected = [s for s in plan.stages if s in only]
    else:
        selected = list(plan.stages)
    return selected, forced


class Engine:
    def __init__(self, recipe: Recipe, reporter: Reporter | None = None, labels: dict[str, str] | None = None):
        self.recipe = recipe
        self.reporter = reporter or Reporter()
        self.labels = labels or {}
        self.store = Store(recipe.store_dir)
        self.env = SourceEnv(recipe_dir=recipe.path.parent, store=self.store, reporter=self.reporter, plugins=recipe.plugins)
        self._materialized: dict[str, Path] = {}

    def plan(self) -> Plan:
        return build_plan(self.recipe, self.env)

    def run(
        self,
        only: list[str] = (),  # type: ignore[assignment]
        from_: list[str] = (),  # type: ignore[assignment]
        force: list[str] = (),  # type: ignore[assignment]
        plan: Plan | None = None,
    ) -> RunResult:
        plan = plan or self.plan()
        selected, forced = select_stages(plan, list(only), list(from_), list(force))
        result = RunResult(self.recipe, plan)
        try:
            for name in selected:
                outcome = self.execute(plan, name, forced=name in forced)
                result.outcomes.append(outcome)
                if outcome.status == "failed":
                    result.error = SakuraError(outcome.error or f"stage {name} failed")
                    result.error.exit_code = outcome.exit_code
                    break
            self.store.record_run(self.recipe.name, result.as_json())
        finally:
            self.store.locks.release()  # the run is over: gc may remove what it used
        return result

    def execute(self, plan: Plan, name: str, forced: bool = False) -> StageOutcome:
        """One stage: served from the store when its artifact is there and made from its inputs as they are
        now, else run; the lifecycle hooks around it.

        Other processes may share the store: the stage is built under its fingerprint's build lock, and a
        run that had to wait for it looks in the store again, so an artifact another run just built is used,
        not built twice. This run marks what it uses, so ``cache gc`` leaves it alone until the run ends.
        """
        hook = self.recipe.plugins.pm.hook
        node = plan.stages[name]
        info, artifact, why = self._look_up(plan, name, forced)
        if why is None:
            outcome = self._cached(name, info, node.fingerprint, artifact)
        else:
            label = self.label(name)
            with self.store.locks.building(
                node.fingerprint, on_wait=lambda: self.reporter.log(f"{label}: waiting for another run building it"),
            ):
                now = self.store.lookup(node.fingerprint)
                # built by another run while this one waited (for a forced stage: a build newer than the one
                # this run set out to replace)
                fresh = now is not None and (not forced or artifact is None or now.manifest != artifact.manifest)
                if fresh and self.why_run(plan, name, now, False) is None:
                    self.reporter.log(f"{label}: built by another run meanwhile: using it")
                    outcome = self._cached(name, info, node.fingerprint, now)
                else:
                    if why:
                        self.reporter.log(f"{name}: {why}: running it again")
                    outcome = self._run_stage(plan, name, info, hook)
        hook.sakura_after_stage(stage=info, outcome=outcome)
        return outcome

    def serve_cached(self, plan: Plan, name: str, forced: bool = False) -> StageOutcome | None:
        """The stage's outcome when the store serves it as it is now (its lifecycle hook run), else None: what
        ``execute`` does first, for an executor that runs the other stages elsewhere."""
        info, artifact, why = self._look_up(plan, name, forced)
        if why is not None:
            return None
        outcome = self._cached(name, info, plan.stages[name].fingerprint, artifact)
        self.recipe.plugins.pm.hook.sakura_after_stage(stage=info, outcome=outcome)
        return outcome

    def _look_up(self, plan: Plan, name: str, forced: bool) -> tuple[StageInfo, Any, str | None]:
        """The stage's info, its artifact in the store (None: not built) and why it must run (None: it need
        not). Marks the fingerprint used first, so a gc removing it finishes before the look-up."""
        node = plan.stages[name]
        info = StageInfo(name, node.stage.kind_name, node.plugin, node.fingerprint, node.stage.options)
        self.store.locks.use(node.fingerprint)
        artifact = self.store.lookup(node.fingerprint)
        return info, artifact, self.why_run(plan, name, artifact, forced)

    def why_run(self, plan: Plan, name: str, artifact: Any, forced: bool) -> str | None:
        """None when ``artifact`` serves the stage; else why it runs ("" when there is nothing to say: not
        built yet, or forced)."""
        if artifact is None or forced:
            return ""
        rebuilt = self.rebuilt_inputs(plan, name, artifact)
        if rebuilt:
            return f"{', '.join(rebuilt)} changed since this stage ran"
        return self.outdated(plan, name, artifact)

    def _cached(self, name: str, info: StageInfo, fingerprint: str, artifact: Any) -> StageOutcome:
        self.reporter.stage_finished(self.label(name), "cached", 0.0)
        return StageOutcome(name, info.kind, info.plugin, "cached", fingerprint, artifact.path,
                            metrics=artifact.manifest.get("metrics", {}))

    def label(self, name: str) -> str:
        """The stage's row in the live view (a family names a variant's own stages after the variant)."""
        return self.labels.get(name, name)

    # -- is a cached artifact still made from its inputs? -------------------------------------
    def input_digest(self, plan: Plan, ref: str) -> str | None:
        """What input ``ref`` holds now: a stage's artifact digest (None when not built), a model's fingerprint
        (a model source's fingerprint is already its content)."""
        if ref in plan.stages:
            artifact = self.store.lookup(plan.stages[ref].fingerprint)
            return artifact.digest if artifact is not None else None
        return plan.sources[ref].fingerprint

    def rebuilt_inputs(self, plan: Plan, name: str, artifact: Any) -> list[str]:
        """The inputs of stage ``name`` whose content differs from what ``artifact`` was made from.

        An input that is not built now contradicts nothing (``--only`` after ``cache gc``); one built but not
        recorded (an artifact from before digests) counts as changed.
        """
        recorded = artifact.manifest.get("inputs") or {}
        changed = []
        for ref in plan.stages[name].stage.depends_on:
            current = self.input_digest(plan, ref)
            entry = recorded.get(ref)
            if current is not None and not (isinstance(entry, dict) and entry.get("digest") == current):
                changed.append(ref)
        return changed

    def outdated(self, plan: Plan, name: str, artifact: Any) -> str | None:
        """Why the stage kind says its cached ``artifact`` no longer holds (its work outside the store changed)."""
        stage = plan.stages[name].stage
        return stage.kind.outdated(stage.options, artifact, self.env)

    def statuses(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """For ``sakura plan``: per stage, ``cached`` or ``will run``, and why (what changed since the stage's
        last build, an input rebuilt since, its work outside the store gone, an upstream stage that will run
        first, libraries at other versions than the artifact was built with)."""
        out: dict[str, dict[str, Any]] = {}
        earlier = EarlierBuilds(self.store, self.recipe.name)
        for name, node in plan.stages.items():
            artifact = self.store.lookup(node.fingerprint)
            notes: list[str] = []
            if artifact is None:
                previous = earlier.newest(name)
                if previous is not None:
                    notes.append(changes_since(previous.manifest, node))
                out[name] = {"status": "will run", "notes": notes}
                continue
            rebuilt = self.rebuilt_inputs(plan, name, artifact)
            if rebuilt:
                out[name] = {"status": "will run", "notes": [f"{', '.join(rebuilt)} changed since it ran"]}
                continue
            stale = self.outdated(plan, name, artifact)
            if stale:
                out[name] = {"status": "will run", "notes": [stale]}
                continue
            upstream = [ref for ref in node.stage.depends_on if out.get(ref, {}).get("status") == "will run"]
            if upstream:
                notes.append(f"unless {', '.join(upstream)} rebuilds to different bytes")
            drift = library_drift(artifact.manifest.get("libraries") or {}, stage_libraries(node.credits))
            if drift:
                notes.append("built with " + ", ".join(drift) + " (--force to rebuild)")
            out[name] = {"status": "cached", "notes": notes}
        return out

    # -- one stage -------------------------------------------------------------------------------
    def _run_stage(self, plan: Plan, name: str, info: StageInfo, hook: Any) -> StageOutcome:
        node = plan.stages[name]
        stage = node.stage
        started = time.monotonic()
        self.reporter.stage_started(self.label(name), stage.kind_name)
        tmp: Path | None = None
        try:
            inputs = {ref: self._input(plan, ref) for ref in stage.depends_on}
            hook.sakura_before_stage(stage=info)
            tmp = self.store.begin(node.fingerprint)
            ctx = StageContext(
                name=name,
                kind=stage.kind_name,
                options=stage.options,
                output_dir=tmp,
                work_dir=self.store.work_dir(node.fingerprint),
                inputs=inputs,
                recipe_path=self.recipe.path,
                recipe_text=self.recipe.text,
                plugins=self.recipe.plugins,
                reporter=self.reporter,
                fingerprint=node.fingerprint,
                lineage=_lineage(inputs),
                store=self.store,
                credits=[credit.lineage() for credit in node.credits],
                external=node.external,
                label=self.label(name),
                variant=self.recipe.variant,
            )
            metrics = stage.kind.run(ctx) or {}
            seconds = time.monotonic() - started
            manifest = self._manifest(plan, name, inputs, metrics, seconds, ctx.lineage)
            artifact = self.store.commit(tmp, node.fingerprint, manifest)
        except BaseException as exc:
            if tmp is not None:
                self.store.abort(tmp)
            seconds = time.monotonic() - started
            if not isinstance(exc, (Exception, SystemExit)):  # KeyboardInterrupt: stop now, nothing half-written
                self.reporter.stage_finished(self.label(name), "failed", seconds, "interrupted")
                raise
            message, exit_code = self._describe_failure(plan, name, exc)
            self.reporter.stage_finished(self.label(name), "failed", seconds)
            return StageOutcome(
                name, info.kind, info.plugin, "failed", node.fingerprint, None, seconds, error=message, exit_code=exit_code
            )
        self.reporter.stage_finished(self.label(name), "ran", seconds, _short_metrics(metrics))
        return StageOutcome(name, info.kind, info.plugin, "ran", node.fingerprint, artifact.path, seconds, metrics)

    def _describe_failure(self, plan: Plan, name: str, exc: BaseException) -> tuple[str, int]:
        """One line: a user's mistake as the plugin worded it; a full disk with what the stage needs (no log:
        there is no room for one); anything else (a bug in sakura or a plugin, a plugin calling sys.exit)
        with the plugin whose code raised it and the log holding the traceback."""
        from sakura_core import diskfull

        if isinstance(exc, SakuraError):
            return f"stage {name}: {exc}", exc.exit_code
        full = diskfull.no_space(exc)
        if full is not None:
            return diskfull.describe(name, full, self.store.root, self._disk_estimate(plan, name)), 1
        log = self.store.log_path(name)
        log.write_text("".join(traceback.format_exception(exc)))
        who = self.recipe.plugins.blame(exc)
        where = f" in plugin {who.label}" if who else ""
        if isinstance(exc, SystemExit):
            return f"stage {name} failed{where}: it called sys.exit({exc.code!r}) (traceback in {log})", 1
        # a library's message may run to several lines (torch's unpickling advice): the first says what
        # happened, the log has the rest
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        more = " ..." if len([line for line in str(exc).splitlines() if line.strip()]) > 1 else ""
        return f"stage {name} failed{where}: {type(exc).__name__}: {first}{more} (traceback in {log})", 1

    def _disk_estimate(self, plan: Plan, name: str) -> int | None:
        """What the plan estimates the stage writes (None: no estimate; estimating never fails)."""
        from sakura_core import estimate as est

        found = est.estimate_plan(plan, self.env).stages.get(name)
        return found.disk_bytes if found is not None else None

    def _input(self, plan: Plan, ref: str) -> InputArtifact:
        if ref in plan.stages:
            node = plan.stages[ref]
            self.store.locks.use(node.fingerprint)  # an input built by an earlier run (--only): gc keeps it now
            artifact = self.store.lookup(node.fingerprint)
            if artifact is None:
                raise StageError(f"needs the output of stage {ref}, which is not built yet (run without --only)")
            return InputArtifact(ref, artifact.path, node.fingerprint, node.stage.kind_name, artifact.manifest,
                                 artifact.digest or "")
        source = plan.sources[ref]
        if ref not in self._materialized:
            model = source.model
            self._materialized[ref] = model.source.materialize(model.options, self.env, source.fingerprint)
        manifest = {**source.lineage, "fingerprint": source.fingerprint}
        return InputArtifact(ref, self._materialized[ref], source.fingerprint, "model", manifest, source.fingerprint)

    def _manifest(
        self, plan: Plan, name: str, inputs: dict[str, InputArtifact], metrics: dict[str, Any], seconds: float,
        lineage: list[dict[str, Any]],
    ) -> dict[str, Any]:
        from sakura_core import __version__

        node = plan.stages[name]
        kind_plugin = node.credits[0].plugin
        return {
            "sakura_version": __version__,
            "fingerprint": node.fingerprint,
            "stage": name,
            "kind": node.stage.kind_name,
            "produces": node.stage.kind.produces,
            "plugin": {"name": kind_plugin.name, "version": kind_plugin.version},
            "plugins": [credit.lineage() for credit in node.credits],
            "libraries": stage_libraries(node.credits),
            "options": node.stage.options.model_dump(mode="json"),
            "inputs": {ref: {"fingerprint": inp.fingerprint, "digest": inp.digest} for ref, inp in inputs.items()},
            "external": node.external,
            "metrics": metrics,
            "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recipe": {"name": self.recipe.name, "file": self.recipe.file, "text": self.recipe.text},
            "lineage": lineage,
        }


def _lineage(inputs: dict[str, InputArtifact]) -> list[dict[str, Any]]:
    """Every ancestor (model sources and stages), oldest first, each once."""
    seen: dict[str, dict[str, Any]] = {}
    for inp in inputs.values():
        for entry in inp.manifest.get("lineage", []):
            seen.setdefault(entry["fingerprint"], entry)
        if inp.kind == "model":
            seen.setdefault(inp.fingerprint, inp.manifest)
        else:
            m = inp.manifest
            seen.setdefault(inp.fingerprint, lineage_entry(inp.name, m))
    return list(seen.values())


def library_drift(built: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``["transformers 5.23.0 (now 5.24.0)"]`` for each library whose version changed since a build."""
    return [f"{dist} {built[dist]} (now {version})" for dist, version in now.items()
            if dist in built and built[dist] != version]


def lineage_entry(name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """A stage's entry in the lineage of what descends from it, from its artifact's manifest."""
    return {
        "name": name,
        "kind": manifest.get("kind"),
        "produces": manifest.get("produces"),
        "plugin": manifest.get("plugin"),
        "plugins": manifest.get("plugins") or [],
        "libraries": manifest.get("libraries") or {},
        "options": manifest.get("options"),
        # what it read (by fingerprint: the lineage is a tree) and what outside the store (Hub dataset commits)
        "inputs": {ref: entry.get("fingerprint") for ref, entry in (manifest.get("inputs") or {}).items()},
        "external": manifest.get("external") or {},
        "metrics": manifest.get("metrics"),
        "fingerprint": manifest.get("fingerprint"),
        "digest": manifest.get("digest"),
    }


class EarlierBuilds:
    """The artifacts a recipe's stages made before (under other fingerprints), read once from the store."""

    def __init__(self, store: Store, recipe_name: str):
        self.store = store
        self.recipe_name = recipe_name
        self._by_stage: dict[str, list[Any]] | None = None

    def newest(self, stage: str) -> Any:
        if self._by_stage is None:
            self._by_stage = {}
            for artifact in self.store.list():
                manifest = artifact.manifest
                if (manifest.get("recipe") or {}).get("name") == self.recipe_name and manifest.get("stage"):
                    self._by_stage.setdefault(manifest["stage"], []).append(artifact)
        return max(self._by_stage.get(stage, []), key=lambda a: a.manifest.get("created", ""), default=None)


def changes_since(manifest: dict[str, Any], node: Any, shown: int = 3) -> str:
    """What differs between a stage as planned and its earlier build (``manifest``), in one line: its options,
    what it resolved outside the store (a Hub commit that moved), the fingerprints of its inputs, its plugins."""
    changes = _differences("", manifest.get("options"), node.stage.options.model_dump(mode="json"))
    if "external" in manifest:  # recorded since external inputs were: older builds cannot tell
        changes += _differences("", manifest["external"], node.external)
    recorded = manifest.get("inputs") or {}
    changes += [f"{ref} changed" for ref, fingerprint in node.inputs.items()
                if (recorded.get(ref) or {}).get("fingerprint") != fingerprint]
    before = {p.get("name"): p.get("code") for p in manifest.get("plugins") or []}
    changes += [f"plugin {credit.plugin.name} changed" for credit in node.credits
                if credit.plugin.name in before and before[credit.plugin.name] != credit.plugin.code_hash]
    if not changes:
        return f"not built with this fingerprint (last built {manifest.get('created', '?')})"
    more = f" and {len(changes) - shown} more" if len(changes) > shown else ""
    return f"since its last build ({manifest.get('created', '?')}): " + "; ".join(changes[:shown]) + more


def _differences(prefix: str, old: Any, new: Any) -> list[str]:
    """``["sources[0].revision 1a2b3c4d5e -> 9f8e7d6c5b"]``: the leaves that differ between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in list(dict.fromkeys([*old, *new])):
            found += _differences(f"{prefix}.{key}" if prefix else str(key), old.get(key), new.get(key))
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(f"{prefix}[{i}]", a, b)]
    return [] if old == new else [f"{prefix} {_brief(old)} -> {_brief(new)}"]


def _brief(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, str) and len(value) == 40 and all(c in "0123456789abcdef" for c in value):
        return value[:10]  # a commit
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _short_metrics(metrics: dict[str, Any]) -> str:
    shown = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)][:3]
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown)
