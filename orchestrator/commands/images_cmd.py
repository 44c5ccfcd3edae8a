"""`mf images build`: build provider images (the Makefile's image targets call this)."""

from __future__ import annotations

import time

import click

from providers.provider_factory import available_providers

from .. import images
from ..render import stderr_console, stdout_console
from .options import flavour_option


@click.group("images")
def images_group() -> None:
    """Provider images."""


@images_group.command("build")
@click.argument("name", required=False)
@click.option("--all", "build_all", is_flag=True, help="Build every provider that has an image recipe.")
@flavour_option
def build_command(name: str | None, build_all: bool, flavour: str | None) -> None:
    """Build the image of provider NAME (or `base` for the base images)."""
    if not name and not build_all:
        raise click.UsageError("Name a provider (see `mf providers`), `base`, or pass --all.")

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
