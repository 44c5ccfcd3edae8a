"""ModelForge's ``VALID_PROVIDERS``, as a live view: the registered names each time it is read
(built-ins, installed plugins, and providers registered at run time), never a stale copy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from providers.provider_factory import PROVIDER_REGISTRY


class LiveProviderNames(Sequence[str]):
    """A read-only sequence of the registered provider names, read from the registry on every access."""

    def _names(self) -> list[str]:
        return sorted(PROVIDER_REGISTRY)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(PROVIDER_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in PROVIDER_REGISTRY

    def __eq__(self, other: Any) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __hash__(self) -> int:  # a view, not a value
        return id(self)

    def __repr__(self) -> str:
        return repr(self._names())


VALID_PROVIDERS: Sequence[str] = LiveProviderNames()

__all__ = ["VALID_PROVIDERS"]
