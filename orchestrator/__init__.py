"""The host side of ModelForge: the `mf` CLI, image builds and job containers (no ML library)."""

from pathlib import Path

#: The checkout `mf` runs from: images/ and the provider sources live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LABEL_PREFIX = "org.modelforge"
