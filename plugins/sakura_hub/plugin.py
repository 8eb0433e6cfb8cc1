"""Built-in plugin sakura_hub: the ``hub`` model source, the ``hub`` publisher and ``sakura push``."""

from sakura_core import hookimpl


@hookimpl
def sakura_register_model_sources(register):
    from sakura_hub.source import HubSource

    register("hub", HubSource())


@hookimpl
def sakura_register_publishers(register):
    from sakura_hub.publisher import HubPublisher

    register("hub", HubPublisher())


@hookimpl
def sakura_register_commands(cli):
    from sakura_hub.push import push

    cli.add_command(push)
