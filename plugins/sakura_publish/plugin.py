"""Built-in plugin sakura_publish: the ``publish`` stage kind and the ``local`` publisher."""

from sakura_core import hookimpl


@hookimpl
def sakura_declare_registries(declare):
    from sakura_publish.hooks import PUBLISHERS

    declare(PUBLISHERS)


@hookimpl
def sakura_register_stage_kinds(register):
    from sakura_publish.stage import PublishStage

    register("publish", PublishStage())


@hookimpl
def sakura_register_publishers(register):
    from sakura_publish.local import LocalPublisher

    register("local", LocalPublisher())
