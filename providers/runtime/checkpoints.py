"""A training run's output folder: its checkpoints (whole or not), the guard against clobbering a
finished run, the space a run will need, and the atomic file helpers that write it.

Output folder layout (a run is finished only when ``manifest.json`` exists):
    checkpoints/checkpoint-N/   trainer checkpoints, every ``save_steps``; ``--resume`` continues from the last complete one
    adapter/                    the final LoRA adapter (safetensors) and tokenizer, moved into place whole
    manifest.json               written last, atomically: image, lock hash, model, dataset hash, config, metrics
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .train_config import TrainConfig

MANIFEST = "manifest.json"
#: one JSON line per trainer log (step, epoch, loss, learning rate, grad norm, eval figures): what `mf runs show`
#: draws and any script can read
METRICS = "metrics.jsonl"
#: TensorBoard's event files, written by the trainer's own TensorBoard callback (tensorboardX in the image)
LOGS_DIR = "logs"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors")
#: where a checkpoint is written before it is renamed into checkpoints/ whole
STAGING_DIR = ".staging"


def finished_run(output: Path) -> bool:
    return (output / MANIFEST).is_file()


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (header unreadable, or shorter than its header says), or None."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            (length,) = struct.unpack("<Q", raw)
            if length > size - 8:
                return f"{path.name} is truncated (its header needs {length} bytes, the file has {size})"
            header = json.loads(fh.read(length))
    except (OSError, ValueError) as exc:
        return f"{path.name} is unreadable ({type(exc).__name__})"
    if not isinstance(header, dict):
        return f"{path.name} has a malformed header"
    ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    need = 8 + length + max(ends, default=0)
    if need > size:
        return f"{path.name} is truncated (its tensors need {need} bytes, the file has {size})"
    return None


def _zip_problem(path: Path) -> str | None:
    """torch.save writes a zip archive: a cut-off one has no readable central directory."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{path.name} is truncated or corrupt ({type(exc).__name__})"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole checkpoint to resume from (files missing, cut off or unreadable), or None."""
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file():
            return f"{name} is missing"
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return "trainer_state.json is unreadable"
    ranks = sorted(int(f.stem.rsplit("_", 1)[1]) for f in folder.glob("rng_state_*.pth")
                   if f.stem.rsplit("_", 1)[1].isdigit())
    if ranks and ranks != list(range(len(ranks))):  # a checkpoint of several ranks holds each one's state
        missing = sorted(set(range(max(ranks) + 1)) - set(ranks))
        return f"rng_state_{missing[0]}.pth is missing (ranks {ranks} saved theirs)"
    for weights in folder.glob("*.safetensors"):
        if problem := _safetensors_problem(weights):
            return problem
    for archive in (folder / "optimizer.pt", folder / "scheduler.pt"):
        if archive.exists() and (problem := _zip_problem(archive)):
            return problem
    return None


def checkpoints_newest_first(output: Path) -> list[Path]:
    folder = output / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def last_complete_checkpoint(output: Path, skipped: list[str] | None = None) -> Path | None:
    """The newest checkpoint that is whole; each newer one that is not goes into ``skipped`` with why."""
    for candidate in checkpoints_newest_first(output):
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate
        if skipped is not None:
            skipped.append(f"{candidate.name}: {problem}")
    return None


def check_output_folder(output: Path, *, resume: bool, overwrite: bool,
                        skipped: list[str] | None = None) -> Path | None:
    """Refuse to clobber a finished run; with ``resume``, return the checkpoint to continue from."""
    if finished_run(output) and not overwrite:
        raise ConfigurationError(f"{output} already holds a finished run.",
                                 "Pick another --output folder, or pass --overwrite to replace it.")
    if not resume:
        return None
    reasons: list[str] = [] if skipped is None else skipped
    checkpoint = last_complete_checkpoint(output, reasons)
    if checkpoint is None:
        why = f" ({'; '.join(reasons)})" if reasons else ""
        raise ConfigurationError(f"--resume found no complete checkpoint in {output}{why}.",
                                 "Run without --resume to start over.")
    return checkpoint


def _linear_shapes(config: dict[str, Any]) -> list[tuple[int, int]] | None:
    """(in, out) of each linear layer a decoder block has, from a transformers config.json."""
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    try:
        hidden = int(text["hidden_size"])
        inter = int(text.get("intermediate_size") or 4 * hidden)
        layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
        kv = int(text.get("num_key_value_heads") or heads) * int(text.get("head_dim") or hidden // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    block = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, inter), (hidden, inter),
             (inter, hidden)]
    return block * layers


def estimate_training_bytes(model_dir: Path | None, config: TrainConfig, records: int) -> dict[str, int]:
    """What a run writes to its output folder, estimated before it starts: every checkpoint it will
    keep (LoRA weights, Adam's two moments, tokenizer files) plus the final adapter."""
    model_config: dict[str, Any] = {}
    tokenizer_bytes = 0
    weights_bytes = 0
    if model_dir is not None and model_dir.is_dir():
        with contextlib.suppress(OSError, ValueError):
            model_config = json.loads((model_dir / "config.json").read_text())
        for item in model_dir.iterdir():
            if item.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
                tokenizer_bytes += item.stat().st_size
            elif item.suffix in (".safetensors", ".bin"):
                weights_bytes += item.stat().st_size
    shapes = _linear_shapes(model_config)
    if shapes is not None:  # all-linear; named target modules are a subset, so this is an upper bound
        lora_params = sum(config.lora_r * (i + o) for i, o in shapes)
    else:
        lora_params = weights_bytes // 4 // 50  # no config to read: assume 2% of the model's parameters
    adapter = lora_params * 4 + tokenizer_bytes + 64 * 1024
    checkpoint = lora_params * 4 * 3 + tokenizer_bytes + 256 * 1024  # weights + Adam moments + state files
    if config.max_steps > 0:
        steps = config.max_steps
    else:
        per_epoch = max(1, math.ceil(records * (1 - config.eval_split) / (config.batch_size * config.gradient_accumulation)))
        steps = math.ceil(per_epoch * config.epochs)
    saves = steps // config.save_steps + 1  # every save_steps, and one more when the run stops or ends
    return {"adapter": adapter, "checkpoint": checkpoint, "checkpoints": saves, "total": saves * checkpoint + adapter}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush a freshly written folder's files to disk before it is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)


def atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
