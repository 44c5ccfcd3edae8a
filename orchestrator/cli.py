"""`mf`: the ModelForge command line. Errors become one line here, and only here."""

from __future__ import annotations

import os
import sys
import traceback

import click

from providers.errors import ModelForgeError

from .commands.config_cmd import config_group
from .commands.doctor_cmd import doctor_command
from .commands.export_cmd import export_command
from .commands.images_cmd import images_group
from .commands.jobs_cmd import jobs_group
from .commands.providers_cmd import providers_command
from .commands.run_cmd import run_command
from .commands.runs_cmd import runs_group
from .commands.serve_cmd import chat_command, serve_command
from .commands.ui_cmd import ui_command

DEBUG_ENV = "MF_DEBUG"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelforge")
def cli() -> None:
    """Load, validate and fine-tune language models, each provider in its own container image."""


cli.add_command(run_command)
cli.add_command(providers_command)
cli.add_command(images_group)
cli.add_command(doctor_command)
cli.add_command(config_group)
cli.add_command(export_command)
cli.add_command(jobs_group)
cli.add_command(serve_command)
cli.add_command(chat_command)
cli.add_command(runs_group)
cli.add_command(ui_command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except ModelForgeError as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        from .render import JsonRenderer, RichRenderer

        as_json = "--json" in sys.argv[1:]
        if not (as_json and exc.reported):
            (JsonRenderer() if as_json else RichRenderer()).on_error(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line, like every other error: what is wrong, then where to look.
        command = exc.ctx.command_path if exc.ctx else "mf"
        message = " ".join(exc.format_message().split()).rstrip(".")
        click.echo(f"Error: {message}. Run `{command} --help` for the options.", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
