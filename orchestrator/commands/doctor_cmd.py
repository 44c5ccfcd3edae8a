"""`mf doctor`: check the engine, GPUs, disk, shared memory, the HF cache and the token."""

from __future__ import annotations

import json
import sys

import click

from .options import json_option

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@click.command("doctor")
@json_option
def doctor_command(as_json: bool) -> None:
    """Check that this machine can run ModelForge jobs; each line says what to fix."""
    from rich.markup import escape

    from ..doctor import run_checks
    from ..render import stdout_console

    checks = run_checks()
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        for c in checks:
            fix = f"  [dim]→ {escape(c.fix)}[/]" if c.fix else ""
            stdout_console.print(f"[{STYLE[c.status]}]{c.status:4}[/]  {c.name}: {escape(c.detail)}{fix}", soft_wrap=True)
    if any(c.status == "fail" for c in checks):
        sys.exit(1)
