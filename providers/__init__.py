"""ModelForge providers. The top level is the SDK a plugin imports: ``protocol``, ``errors``, ``log``,
``base``, ``provider_factory`` (the registry), ``schemas``, ``contract`` and ``events``. ``builtin``
holds the built-in providers, ``common`` what they share, and ``runtime`` the code that runs a job
inside a provider image. Importing this package imports no ML library."""

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
