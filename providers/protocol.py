"""The provider protocol: the four methods every provider implements, built-in or plugin."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

PROTOCOL_METHODS = ("load_model", "load_tokenizer", "validate_model_access", "get_provider_name")
#: What a job can ask a provider to do (a provider lists the ones it supports in ``actions``).
ACTIONS = ("validate", "load", "train")


@runtime_checkable
class ModelProvider(Protocol):
    """What ModelForge asks of a provider. Implement it by shape; inheriting is optional."""

    def load_model(
        self,
        model_id: str,
        model_class: str,
        quantization_config: Any = None,
        device_map: str = "auto",
        **kwargs: Any,
    ) -> Any:
        """Load a model (a local path or a hub reference) and return it."""
        ...

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> Any:
        """Load the tokenizer that goes with ``model_id``."""
        ...

    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        """Return True when the model can be loaded; raise ``ModelAccessError`` when not."""
        ...

    def get_provider_name(self) -> str:
        """Return the name the provider is registered under."""
        ...


def missing_protocol_methods(obj: Any) -> list[str]:
    """The protocol methods that ``obj`` (a class or an instance) lacks."""
    return [name for name in PROTOCOL_METHODS if not callable(getattr(obj, name, None))]
