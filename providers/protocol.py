"""The provider protocol: the four methods every provider implements, built-in or plugin."""

from __future__ import annotations

import re
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


_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})$")


def declared_network(obj: Any) -> list[str]:
    """The ``host:port`` pairs a provider declares it connects to (``network = [...]``); ValueError saying what
    is wrong with a malformed declaration."""
    value = getattr(obj, "network", ())
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"network must be a list of \"host:port\" strings, not {type(value).__name__} {value!r}")
    for item in value:
        match = _HOST_PORT.match(item) if isinstance(item, str) else None
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise ValueError(f"network entry {item!r} is not \"host:port\" (a host name or address, a port 1-65535)")
    return [item.lower() for item in value]


def declared_secrets(obj: Any) -> list[str]:
    """The secrets a provider declares it needs (``secrets = ["NAME", ...]``); ValueError when malformed."""
    value = getattr(obj, "secrets", ())
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"secrets must be a list of names, not {value!r}")
    from .secrets import NAME

    bad = [v for v in value if not NAME.match(v) or ".." in v]
    if bad:
        raise ValueError(f"secret name {bad[0]!r} is not a plain name (letters, digits, _ . -)")
    return list(value)
