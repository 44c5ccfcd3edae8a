"""`mf config`: mf's own settings (registry, require_signed, signing_key)."""

from __future__ import annotations

import click


@click.group("config")
def config_group() -> None:
    """Show or change mf's settings; an environment variable overrides each."""


@config_group.command("show")
def show_command() -> None:
    """Every setting, its value and where the value comes from."""
    import os

    from .. import config

    stored = config.load()
    for name, (env, what) in config.SETTINGS.items():
        value, source = (os.environ[env], env) if os.environ.get(env) else (stored.get(name), "config")
        click.echo(f"{name:15} {value if value not in (None, '') else '-':40} {source if value else ''}  # {what}")


@config_group.command("set")
@click.argument("name")
@click.argument("value")
def set_command(name: str, value: str) -> None:
    """Set NAME to VALUE in the config file."""
    from .. import config

    click.echo(f"{name} = {value}  ({config.set_value(name, value)})")


@config_group.command("unset")
@click.argument("name")
def unset_command(name: str) -> None:
    """Remove NAME from the config file."""
    from .. import config

    config.set_value(name, None)
    click.echo(f"{name} unset")
