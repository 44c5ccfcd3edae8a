"""The provider registry, filled from the ``modelforge.providers`` entry-point group.

Built-in providers register through the same group as third-party plugins (see
pyproject.toml). A plugin that fails to load is recorded in ``PLUGIN_ERRORS`` and reported
when someone asks for it; every other provider keeps working.

``MODELFORGE_LOAD_PLUGINS`` restricts which plugin distributions load: unset loads all;
empty loads only the built-ins; a comma-separated list loads the built-ins plus those
distributions. The test suite uses it to keep a developer's installed plugins out.
"""

from __future__ import annotations

import inspect
import os
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, ProviderError
from .log import logger
from .protocol import declared_network, declared_secrets, missing_protocol_methods

ENTRY_POINT_GROUP = "modelforge.providers"
BUILTIN_DISTRIBUTION = "modelforge"

PROVIDER_REGISTRY: dict[str, type] = {}
#: name -> why the plugin that declares it could not be registered
PLUGIN_ERRORS: dict[str, ProviderError] = {}
#: name -> the distribution that provides it
PROVIDER_ORIGINS: dict[str, str] = {}
#: name -> the libraries a plugin's module imports that exist only in its image (see providers.hostimport)
IMAGE_ONLY_IMPORTS: dict[str, list[str]] = {}


def _distribution_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "<unknown>"


def _plugins_allowed() -> set[str] | None:
    raw = os.environ.get("MODELFORGE_LOAD_PLUGINS")
    if raw is None:
        return None
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


def load_registry() -> None:
    """(Re)fill ``PROVIDER_REGISTRY`` from the installed entry points."""
    PROVIDER_REGISTRY.clear()
    PLUGIN_ERRORS.clear()
    PROVIDER_ORIGINS.clear()
    IMAGE_ONLY_IMPORTS.clear()
    allowed = _plugins_allowed()
    eps = sorted(
        entry_points(group=ENTRY_POINT_GROUP),
        # built-ins first, so a plugin cannot take a built-in's name
        key=lambda ep: (_distribution_name(ep).lower() != BUILTIN_DISTRIBUTION, ep.name),
    )
    for ep in eps:
        dist = _distribution_name(ep)
        if dist.lower() != BUILTIN_DISTRIBUTION and allowed is not None and dist.lower() not in allowed:
            continue
        name = ep.name.lower()
        if name in PROVIDER_REGISTRY:
            if PROVIDER_ORIGINS.get(name) != dist:
                logger.warning("plugin %s: provider name %r is taken by %s", dist, name, PROVIDER_ORIGINS[name])
                PLUGIN_ERRORS[f"{name}@{dist}"] = ProviderError(
                    f"Plugin {dist} registers provider {name!r}, which {PROVIDER_ORIGINS[name]} already provides.",
                    f"Rename the entry point in {dist}'s [project.entry-points.\"{ENTRY_POINT_GROUP}\"] table.",
                )
            continue
        try:
            try:
                cls = ep.load()
            except ModuleNotFoundError as missing_module:
                if dist.lower() == BUILTIN_DISTRIBUTION or not missing_module.name:
                    raise
                from .hostimport import load_with_stand_ins

                cls, stood_in = load_with_stand_ins(ep.load, missing_module.name)
                if plugin_recipe(cls) is None:  # no image to have the library in: it is missing
                    raise missing_module from None
                IMAGE_ONLY_IMPORTS[name] = stood_in
        except Exception as exc:  # a broken plugin must not break the others
            PLUGIN_ERRORS[name] = ProviderError(
                f"Plugin {dist} (provider {name!r}) failed to import: {type(exc).__name__}: {exc}.",
                f"Fix or reinstall {dist}, or uninstall it: `pip uninstall {dist}`.",
            )
            continue
        missing = missing_protocol_methods(cls)
        if missing:
            PLUGIN_ERRORS[name] = ProviderError(
                f"Plugin {dist} (provider {name!r}) does not implement the provider protocol: missing {', '.join(missing)}.",
                "Implement every method of providers.protocol.ModelProvider.",
            )
            continue
        try:
            declared_network(cls)
            declared_secrets(cls)
        except ValueError as exc:
            PLUGIN_ERRORS[name] = ProviderError(
                f"Plugin {dist} (provider {name!r}) has a malformed declaration: {exc}.",
                'Declare network = ["api.example.com:443", ...] and secrets = ["API_KEY", ...] on the provider class.',
            )
            continue
        PROVIDER_REGISTRY[name] = cls
        PROVIDER_ORIGINS[name] = dist


def plugin_recipe(cls: type) -> Path | None:
    """The folder with a plugin's image recipe: the one its class names as ``image_recipe``, else the
    ``image/`` folder beside its top-level package's ``__init__`` (what ``mf providers new`` makes, so
    code written for ModelForge needs no attribute of ours); None when neither exists."""
    named = getattr(cls, "image_recipe", None)
    if isinstance(named, (str, os.PathLike)):
        return Path(named) if Path(named).is_dir() else None
    top = sys.modules.get(cls.__module__.split(".")[0])
    top_file = getattr(top, "__file__", None)
    if top_file is None:
        return None
    folder = Path(top_file).parent / "image"
    return folder if folder.is_dir() else None


def available_providers() -> list[str]:
    return sorted(PROVIDER_REGISTRY)


def providers_supporting(action: str) -> list[str]:
    if action == "serve":  # the optional streaming method, not a declared action
        return [name for name in available_providers() if callable(getattr(PROVIDER_REGISTRY[name], "generate_stream", None))]
    return [name for name in available_providers() if action in getattr(PROVIDER_REGISTRY[name], "actions", ())]


def get_provider_class(provider_name: str) -> type:
    key = provider_name.strip().lower()
    cls = PROVIDER_REGISTRY.get(key)
    if cls is not None:
        return cls
    if key in PLUGIN_ERRORS:
        raise PLUGIN_ERRORS[key]
    raise ProviderError(
        f"Unknown provider: {provider_name}. Available providers: {available_providers()}",
        "Run `mf providers` to list them.",
    )


def create_provider(provider_name: str, provider_config: dict[str, Any] | None = None) -> Any:
    """Create the provider registered as ``provider_name`` (case-insensitive).

    ``provider_config`` goes to the provider's constructor; a provider whose constructor takes
    no argument gets none, and refuses a non-empty config.
    """
    cls = get_provider_class(provider_name)
    try:
        params = [
            p for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        params = []
    if params:
        return cls(dict(provider_config or {}))
    if provider_config:
        raise ConfigurationError(
            f"Provider {provider_name!r} takes no provider_config, but got {sorted(provider_config)}.",
            "Remove provider_config from the job.",
        )
    return cls()


load_registry()
