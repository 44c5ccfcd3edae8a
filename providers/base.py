"""The shared base of the built-in providers and its optional hooks.

A provider only has to satisfy ``providers.protocol.ModelProvider``. Subclassing
``BaseProvider`` adds what the in-container runtime can use beyond the protocol:
``describe_model`` (details for ``validate``), ``generate`` (``load --prompt``) and ``train``.
Subclasses override only what differs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .errors import UnsupportedActionError


class BaseProvider:
    #: The registered name; ``get_provider_name`` returns it.
    name: ClassVar[str] = ""
    #: The actions this provider supports, out of validate, load and train.
    actions: ClassVar[tuple[str, ...]] = ("validate", "load")
    #: Whether ``load`` and ``train`` need an NVIDIA GPU.
    requires_gpu: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})

    def get_provider_name(self) -> str:
        return self.name

    def describe_model(self, model_id: str, model_class: str) -> dict[str, Any]:
        """Facts about a model that ``validate`` reports; called after access is validated."""
        return {}

    def generate(self, model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int,
                 temperature: float) -> dict[str, Any]:
        """Complete ``prompt``; return at least ``text`` and ``new_tokens``."""
        raise UnsupportedActionError(
            f"The {self.name} provider cannot generate text from a prompt.",
            "Run `load` without --prompt.",
        )

    def train(self, job: Any, events: Any) -> dict[str, Any]:
        """Fine-tune according to ``job``; providers that train override this."""
        from .runtime.actions import unsupported_action

        raise unsupported_action(self.name, "train", self.actions)

