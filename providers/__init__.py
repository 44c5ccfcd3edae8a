"""ModelForge providers: the protocol, the registry, the built-in providers and the runtime
that runs a job inside a provider image. Importing this package imports no ML library."""

from .errors import (
    ConfigurationError,
    GatedModelError,
    ModelAccessError,
    ModelForgeError,
    ProviderError,
)
from .log import logger
from .protocol import ModelProvider

__all__ = [
    "ConfigurationError",
    "GatedModelError",
    "ModelAccessError",
    "ModelForgeError",
    "ModelProvider",
    "ProviderError",
    "logger",
]
