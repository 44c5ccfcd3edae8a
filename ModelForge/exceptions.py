"""ModelForge's exception tree (``ModelForgeException`` and its seven subclasses), mapped onto this
project's errors: each class also derives from the ``providers.errors`` class with the same meaning,
so it carries that error's kind and exit code across the container wall.

| ModelForge             | here (kind, exit code)          |
|------------------------|---------------------------------|
| ModelForgeException    | ModelForgeError (internal, 1)   |
| ModelAccessError       | ModelAccessError (model_access, 3) |
| DatasetValidationError | ConfigurationError (configuration, 2) |
| TrainingError          | ProviderError (provider, 5)     |
| ProviderError          | ProviderError (provider, 5)     |
| ConfigurationError     | ConfigurationError (configuration, 2) |
| HardwareError          | ConfigurationError (configuration, 2): the job asks for hardware the machine lacks |
| DatabaseError          | ModelForgeError (internal, 1)   |
"""

from __future__ import annotations

from typing import Any

from providers import errors as _errors


class ModelForgeException(_errors.ModelForgeError):
    """Base exception for all ModelForge errors."""

    def __init__(self, *args: Any) -> None:
        # ModelForge's exceptions take Exception's arguments; the first one is the message.
        super().__init__(str(args[0]) if args else "", None)
        self.args = args


class ModelAccessError(ModelForgeException, _errors.ModelAccessError):
    """Raised when user doesn't have access to a model."""


class DatasetValidationError(ModelForgeException, _errors.ConfigurationError):
    """Raised when dataset doesn't meet requirements."""


class TrainingError(ModelForgeException, _errors.ProviderError):
    """Raised when an error occurs during training."""


class ProviderError(ModelForgeException, _errors.ProviderError):
    """Raised when an error occurs with a model provider."""


class ConfigurationError(ModelForgeException, _errors.ConfigurationError):
    """Raised when there's an issue with configuration."""


class HardwareError(ModelForgeException, _errors.ConfigurationError):
    """Raised when there's an issue with hardware detection."""


class DatabaseError(ModelForgeException):
    """Raised when there's an issue with database operations."""


__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "DatasetValidationError",
    "HardwareError",
    "ModelAccessError",
    "ModelForgeException",
    "ProviderError",
    "TrainingError",
]
