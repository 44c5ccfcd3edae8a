"""Validation schemas shared by the CLI and the images: the providers a job may name."""

from __future__ import annotations

from .provider_factory import available_providers


def valid_providers() -> list[str]:
    """The registered provider names, read from the registry each time."""
    return available_providers()


#: The providers registered when this module was imported.
VALID_PROVIDERS: list[str] = valid_providers()
