"""The wheel carries every package of the checkout: a subpackage missing from pyproject.toml's list would
install an `mf` without it (and with other image tags, since they hash the providers' source)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_in_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in ("providers", "orchestrator", "ModelForge") for init in (ROOT / top).rglob("__init__.py")
             if "__pycache__" not in init.parts}
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
