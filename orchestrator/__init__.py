"""The host side of ModelForge: the `mf` CLI, image builds and job containers (no ML library)."""

import os
from pathlib import Path

#: The folder above this package: a checkout when mf runs from one, site-packages when installed.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Whether mf runs from a checkout of the project (its tests, scripts and caches live there).
IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "images" / "base").is_dir()
LABEL_PREFIX = "org.modelforge"


def label(name: str) -> str:
    """The full name of one of the project's labels: ``org.modelforge.<name>``."""
    return f"{LABEL_PREFIX}.{name}"


def project_labels(kind: str, **extra: str) -> dict[str, str]:
    """The labels of something mf makes (an image, a builder stage, a job): its kind, then each
    ``extra`` under its name with dashes (``build_hash`` -> ``org.modelforge.build-hash``)."""
    labels = {f"{LABEL_PREFIX}.kind": kind}
    labels.update({f"{LABEL_PREFIX}.{key.replace('_', '-')}": value for key, value in extra.items()})
    return labels


def cache_dir() -> Path:
    """Where mf keeps what it downloads and makes: $XDG_CACHE_HOME/modelforge (~/.cache/modelforge)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "modelforge"
