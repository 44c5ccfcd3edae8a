"""mf's own settings: ``$XDG_CONFIG_HOME/modelforge/config.json`` (``mf config``), each overridable by
an environment variable, and by a command-line option where the command has one."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from providers.errors import ConfigurationError

#: setting -> (environment variable, what it is)
SETTINGS: dict[str, tuple[str, str]] = {
    "registry": ("MF_REGISTRY", "where images are pushed and pulled, e.g. registry.example.com/team"),
    "require_signed": ("MF_REQUIRE_SIGNED", "1: run only images listed in a verified, signed release manifest"),
    "signing_key": ("MF_SIGNING_KEY", "the Ed25519 private key (PEM file) `mf images push` signs with"),
}
TRUE = {"1", "true", "yes", "on"}
#: HOST[:PORT][/PATH]: a DNS name, IPv4 or [IPv6] host, an optional port, lower-case path components (no scheme)
_REGISTRY = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                       r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*/?$")


def check_registry(value: str, where: str = "") -> str:
    """``value`` if it is a registry reference (HOST[:PORT]/PATH), else a one-line error saying what one looks like."""
    text = value.strip()
    if _REGISTRY.match(text):
        return text.rstrip("/")
    scheme = "drop the scheme (http:// or https://); " if re.match(r"^[a-z]+://", text, re.I) else ""
    raise ConfigurationError(
        f"{value!r}{' (' + where + ')' if where else ''} is not a registry reference.",
        f"Give HOST[:PORT]/PATH: {scheme}no spaces, a lower-case path, e.g. registry.example.com:5000/team.",
    )


def config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")).expanduser() / "modelforge"


def config_file() -> Path:
    return config_dir() / "config.json"


def load() -> dict[str, Any]:
    path = config_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Cannot read {path}: {exc}", "Fix or delete that file (mf config set ...).") from None
    return data if isinstance(data, dict) else {}


def get(name: str, override: str | None = None) -> str | None:
    """A setting: the command-line value, else its environment variable, else the config file."""
    if override:
        return override
    env, _ = SETTINGS[name]
    if os.environ.get(env):
        return os.environ[env]
    value = load().get(name)
    return str(value) if value not in (None, "") else None


def enabled(name: str) -> bool:
    return (get(name) or "").strip().lower() in TRUE


def set_value(name: str, value: str | None) -> Path:
    if name not in SETTINGS:
        raise ConfigurationError(f"Unknown setting {name!r}. Settings: {sorted(SETTINGS)}")
    if name == "registry" and value is not None:
        value = check_registry(value)
    data = load()
    if value is None:
        data.pop(name, None)
    else:
        data[name] = value
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)
    return path
