"""`mf images build`: build provider images (the Makefile's image targets call this)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import click

from .options import flavour_option, json_option


@click.group("images", invoke_without_command=True)
@json_option
@click.pass_context
def images_group(ctx: click.Context, as_json: bool) -> None:
    """Provider images: list them (built / stale / missing), build them, prune superseded ones."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from .. import images
    from ..render import stdout_console

    rows = images.image_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("provider", "flavour", "tag", "status", "size MB", "created", "lock")
    style = {"built": "green", "stale": "yellow", "missing": "red"}
    for row in rows:
        table.add_row(str(row["provider"]), str(row["flavour"]), str(row["tag"]),
                      f"[{style[str(row['status'])]}]{row['status']}[/]", str(row["size_mb"] or "-"),
                      str(row["created"] or "-"), str(row["lock_hash"]))
    stdout_console.print(table)


@images_group.command("prune")
def prune_command() -> None:
    """Remove the project's images that no current recipe builds (superseded by a newer tag)."""
    from .. import images
    from ..render import stderr_console, stdout_console

    removed = images.prune(lambda line: stderr_console.print(f"[dim]{line}[/]"))
    stdout_console.print(f"removed {len(removed)} superseded image(s)")


@images_group.command("build")
@click.argument("name", required=False)
@click.option("--all", "build_all", is_flag=True, help="Build every provider that has an image recipe.")
@flavour_option
def build_command(name: str | None, build_all: bool, flavour: str | None) -> None:
    """Build the image of provider NAME (or `base` for the base images)."""
    if not name and not build_all:
        raise click.UsageError("Name a provider (see `mf providers`), `base`, or pass --all.")
    from providers.provider_factory import available_providers

    from .. import images
    from ..render import stderr_console, stdout_console

    def progress(line: str) -> None:
        stderr_console.print(f"[dim]{line}[/]", soft_wrap=True)

    if name == "base":
        for base in (images.BASE_RUNTIME, images.BASE_BUILD):
            stdout_console.print(base.ensure(progress))
        return
    names = [n for n in available_providers() if images.flavours(n)] if build_all else [name]
    for provider in names:
        assert provider is not None
        started = time.monotonic()
        spec = images.image_spec(provider.lower(), flavour)
        tag = spec.ensure(progress)
        stdout_console.print(f"{tag}  ({time.monotonic() - started:.1f} s)")


@images_group.command("sbom")
@click.argument("name")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the SBOM to this file instead of printing it.")
@flavour_option
def sbom_command(name: str, output: Path | None, flavour: str | None) -> None:
    """Print (or write) the CycloneDX SBOM of provider NAME's image, made by syft from the image."""
    from .. import images
    from ..render import stderr_console

    spec = images.image_spec(name.lower(), flavour)
    path = spec.sbom(lambda line: stderr_console.print(f"[dim]{line}[/]", soft_wrap=True))
    if output is None:
        click.echo(path.read_text(), nl=False)
        return
    output = output.expanduser()
    partial = output.with_name(f".{output.name}.partial")
    try:
        shutil.copyfile(path, partial)
        os.replace(partial, output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise click.UsageError(f"Cannot write {output}: {exc.strerror}") from None
    stderr_console.print(f"wrote {output}")
