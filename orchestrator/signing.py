"""Signed release manifests: Ed25519 signatures over a canonical JSON encoding (docs/releases.md).

A signed manifest is ``{"manifest": {...}, "signatures": [{"key_id": ..., "algorithm": "ed25519",
"signature": <base64>}]}``. The signature covers ``json.dumps(manifest, sort_keys=True,
separators=(",", ":"), ensure_ascii=False).encode()``; ``key_id`` is the first 16 hex digits of the
SHA-256 of the raw 32-byte public key. Anyone can verify it with any Ed25519 implementation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from providers.errors import ConfigurationError, ImageError

from . import config

PRIVATE_NAME = "modelforge-signing.key"
PUBLIC_NAME = "modelforge-signing.pub"


def trusted_keys_dir() -> Path:
    return config.config_dir() / "trusted-keys"


def canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _raw(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Any) -> str:
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def generate(folder: Path) -> tuple[Path, Path]:
    """A new key pair: the private key (PEM, mode 0600) and the public key (PEM) in ``folder``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if private_path.exists():
        raise ConfigurationError(f"{private_path} exists already.", "Pick another --output folder, or remove it first.")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private(source: str | None) -> Any:
    """The signing key: a PEM file's path, or the PEM text itself (as CI secrets hold it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    source = config.get("signing_key", source)
    if not source:
        raise ConfigurationError("No signing key: the release manifest must be signed.",
                                 "Pass --key FILE or set MF_SIGNING_KEY (make one with `mf images keygen`).")
    data = source.encode() if source.lstrip().startswith("-----BEGIN") else _read(Path(source).expanduser())
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError("The signing key is not an unencrypted PEM private key.",
                                 "Use the .key file `mf images keygen` wrote.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("The signing key is not an Ed25519 key.", "Make one with `mf images keygen`.")
    return key


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the key {path}: {exc.strerror}.", "Check the path.") from None


def load_public(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(_read(path))
    except ValueError:
        raise ConfigurationError(f"{path} is not a PEM public key.", "Use the .pub file `mf images keygen` wrote.") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{path} is not an Ed25519 public key.", "Use the .pub file `mf images keygen` wrote.")
    return key


def trust(path: Path) -> Path:
    """Add a public key to the keys mf trusts (a copy under the config folder, named by its key id)."""
    key = load_public(path)
    target = trusted_keys_dir() / f"{key_id(key)}.pub"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_read(path))
    return target


def trusted() -> dict[str, Any]:
    """key id -> public key: the trusted-keys folder, plus MF_TRUSTED_KEYS (paths, separated by ':')."""
    paths = sorted(trusted_keys_dir().glob("*.pub")) if trusted_keys_dir().is_dir() else []
    paths += [Path(p).expanduser() for p in os.environ.get("MF_TRUSTED_KEYS", "").split(os.pathsep) if p]
    keys = {}
    for path in paths:
        key = load_public(path)
        keys[key_id(key)] = key
    return keys


def sign(manifest: dict[str, Any], private_key: Any) -> dict[str, Any]:
    signature = base64.b64encode(private_key.sign(canonical(manifest))).decode()
    return {"manifest": manifest,
            "signatures": [{"key_id": key_id(private_key.public_key()), "algorithm": "ed25519",
                            "signature": signature}]}


def verify(signed: Any, where: str) -> dict[str, Any]:
    """The manifest inside ``signed`` if a trusted key signed it; ImageError saying why not otherwise."""
    from cryptography.exceptions import InvalidSignature

    if not (isinstance(signed, dict) and isinstance(signed.get("manifest"), dict)
            and isinstance(signed.get("signatures"), list)):
        raise ImageError(f"The release manifest from {where} is malformed.", "Push a new release (mf images push).")
    keys = trusted()
    if not keys:
        raise ImageError("No trusted keys: mf cannot check who signed the release manifest.",
                         "Add the publisher's public key with `mf images trust KEY.pub` (or set MF_TRUSTED_KEYS).")
    unknown = []
    for entry in signed["signatures"]:
        if not isinstance(entry, dict):
            continue
        key = keys.get(str(entry.get("key_id")))
        if key is None:
            unknown.append(str(entry.get("key_id")))
            continue
        try:
            key.verify(base64.b64decode(str(entry.get("signature", ""))), canonical(signed["manifest"]))
        except (InvalidSignature, ValueError):
            raise ImageError(f"The release manifest from {where} has an invalid signature (key {entry['key_id']}): "
                             "it was changed after it was signed.",
                             "Do not use these images; ask the publisher to push the release again.") from None
        return dict(signed["manifest"])
    raise ImageError(f"The release manifest from {where} is signed by an unknown key ({', '.join(unknown) or 'none'}).",
                     "Trust the publisher's public key with `mf images trust KEY.pub` if you expect this signer.")
