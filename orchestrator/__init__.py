"""The host side of ModelForge: the `mf` CLI, image builds and job containers (no ML library)."""

import os
from pathlib import Path

#: The folder above this package: a checkout when mf runs from one, site-packages when installed.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Whether mf runs from a checkout of the project (its tests, scripts and caches live there).
IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "images" / "base").is_dir()
LABEL_PREFIX = "org.modelforge"


def cache_dir() -> Path:
    """Where mf keeps what it downloads and makes: $XDG_CACHE_HOME/modelforge (~/.cache/modelforge)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "modelforge"
