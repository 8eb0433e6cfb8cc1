"""The engine: dependency order, caching by fingerprint, selective re-runs, failures, lifecycle hooks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_sakura

from sakura_core import hookimpl
from sakura_core.engine import Engine
from sakura_core.errors import RecipeError
from sakura_core.plugins import Plugins
from sakura_core.recipe import load_recipe
from sakura_core.store import MANIFEST

PIPELINE = """
name = "chain"
plugins = ["echo_plugin.py"]
[models]
base = "tiny:llama?layers=1&hidden=16&intermediate=32&heads=2&kv_heads=1&vocab=300"
[stages.a]
kind = "echo"
reads = ["base"]
[stages.b]
kind = "echo"
reads = ["a"]
text = "bee"
[stages.c]
kind = "echo"
reads = ["b", "a"]
[stages.side]
kind = "echo"
text = "independent"
"""


@pytest.fixture
def counter(tmp_path, monkeypatch):
    path = tmp_path / "ran.txt"
    monkeypatch.setenv("SAKURA_TEST_COUNTER", str(path))

    def ran() -> list[str]:
        names = path.read_text().split() if path.exists() else []
        path.unlink(missing_ok=True)
        return names

    return ran


def run(path, overrides=(), plugins=None, **kwargs):
    recipe = load_recipe(path, list(overrides), plugins=plugins)
    return Engine(recipe).run(**kwargs)


def statuses(result) -> dict[str, str]:
    return {o.name: o.status for o in result.outcomes}


def test_first_run_runs_all_in_dependency_order_then_nothing(write_recipe, counter):
    path = write_recipe(PIPELINE)
    first = run(path)
    assert first.ok and counter() == ["a", "b", "c", "side"]
    second = run(path)
    assert counter() == []
    assert statuses(second) == {"a": "cached", "b": "cached", "c": "cached", "side": "cached"}
    assert [o.fingerprint for o in first.outcomes] == [o.fingerprint for o in second.outcomes]


def test_changed_option_reruns_only_that_stage_and_downstream(write_recipe, counter):
    path = write_recipe(PIPELINE)
    run(path)
    counter()
    result = run(path, ["stages.b.text=\"wasp\""])
    assert counter() == ["b", "c"]
    assert statuses(result) == {"a": "cached", "b": "ran", "c": "ran", "side": "cached"}
    # and the old artifacts are still there: switching back costs nothing
    run(path)
    assert counter() == []


def test_changed_model_source_reruns_its_readers(write_recipe, counter):
    path = write_recipe(PIPELINE)
    run(path)
    counter()
    run(path, ["models.base=\"tiny:llama?layers=1&hidden=16&intermediate=32&heads=2&kv_heads=1&vocab=300&seed=5\""])
    assert counter() == ["a", "b", "c"]


def test_local_model_is_fingerprinted_by_content(write_recipe, counter, tiny_model_factory, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_factory(seed=1, layers=1), model)
    path = write_recipe(PIPELINE.replace('base = "tiny:llama?layers=1&hidden=16&intermediate=32&heads=2&kv_heads=1&vocab=300"', 'base = "./model"'))
    run(path)
    counter()
    os.utime(model / "config.json")  # touching changes nothing
    run(path)
    assert counter() == []
    config = json.loads((model / "config.json").read_text())
    config["rms_norm_eps"] = 1e-6
    (model / "config.json").write_text(json.dumps(config))
    run(path)
    assert counter() == ["a", "b", "c"]


def test_only_from_and_force(write_recipe, counter):
    path = write_recipe(PIPELINE)
    with_only_b = run(path, only=["b"])
    assert not with_only_b.ok and "needs the output of stage a, which is not built yet" in str(with_only_b.error)
    counter()
    run(path)
    counter()
    assert statuses(run(path, only=["b"])) == {"b": "cached"}
    assert statuses(run(path, force=["b"])) == {"a": "cached", "b": "ran", "c": "cached", "side": "cached"}
    assert counter() == ["b"]
    run(path, from_=["b"])
    assert counter() == ["b", "c"]
    with pytest.raises(RecipeError, match=r"--from bb: no such stage \(did you mean b\?\)"):
        run(path, from_=["bb"])


def test_a_rebuilt_input_reruns_its_readers_unless_its_bytes_are_the_same(write_recipe, counter, monkeypatch, sakura):
    """--force b rebuilds b under the same fingerprint: c (which reads b) runs again only when b's content changed."""
    path = write_recipe(PIPELINE)
    run(path)
    counter()
    assert statuses(run(path, force=["b"])) == {"a": "cached", "b": "ran", "c": "cached", "side": "cached"}
    assert counter() == ["b"]  # the same bytes: c was made from exactly this b
    monkeypatch.setenv("SAKURA_TEST_SALT", "another build")
    assert statuses(run(path, force=["b"], only=["b"])) == {"b": "ran"}
    plan = {s["stage"]: s for s in json.loads(sakura("plan", path, "--json", check=0).stdout)["stages"]}
    assert (plan["c"]["status"], plan["c"]["notes"]) == ("will run", ["b changed since it ran"])
    assert plan["a"]["status"] == "cached"
    assert statuses(run(path)) == {"a": "cached", "b": "cached", "c": "ran", "side": "cached"}
    manifest = json.loads((run(path).outcome("c").artifact / MANIFEST).read_text())
    b_manifest = json.loads((run(path).outcome("b").artifact / MANIFEST).read_text())
    assert manifest["inputs"]["b"] == {"fingerprint": b_manifest["fingerprint"], "digest": b_manifest["digest"]}


