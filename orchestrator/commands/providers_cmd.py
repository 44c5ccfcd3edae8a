"""`mf providers`: every registered provider, its image and whether that image is built."""

from __future__ import annotations

import json
from typing import Any

import click

from .options import json_option


def provider_rows() -> list[dict[str, Any]]:
    from providers.errors import EngineError, ImageError
    from providers.provider_factory import PLUGIN_ERRORS, PROVIDER_ORIGINS, PROVIDER_REGISTRY, available_providers

    from .. import engine, recipes

    try:
        gpu_host: bool | None = engine.has_nvidia_runtime()
    except EngineError:
        gpu_host = None
    rows = []
    for name in available_providers():
        cls = PROVIDER_REGISTRY[name]
        row: dict[str, Any] = {
            "name": name,
            "origin": PROVIDER_ORIGINS.get(name, "?"),
            "actions": list(getattr(cls, "actions", ("validate", "load"))),
            "requires_gpu": bool(getattr(cls, "requires_gpu", False)),
            "image": None,
            "built": None,
            "note": "",
        }
        try:
            spec = recipes.image_spec(name, None, bool(gpu_host))
            row["image"] = spec.tag
            row["built"] = engine.image_exists(spec.tag) if gpu_host is not None else None
            if gpu_host is None:
                row["note"] = "Docker engine not reachable"
        except ImageError as exc:
            row["note"] = exc.message
        rows.append(row)
    for name, error in sorted(PLUGIN_ERRORS.items()):
        rows.append({"name": name, "origin": "?", "actions": [], "requires_gpu": False, "image": None,
                     "built": None, "note": f"broken plugin: {error.message}"})
    return rows


@click.command("providers")
@json_option
def providers_command(as_json: bool) -> None:
    """List the providers, their images, and whether each image is built."""
    rows = provider_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from ..render import stdout_console

    table = Table("provider", "actions", "image", "built", "note")
    for row in rows:
        built = {True: "[green]yes[/]", False: "[yellow]no[/]", None: "-"}[row["built"]]
        table.add_row(row["name"], ", ".join(row["actions"]), row["image"] or "-", built, row["note"])
    stdout_console.print(table)
