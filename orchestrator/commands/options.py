"""Options several `mf` commands share."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from ..render import JsonRenderer, RichRenderer


class ProviderName(click.ParamType):
    """A provider name; the choices come from the registry, plugins included. An unknown name is
    reported by the registry itself, with the list of providers."""

    name = "provider"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        from providers.provider_factory import available_providers

        return "[" + "|".join(available_providers()) + "]"

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from providers.provider_factory import available_providers

        return [CompletionItem(name) for name in available_providers() if name.startswith(incomplete.lower())]


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (lines) for scripts instead of tables.")(func)


def flavour_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--flavour", default=None, metavar="FLAVOUR",
        help="Image flavour (cpu, cuda). Default: cuda when the engine has an NVIDIA runtime, else cpu.",
    )(func)


def renderer_for(as_json: bool) -> JsonRenderer | RichRenderer:
    from ..render import JsonRenderer, RichRenderer

    return JsonRenderer() if as_json else RichRenderer()


class MemorySize(click.ParamType):
    """A container memory limit as docker takes it (``512m``, ``4g``), checked when the line is parsed."""

    name = "memory"
    _FORM = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)$", re.I)
    _UNIT = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    #: The engine refuses limits under 6 MiB.
    MINIMUM = 6 * 1024**2

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        match = self._FORM.match(text)
        if not match:
            self.fail(f"{value!r} is not a memory size; use a number with a unit, e.g. --memory 512m or --memory 4g",
                      param, ctx)
        size = float(match.group(1)) * self._UNIT[match.group(2).lower()]
        if size < self.MINIMUM:
            self.fail(f"{value!r} is below the engine's minimum of 6m; use e.g. --memory 512m or --memory 4g",
                      param, ctx)
        return text.lower()


class GpuRequest(click.ParamType):
    """``all``, ``none``, a count (``2``) or device ids (``device=0,1``), as ``docker run --gpus`` takes them."""

    name = "gpus"
    _DEVICES = re.compile(r"^device=[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*$")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if text in ("all", "none") or self._DEVICES.match(text) or (text.isdigit() and int(text) >= 1):
            return text
        self.fail(f"{value!r} is not a GPU request; use --gpus all, --gpus 2 or --gpus device=0,1", param, ctx)


class RegistryRef(click.ParamType):
    """HOST[:PORT]/PATH, checked when the line is parsed (a bad one would otherwise fail far away, at a push)."""

    name = "registry"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from providers.errors import ConfigurationError

        from ..config import check_registry

        try:
            return check_registry(str(value))
        except ConfigurationError as exc:
            self.fail(f"{exc.message} {exc.hint}", param, ctx)


def registry_option(help_text: str) -> Callable[..., Any]:
    return click.option("--registry", default=None, type=RegistryRef(), metavar="HOST[:PORT]/PATH", help=help_text)


def secret_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--secret", "secrets", multiple=True, metavar="NAME=env:VAR|file:PATH",
        help="A secret for the job, read from an environment variable or a file (repeatable): a read-only file "
             "/run/secrets/NAME in the job (providers.secrets.get), never in its environment, spec or logs.")(func)


def parse_secrets(given: tuple[str, ...], from_config: dict[str, str]) -> dict[str, str]:
    """name -> reference, from --secret (which wins) and the config's ``secrets``; each checked now (one line)."""
    from ..egress import parse_secret

    out = dict(parse_secret(f"{name}={ref}") for name, ref in from_config.items())
    out.update(parse_secret(text) for text in given)
    return out