def test_library_versions_are_recorded_and_plan_shows_a_change(write_recipe, sakura):
    """Not fingerprinted (an upgrade must not silently throw away a training run): recorded, and shown."""
    import pluggy

    path = write_recipe(PIPELINE)
    artifact = run(path).outcome("a").artifact
    manifest = json.loads((artifact / MANIFEST).read_text())
    assert manifest["libraries"] == {"pluggy": pluggy.__version__}
    manifest["libraries"]["pluggy"] = "0.0.1"
    (artifact / MANIFEST).write_text(json.dumps(manifest))
    plan = {s["stage"]: s for s in json.loads(sakura("plan", path, "--json", check=0).stdout)["stages"]}
    assert plan["a"]["status"] == "cached"
    assert plan["a"]["notes"] == [f"built with pluggy 0.0.1 (now {pluggy.__version__}) (--force to rebuild)"]
    assert f"a: built with pluggy 0.0.1 (now {pluggy.__version__})" in sakura("plan", path, check=0).stdout


def test_failed_stage_keeps_earlier_artifacts_and_leaves_nothing_half_written(write_recipe, counter):
    path = write_recipe(PIPELINE)
    result = run(path, ["stages.b.fail=true"])
    assert not result.ok
    assert str(result.error) == "stage b: refusing on purpose"
    assert result.error.exit_code == 1
    assert statuses(result) == {"a": "ran", "b": "failed"}
    store = path.parent / ".sakura"
    assert not list((store / "tmp").iterdir())  # the half-written output was removed
    assert not list(store.rglob("partial.txt"))
    counter()
    fixed = run(path)
    assert counter() == ["b", "c", "side"]  # a was kept
    assert fixed.ok


def test_unexpected_exception_points_to_a_traceback_file(write_recipe, sakura, monkeypatch):
    path = write_recipe(PIPELINE)
    monkeypatch.setenv("SAKURA_TEST_COUNTER", "/nonexistent-dir/x")  # the stage's own write fails
    result = sakura("run", path, "--only", "side", check=1)
    line = result.stderr.strip().splitlines()[-1]
    plugin_file = path.parent / "echo_plugin.py"
    assert line.startswith(f"stage side failed in plugin echo_plugin (file {plugin_file}): FileNotFoundError:")
    assert "(traceback in " in line
    log = Path(line.split("(traceback in ")[1].rstrip(")"))
    assert "Traceback" in log.read_text()
    assert "Traceback" not in result.stderr


