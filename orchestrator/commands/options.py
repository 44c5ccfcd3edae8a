"""Options several `mf` commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from providers.provider_factory import available_providers

from ..render import JsonRenderer, RichRenderer


class ProviderName(click.ParamType):
    """A provider name; the choices come from the registry, plugins included. An unknown name is
    reported by the registry itself, with the list of providers."""

    name = "provider"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(available_providers()) + "]"

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        return [CompletionItem(name) for name in available_providers() if name.startswith(incomplete.lower())]


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (lines) for scripts instead of tables.")(func)


def flavour_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--flavour", default=None, metavar="FLAVOUR",
        help="Image flavour (cpu, cuda). Default: cuda when the engine has an NVIDIA runtime, else cpu.",
    )(func)


def renderer_for(as_json: bool) -> JsonRenderer | RichRenderer:
    return JsonRenderer() if as_json else RichRenderer()
