"""Options several `mf` commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..render import JsonRenderer, RichRenderer


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (lines) for scripts instead of tables.")(func)


def flavour_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--flavour", default=None, metavar="FLAVOUR",
        help="Image flavour (cpu, cuda). Default: cuda when the engine has an NVIDIA runtime, else cpu.",
    )(func)


def renderer_for(as_json: bool) -> JsonRenderer | RichRenderer:
    return JsonRenderer() if as_json else RichRenderer()