def test_a_library_error_of_several_lines_is_one_line(tmp_path):
    """torch's unpickling refusal and transformers' custom-code errors run to several lines: the first is kept,
    the rest is in the log."""
    (tmp_path / "kind.py").write_text(
        "from sakura_core import hookimpl\nfrom sakura_core.stage import StageKind\n\n\n"
        "class Wordy(StageKind):\n    def run(self, ctx):\n"
        "        raise RuntimeError('Weights only load failed.\\nPlease file an issue.\\nCheck the docs.')\n\n\n"
        "@hookimpl\ndef sakura_register_stage_kinds(register):\n    register('wordy', Wordy())\n")
    (tmp_path / "r.toml").write_text('name = "x"\nplugins = ["kind.py"]\n\n[stages.w]\nkind = "wordy"\n')
    done = run_sakura("run", "r.toml", "-q", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "RuntimeError: Weights only load failed. ... (traceback in " in lines[0]
    log = Path(lines[0].split("(traceback in ")[1].rstrip(")"))
    assert "Check the docs." in log.read_text()


def test_lifecycle_hooks_see_every_stage(write_recipe):
    seen = []

    class Tracer:
        @hookimpl
        def sakura_before_stage(self, stage):
            seen.append(("before", stage.name, stage.fingerprint))

        @hookimpl
        def sakura_after_stage(self, stage, outcome):
            seen.append(("after", stage.name, outcome.status))

    plugins = Plugins(entry_points=False)
    plugins.register_object(Tracer(), "tracer")
    path = write_recipe(PIPELINE)
    run(path, plugins=plugins, only=["side"])
    assert seen[0][:2] == ("before", "side") and len(seen[0][2]) == 32
    assert seen[1] == ("after", "side", "ran")
    seen.clear()
    run(path, plugins=plugins, only=["side"])
    assert seen == [("after", "side", "cached")]


def test_manifest_records_lineage(write_recipe):
    path = write_recipe(PIPELINE)
    result = run(path)
    manifest = json.loads((result.outcome("c").artifact / MANIFEST).read_text())
    assert manifest["stage"] == "c" and manifest["kind"] == "echo"
    assert [e["name"] for e in manifest["lineage"]] == ["base", "a", "b"]
    assert manifest["lineage"][0]["source"] == "tiny"
    assert manifest["recipe"]["text"] == path.read_text()
    assert manifest["recipe"]["name"] == "chain" == result.recipe.name
    plugin = manifest["plugins"][0]
    assert (plugin["name"], plugin["distribution"], plugin["provides"]) == ("echo_plugin", None, ["stage kind echo"])
    assert plugin["origin"] == f"file {path.parent / 'echo_plugin.py'}" and len(plugin["code"]) == 32
    assert manifest["lineage"][2]["plugins"] == [plugin]  # b's entry in c's lineage names who made b


def test_run_json_and_plan(write_recipe, sakura):
    path = write_recipe(PIPELINE)
    plan = json.loads(sakura("plan", path, "--json", check=0).stdout)
    assert [s["status"] for s in plan["stages"]] == ["will run"] * 4
    out = json.loads(sakura("run", path, "--json", check=0).stdout)
    assert out["ok"] is True
    stage = out["stages"][0]
    assert set(stage) == {"name", "kind", "plugin", "status", "fingerprint", "artifact", "seconds", "metrics"}
    assert stage["plugin"] == "echo_plugin" and stage["metrics"] == {"lines": 2}
    plan = json.loads(sakura("plan", path, "--json", check=0).stdout)
    assert [s["status"] for s in plan["stages"]] == ["cached"] * 4
    again = json.loads(sakura("run", path, "--json", check=0).stdout)
    assert [s["status"] for s in again["stages"]] == ["cached"] * 4


def test_cache_ls_and_gc(write_recipe, sakura):
    path = write_recipe(PIPELINE)
    sakura("run", path, "-q", check=0)
    listing = sakura("cache", "ls", path, check=0).stdout.splitlines()
    assert len(listing) == 5  # four stages and the generated tiny model
    sakura("run", path, "-q", "-s", 'stages.side.text="other"', check=0)
    assert len(sakura("cache", "ls", path, check=0).stdout.splitlines()) == 6
    stale = path.parent / ".sakura" / "tmp" / "deadbeef.999999999.0"
    stale.mkdir(parents=True)
    assert "removed 2 entries" in sakura("cache", "gc", path, check=0).stdout  # the old 'side' and the stale tmp
    assert len(sakura("cache", "ls", path, check=0).stdout.splitlines()) == 5
    assert not stale.exists()


def test_gc_keeps_side_artifacts_while_what_they_were_computed_from_is_kept(tmp_path):
    from sakura_core.store import Store

    store = Store(tmp_path)
    for fingerprint, manifest in {
        "model": {}, "data": {}, "other": {},
        "ref-1": {"kept_with": ["model", "data"]},
        "ref-2": {"kept_with": ["model", "other"]},
    }.items():
        store.commit(store.begin(fingerprint), fingerprint, manifest)
    store.gc(keep={"model", "data"})
    assert sorted(a.fingerprint for a in store.list()) == ["data", "model", "ref-1"]


def test_the_recipe_recorded_is_the_recipe_as_it_ran(write_recipe):
    """With overrides, manifests (and so published cards and recipe files) hold the data that ran, as TOML."""
    import tomllib

    from sakura_core.recipe import apply_overrides

    path = write_recipe(PIPELINE)
    plain = run(path)
    manifest = json.loads((plain.outcome("b").artifact / MANIFEST).read_text())
    assert manifest["recipe"]["text"] == path.read_text()  # nothing changed it: the file, comments and all
    changed = run(path, overrides=["stages.b.text=\"bzz\"", "stages.b.repeat=2"])
    manifest = json.loads((changed.outcome("b").artifact / MANIFEST).read_text())
    text = manifest["recipe"]["text"]
    assert text.startswith("# the recipe as it ran\n# applied: stages.b.text=\"bzz\"\n# applied: stages.b.repeat=2\n")
    expected = apply_overrides(tomllib.loads(path.read_text()), ["stages.b.text=\"bzz\"", "stages.b.repeat=2"], "r.toml")
    assert tomllib.loads(text) == expected


def test_a_stage_whose_work_outside_the_store_is_gone_runs_again(write_recipe, counter, tmp_path):
    mirror = tmp_path / "mirror.txt"
    path = write_recipe(f'plugins = ["echo_plugin.py"]\n[stages.a]\nkind = "echo"\nmirror = "{mirror}"\n'
                        '[stages.b]\nkind = "echo"\nreads = ["a"]\n')
    assert statuses(run(path)) == {"a": "ran", "b": "ran"} and counter() == ["a", "b"]
    assert statuses(run(path)) == {"a": "cached", "b": "cached"} and counter() == []

    mirror.unlink()
    engine = Engine(load_recipe(path))
    plan = engine.statuses(engine.plan())
    assert plan["a"] == {"status": "will run", "notes": ["mirror.txt is gone"]}
    assert plan["b"]["status"] == "cached" and plan["b"]["notes"] == ["unless a rebuilds to different bytes"]
    assert statuses(run(path)) == {"a": "ran", "b": "cached"} and counter() == ["a"]  # the same bytes again
    assert mirror.exists()


def test_plan_says_what_changed_since_a_stage_was_last_built(write_recipe):
    path = write_recipe(PIPELINE)
    assert run(path).ok
    engine = Engine(load_recipe(path, ["stages.b.text=bzz"]))
    plan = engine.statuses(engine.plan())
    assert plan["a"] == {"status": "cached", "notes": []}
    (note,) = plan["b"]["notes"]
    assert note.startswith("since its last build (") and note.endswith("): text bee -> bzz")
    assert plan["c"]["notes"][0].endswith("): b changed")


def test_publication_records_survive_writers_at_once(tmp_path):
    """Every writer replaces its destination's record whole: readers never see a torn or lost record."""
    import multiprocessing

    from sakura_core.store import Store

    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.starmap(_publish_many, [(tmp_path, writer) for writer in range(4)])
    records = Store(tmp_path).publications("f" * 64)
    assert sorted(r["destination"] for r in records) == sorted(["hub:shared@main", *(f"hub:own{w}@main" for w in range(4))])
    assert {r["n"] for r in records if r["destination"] != "hub:shared@main"} == {49}
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]


def _publish_many(root: Path, writer: int) -> None:
    from sakura_core.store import Store

    store = Store(root)
    for n in range(50):
        store.record_publication("f" * 64, "hub:shared@main", {"writer": writer, "n": n})
        store.record_publication("f" * 64, f"hub:own{writer}@main", {"writer": writer, "n": n})
        assert all("destination" in r for r in store.publications("f" * 64))
