"""The shared base of the built-in providers and its optional hooks.

A provider only has to satisfy ``providers.protocol.ModelProvider``. Subclassing
``BaseProvider`` adds what the in-container runtime can use beyond the protocol:
``describe_model`` (details for ``validate``), ``generate`` (``load --prompt``) and ``train``.
Subclasses override only what differs.

One more optional method makes a provider serve (`mf serve`, `mf chat`; ``providers/runtime/serve.py``)::

    def generate_stream(self, model, tokenizer, *, messages=None, prompt=None, max_tokens, temperature,
                        top_p, should_stop) -> Iterator[str | int]:

It gets either ``messages`` (a chat: ``[{"role": "system"|"user"|"assistant", "content": str}]``, to be
rendered with the model's chat template) or ``prompt`` (plain completion), and yields the answer's text one
piece per generated token (a piece may be ``""`` while a character is incomplete). It may yield the prompt's
token count (an ``int``) first. It checks ``should_stop()`` at each token and returns when it is true: the
client went away, or the server is stopping. The server does the rest: HTTP, the key, stop strings, the
one-generation-at-a-time lock. Without the method, `mf serve` refuses the provider (exit 6).
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

