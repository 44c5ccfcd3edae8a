"""Secrets a job was given (``mf run --secret NAME=env:VAR|file:PATH``), read inside its image.

``mf`` writes each value to a tmpfs mounted read-only at ``/run/secrets/NAME`` (mode 0400, the job's user): never
into the job's environment, command line, spec, labels, logs or events. A provider lists the secrets it needs in
``secrets = ["NAME", ...]`` (``mf`` refuses a job that lacks one before any container starts) and reads them here::

    from providers import secrets
    api_key = secrets.get("CLOUD_API_KEY")
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConfigurationError

SECRETS_DIR = Path(os.environ.get("MF_SECRETS_DIR", "/run/secrets"))
#: A secret's name: a file name, never a path.
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str) -> str:
    if not NAME.match(name) or ".." in name:
        raise ConfigurationError(f"Secret name {name!r} is not a plain name (letters, digits, _ . -; no / or ..).",
                                 "Name it like an environment variable, e.g. CLOUD_API_KEY.")
    return name


def get(name: str) -> str:
    """The secret's value (one trailing newline dropped); ConfigurationError when the job was not given it."""
    path = SECRETS_DIR / check_name(name)
    try:
        value = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"The job was not given the secret {name}.",
                                 f"Pass it: mf run ... --secret {name}=env:VAR or --secret {name}=file:PATH.") from None
    return value[:-1] if value.endswith("\n") else value


def available() -> list[str]:
    """The names of the secrets this job was given."""
    return sorted(p.name for p in SECRETS_DIR.iterdir()) if SECRETS_DIR.is_dir() else []
