"""ModelForge's provider factory over this project's registry.

Both APIs ModelForge code uses work: the module-level ``PROVIDER_REGISTRY`` / ``create_provider`` (its
documentation's) and the ``ProviderFactory`` class (its code's: ``create_provider``,
``get_available_providers``, ``register_provider``). The registry is the one ``mf`` fills from the
``modelforge.providers`` entry points, so built-ins, installed plugins and providers registered at run
time are all here.
"""

from __future__ import annotations

from typing import Any

from providers import provider_factory as _factory
from providers.log import logger

from ..exceptions import ConfigurationError, ProviderError

#: name -> provider class; the same dict as ``providers.provider_factory.PROVIDER_REGISTRY``.
PROVIDER_REGISTRY: dict[str, type] = _factory.PROVIDER_REGISTRY
#: Where a provider registered with ``register_provider`` says it comes from (``mf providers``' origin).
RUNTIME_ORIGIN = "registered at run time"


def _create(provider_name: str, provider_config: dict[str, Any] | None, error: type[Exception]) -> Any:
    key = provider_name.strip().lower()
    if key not in PROVIDER_REGISTRY:
        if key in _factory.PLUGIN_ERRORS:
            raise _factory.PLUGIN_ERRORS[key]
        raise error(f"Unknown provider: {provider_name}. Available providers: {list(PROVIDER_REGISTRY.keys())}")
    return _factory.create_provider(key, provider_config)


def create_provider(provider_name: str, provider_config: dict[str, Any] | None = None) -> Any:
    """Create a provider instance (``ProviderError`` naming the available ones for an unknown name)."""
    return _create(provider_name, provider_config, ProviderError)


class ProviderFactory:
    """Factory for creating model provider instances."""

    @classmethod
    def create_provider(cls, provider_name: str = "huggingface", provider_config: dict[str, Any] | None = None) -> Any:
        """Create a provider instance by name (``ConfigurationError`` for an unknown name, as in ModelForge)."""
        logger.info(f"Creating provider: {provider_name}")
        return _create(provider_name, provider_config, ConfigurationError)

    @classmethod
    def get_available_providers(cls) -> list[str]:
        """The registered provider names."""
        return list(PROVIDER_REGISTRY.keys())

    @classmethod
    def register_provider(cls, name: str, provider_class: type) -> None:
        """Register a provider class under ``name`` (case-insensitive) for this process."""
        from providers.protocol import missing_protocol_methods

        missing = missing_protocol_methods(provider_class)
        if missing:
            raise ProviderError(
                f"Cannot register {name!r}: {provider_class.__name__} lacks {', '.join(missing)} of the provider protocol."
            )
        logger.info(f"Registering provider: {name}")
        PROVIDER_REGISTRY[name.lower()] = provider_class
        _factory.PROVIDER_ORIGINS[name.lower()] = RUNTIME_ORIGIN


__all__ = ["PROVIDER_REGISTRY", "ProviderFactory", "create_provider"]
