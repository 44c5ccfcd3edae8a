"""Importing a plugin on the host when its module imports libraries that exist only in its image.

Code written for ModelForge imports transformers (say) at the top of its module. ``mf`` imports a
plugin's module on the host only to read its class (the image recipe, the declared actions, the
protocol's methods); the host has no ML library, and the provider runs in its image, which has them.
So when a plugin fails to import for a missing module, the registry imports it once more with
stand-ins for the missing libraries: a stand-in answers any attribute, call or subclassing with another
stand-in, and is never run. The stand-ins leave ``sys.modules`` once the import is done, and the
names they stood for are recorded (``mf providers`` shows them).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class ImageOnly:
    """A stand-in for an object of a library that is only in the provider's image."""

    def __init__(self, name: str) -> None:
        self._mf_name = name

    def __getattr__(self, attr: str) -> ImageOnly:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return ImageOnly(f"{self._mf_name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # A decorator from the library (``@torch.no_grad()``) keeps the function it decorates.
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], ImageOnly):
            return args[0]
        return ImageOnly(f"{self._mf_name}()")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)  # ``class Wrapper(torch.nn.Module)`` defines a plain class on the host

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __repr__(self) -> str:
        return f"<{self._mf_name}: only in the provider's image>"


class _ImageOnlyModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return ImageOnly(f"{self.__name__}.{attr}")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on ``sys.meta_path``: answers only for modules no other finder has."""

    def __init__(self) -> None:
        self.stood_in: set[str] = set()

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.split(".")[0]
        if "." in fullname and not isinstance(sys.modules.get(top), _ImageOnlyModule):
            return None  # a missing module of a real package (the plugin's own, say) stays missing: a real error
        self.stood_in.add(top)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _ImageOnlyModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


@contextmanager
def image_only_libraries() -> Iterator[set[str]]:
    """Within the block, a missing module imports as a stand-in; yields the top-level names stood in for."""
    finder = _StandInFinder()
    sys.meta_path.append(finder)
    try:
        yield finder.stood_in
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n, m in sys.modules.items() if isinstance(m, _ImageOnlyModule)]:
            del sys.modules[name]


def load_with_stand_ins(load: Callable[[], Any], failed_module: str) -> tuple[Any, list[str]]:
    """Run ``load`` (an entry point's) again with stand-ins; the class and the libraries stood in for."""
    # The module that failed half-way is in sys.modules no more; drop any partial submodules of the plugin too.
    with image_only_libraries() as stood_in:
        cls = load()
    return cls, sorted(stood_in | {failed_module.split(".")[0]})
