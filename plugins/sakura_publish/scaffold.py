"""What ``sakura new-plugin NAME --kind publisher`` writes: a publisher package (``string.Template`` texts)."""

from sakura_core.scaffold_templates import ScaffoldKind

PUBLISHER_MODULE = '''\
"""``$registered``: a publisher for sakura's ``publish`` stages.

It writes the published files into one ``.tar.gz`` archive: the model (weights, config, tokenizer, chat
template), its model card, ``sakura-lineage.json`` and the recipe. The publish stage chooses the files and
writes the card and the lineage; a publisher only puts ``bundle.files`` somewhere and says where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field

from sakura_core import OptionError
from sakura_core.options import Options
from sakura_publish import Publisher


class ${camel}Options(Options):
    """The publisher's keys, written flat in the publish stage's table (checked when the recipe loads)."""

    archive: str = Field(description="the .tar.gz file to write, relative to the recipe's directory")


class ${camel}Publisher(Publisher):
    """The model, its card, lineage and recipe in one .tar.gz archive."""

    Options = ${camel}Options

    def target(self, options: ${camel}Options, recipe_dir: Path) -> Path:
        path = Path(options.archive).expanduser()
        return Path(os.path.abspath(path if path.is_absolute() else Path(recipe_dir) / path))

    def check(self, options: ${camel}Options, env: Any) -> None:
        if not options.archive.endswith((".tar.gz", ".tgz")):
            raise OptionError("archive", f"must name a .tar.gz or .tgz file (got {options.archive!r})")

    def external_inputs(self, options: ${camel}Options, recipe_dir: Path) -> dict[str, Any]:
        return {"archive": str(self.target(options, recipe_dir))}  # another place is another publication

    def load_reference(self, options: ${camel}Options, recipe_dir: Path) -> str:
        return f"the folder {Path(options.archive).name} is unpacked into"  # shown in the model card

    def run(self, bundle: Any, options: ${camel}Options, env: Any) -> dict[str, Any]:
        import tarfile

        target = self.target(options, env.recipe_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with tarfile.open(partial, "w:gz") as tar:
                for name, path in bundle.files.items():
                    tar.add(path, arcname=name)
            os.replace(partial, target)  # complete or absent, never half-written
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        env.log(f"published {len(bundle.files)} files to {target}")
        return {"path": str(target)}
'''

PUBLISHER_PLUGIN = '''

@hookimpl
def sakura_register_publishers(register):
    from $module.publisher import ${camel}Publisher

    register("$registered", ${camel}Publisher())
'''

PUBLISHER_TEST = '''

RECIPE = """
name = "tiny-published"

[models]
base = "%s"

[stages.ship]
kind = "publish"
publisher = "$registered"
model = "base"
archive = "dist/model.tar.gz"
""" % TINY


def test_publish_stage_writes_the_model_its_card_and_lineage(tmp_path):
    import tarfile

    result = run_recipe(tmp_path, RECIPE)
    assert result.ok, result.error
    archive = tmp_path / "dist" / "model.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        card = tar.extractfile("README.md").read().decode()
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "sakura-lineage.json",
            "sakura-recipe.toml"} <= names
    assert "tiny-published" in card
    assert result.outcome("ship").metrics["path"] == str(archive)
    assert [p.name for p in archive.parent.iterdir()] == ["model.tar.gz"]  # no partial file left


def test_options_are_checked_before_any_work(tmp_path):
    for change, expected in {
        ("model.tar.gz", "model.zip"): "stages.ship.archive: must name a .tar.gz or .tgz file",
        ("archive =", "archiv ="): "stages.ship.archiv: unknown option for publisher '$registered' (did you mean archive?)",
    }.items():
        with pytest.raises(RecipeError) as info:
            run_recipe(tmp_path, RECIPE.replace(*change))
        assert expected in str(info.value)
    assert not (tmp_path / ".sakura").exists()
'''

PUBLISHER_USAGE = '''\
[stages.ship]
kind = "publish"
publisher = "$registered"
model = "dpo"                      # a train or merge stage, or a model of [models]
archive = "dist/model.tar.gz"      # relative to the recipe'''

PUBLISHER_ABOUT = '''\
It adds the publisher `$registered`, which writes a published model into one `.tar.gz` archive: its
weights, config and tokenizer, the model card, `sakura-lineage.json` and the recipe. A publisher is **an
options model and `run(bundle, options, env)`**; the publish stage chooses the files and writes the
card and the lineage.'''

PUBLISHER_TESTS = '''\
The tests publish a tiny generated model through sakura's engine and look inside the archive, and check
that a bad or misspelt option fails before any work.'''


SCAFFOLD = ScaffoldKind(
    title="A publisher",
    description="A publisher for sakura: a .tar.gz archive of the model",
    implementation="publisher.py",
    module=PUBLISHER_MODULE,
    plugin=PUBLISHER_PLUGIN,
    test=PUBLISHER_TEST,
    usage=PUBLISHER_USAGE,
    about=PUBLISHER_ABOUT,
    tests=PUBLISHER_TESTS,
    tiny=True,
)
