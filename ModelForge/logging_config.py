"""ModelForge's ``logger``: the ``modelforge`` logger this project's providers log to.

ModelForge's own module adds a stdout handler; this one does not, because inside an image stdout
carries the job's events: the runtime forwards each record to the host as a ``log`` event instead.
"""

from __future__ import annotations

import logging

from providers.log import logger


def setup_logging(level: str | None = None) -> logging.Logger:
    """Set the ``modelforge`` logger's level (INFO by default) and return it."""
    logger.setLevel(getattr(logging, (level or "INFO").upper()))
    return logger


__all__ = ["logger", "setup_logging"]
