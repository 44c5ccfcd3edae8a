"""Hub references (``org/repo:file``) and their resolution through the mounted HF cache."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import GatedModelError, ModelAccessError

_HUB_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<file>[^:@\s][^:@]*))?(?:@(?P<rev>[\w./-]+))?$")


#: What a transformers model needs from a hub repository (not its other formats).
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken"]
MODEL_FILE_SUFFIXES = (".gguf", ".safetensors", ".bin", ".json", ".pt", ".pth")


@dataclass(frozen=True)
class HubReference:
    repo_id: str
    filename: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        text = self.repo_id + (f":{self.filename}" if self.filename else "")
        return text + (f"@{self.revision}" if self.revision else "")


def parse_hub_reference(text: str) -> HubReference | None:
    """``org/repo``, ``org/repo:file.gguf`` or either with ``@revision``; None when ``text`` is not one."""
    if text.startswith((".", "/", "~")):
        return None
    if ":" not in text and text.lower().endswith(MODEL_FILE_SUFFIXES):
        return None  # `models/x.gguf` is a (missing) local file, not a repository
    match = _HUB_REF.match(text)
    if not match:
        return None
    return HubReference(match["repo"], match["file"], match["rev"])


def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


@contextmanager
def _hub_errors(ref: HubReference) -> Iterator[None]:
    """Turn huggingface_hub's errors into one-line ModelForge errors that say what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise GatedModelError(
            f"{ref.repo_id} is gated: your token has no access to it.",
            "Accept its terms on the model's hub page, set HF_TOKEN, and rerun with --online.",
        ) from None
    except LocalEntryNotFoundError:
        if hf_offline():
            raise ModelAccessError(
                f"{ref} is not in the HF cache and this run is offline.",
                "Add --online to download it (or copy it into the HF cache).",
            ) from None
        raise ModelAccessError(f"Cannot download {ref}: the hub cannot be reached.", "Check the network.") from None
    except RepositoryNotFoundError:
        raise ModelAccessError(f"No repository {ref.repo_id} on the hub (or it is private).",
                               "Check the repo id; for a private repo set HF_TOKEN and use --online.") from None
    except EntryNotFoundError:
        raise ModelAccessError(f"{ref.repo_id} has no file {ref.filename}.", "Check the file name.") from None


def hub_file(ref: HubReference) -> str:
    """The local path of ``ref``'s file: from the HF cache, or downloaded when the run is online."""
    if not ref.filename:
        raise ModelAccessError(f"{ref} names a repository but no file.", f"Name the file: {ref.repo_id}:FILE.gguf")
    from huggingface_hub import hf_hub_download

    with _hub_errors(ref):
        return str(hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision, local_files_only=hf_offline()))
    raise AssertionError("unreachable")


def hub_snapshot(ref: HubReference, revision: str | None = None) -> str:
    """A local folder holding ``ref``: the cached snapshot, downloaded first when the run is online."""
    if ref.filename:
        return str(Path(hub_file(ref)).parent)
    from huggingface_hub import snapshot_download

    with _hub_errors(ref):
        return str(snapshot_download(ref.repo_id, revision=ref.revision or revision, local_files_only=hf_offline(),
                                     allow_patterns=SNAPSHOT_PATTERNS))
    raise AssertionError("unreachable")
