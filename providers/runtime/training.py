"""The shared train action: config schema, dataset checks, LoRA fine-tuning with trl, outputs
and resume. Providers plug in through two hooks: ``load_model``/``load_tokenizer`` (the protocol)
and ``prepare_for_training`` (wrapping the model with LoRA).

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
import shutil
import signal
import struct
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigurationError, InterruptedJobError

MANIFEST = "manifest.json"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors")
#: where a checkpoint is written before it is renamed into checkpoints/ whole
STAGING_DIR = ".staging"


class TrainConfig(BaseModel):
    """Every hyperparameter of a LoRA fine-tuning run."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(default=1.0, gt=0, le=1000)
    max_steps: int = Field(default=-1, ge=-1, description="-1: run for `epochs`")
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    batch_size: int = Field(default=4, ge=1, le=4096)
    gradient_accumulation: int = Field(default=1, ge=1, le=4096)
    lora_r: int = Field(default=8, ge=1, le=1024)
    lora_alpha: float = Field(default=16, gt=0, le=4096)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    max_seq_length: int = Field(default=512, ge=8, le=131072)
    eval_split: float = Field(default=0.0, ge=0, lt=1)
    seed: int = Field(default=42, ge=0)
    save_steps: int = Field(default=50, ge=1)
    logging_steps: int = Field(default=1, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    @classmethod
    def parse(cls, data: dict[str, Any] | None, source: str = "train config") -> TrainConfig:
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ConfigurationError(f"{source}: {where}: {first['msg']}", "Fix that field and run again.") from None

    def lora(self) -> dict[str, Any]:
        return {"r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                "target_modules": self.target_modules}


@dataclass(frozen=True)
class DatasetSummary:
    format: Literal["prompt_completion", "text", "messages"]
    records: int
    sha256: str


def _record_format(record: dict[str, Any]) -> str | None:
    if "messages" in record:
        return "messages"
    if "prompt" in record or "completion" in record:
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


def _check_record(record: Any, fmt: str, where: str) -> None:
    def bad(why: str) -> ConfigurationError:
        return ConfigurationError(f"{where}: {why}", "Fix that line of the dataset and run again.")

    if not isinstance(record, dict):
        raise bad("a record must be a JSON object")
    if fmt == "prompt_completion":
        for key in ("prompt", "completion"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise bad(f"missing or empty {key!r} (records are {{\"prompt\", \"completion\"}})")
    elif fmt == "text":
        if not isinstance(record.get("text"), str) or not record["text"]:
            raise bad("missing or empty 'text' (records are {\"text\"})")
    else:
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad("'messages' must be a non-empty list")
        for i, msg in enumerate(messages):
            if not (isinstance(msg, dict) and isinstance(msg.get("role"), str) and isinstance(msg.get("content"), str)):
                raise bad(f"messages[{i}] needs a string 'role' and 'content'")


def load_dataset_records(path: Path) -> tuple[DatasetSummary, list[dict[str, Any]]]:
    """Read and check a JSONL dataset; a bad line is reported with its number, before any training."""
    if not path.is_file():
        raise ConfigurationError(f"Dataset not found: {path}", "Check the --dataset path.")
    digest = hashlib.sha256()
    records: list[dict[str, Any]] = []
    fmt: str | None = None
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            digest.update(raw)
            if not raw.strip():
                continue
            where = f"{path.name} line {lineno}"
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                raise ConfigurationError(f"{where}: not valid JSON ({why})",
                                         "Fix that line of the dataset and run again.") from None
            if fmt is None:
                fmt = _record_format(record) if isinstance(record, dict) else None
                if fmt is None:
                    raise ConfigurationError(
                        f"{where}: a record needs 'prompt' and 'completion', 'text', or 'messages'",
                        "Fix that line of the dataset and run again.",
                    )
            _check_record(record, fmt, where)
            records.append(record)
    if not records or fmt is None:
        raise ConfigurationError(f"Dataset {path.name} is empty.", "Add at least one JSON record per line.")
    return DatasetSummary(fmt, len(records), digest.hexdigest()), records  # type: ignore[arg-type]


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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush a freshly written folder's files to disk before it is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_training(provider: Any, job: Any, events: Any) -> dict[str, Any]:
    """Fine-tune ``job.model`` with LoRA on ``job.options['dataset']``; write the adapter to ``job.output_dir``."""
    if not job.output_dir:
        raise ConfigurationError("Training needs an output folder.", "Pass --output DIR.")
    output = Path(job.output_dir)
    options = job.options
    config = TrainConfig.parse(options.get("train"))
    resume = bool(options.get("resume"))
    skipped: list[str] = []
    checkpoint = check_output_folder(output, resume=resume, overwrite=bool(options.get("overwrite")), skipped=skipped)
    for reason in skipped:
        events.log(f"skipped {reason}; resuming from the newest whole checkpoint", "warning")
    if not resume:
        for leftover in (output / CHECKPOINTS_DIR, output / ADAPTER_DIR, output / MANIFEST):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()
    shutil.rmtree(output / CHECKPOINTS_DIR / STAGING_DIR, ignore_errors=True)  # a save cut off last time
    summary, records = load_dataset_records(Path(options["dataset"]))
    events.stage("dataset", f"{summary.records} records ({summary.format})")

    # The model loads before trl is imported: Unsloth must patch transformers and trl first.
    events.stage("load", f"loading {job.model}")
    load_kwargs = provider.training_load_kwargs(config) if hasattr(provider, "training_load_kwargs") else {}
    model = provider.load_model(job.model, job.model_class, quantization_config=job.quantization_config,
                                device_map=job.device_map, **load_kwargs)
    tokenizer = provider.load_tokenizer(job.model, padding_side="right")

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    if summary.format == "messages":
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigurationError("The dataset holds chat messages, but the model's tokenizer has no chat template.",
                                     "Use {\"text\"} or {\"prompt\", \"completion\"} records for this model.")
        records = [{"text": tokenizer.apply_chat_template(r["messages"], tokenize=False)} for r in records]
    dataset = Dataset.from_list(records)
    eval_dataset = None
    if config.eval_split > 0 and len(dataset) > 1:
        split = dataset.train_test_split(test_size=config.eval_split, seed=config.seed)
        dataset, eval_dataset = split["train"], split["test"]
    model = provider.prepare_for_training(model, config.lora())

    stop_requested = {"flag": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop_requested["flag"] = True

    class EventsCallback(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.first_step: int | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" not in logs:
                return
            if self.first_step is None:
                self.first_step = state.global_step - 1
            elapsed = time.perf_counter() - self.started
            rate = (state.global_step - self.first_step) / elapsed if elapsed > 0 else 0.0
            events.metric("loss", float(logs["loss"]), step=state.global_step)
            events.progress(
                state.global_step, state.max_steps, "steps",
                f"loss={logs['loss']:.4f} lr={logs.get('learning_rate', 0):.2e} {rate:.2f} steps/s",
            )

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if stop_requested["flag"]:
                control.should_save = True
                control.should_training_stop = True
            return control

    sft = SFTConfig(
        output_dir=str(output / CHECKPOINTS_DIR),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        max_length=config.max_seq_length,
        seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        logging_steps=config.logging_steps,
        eval_strategy="epoch" if eval_dataset is not None else "no",
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        report_to=[],
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    class AtomicCheckpointTrainer(SFTTrainer):  # type: ignore[misc]
        """Writes each checkpoint under checkpoints/.staging/, flushed to disk, then renames it into
        place: a save cut off by a crash or a full disk never looks like a whole checkpoint."""

        _mf_staging = False

        def _get_output_dir(self, trial: Any) -> str:
            run_dir = str(super()._get_output_dir(trial))
            return os.path.join(run_dir, STAGING_DIR) if self._mf_staging else run_dir

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            self._mf_staging = True
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._mf_staging = False
            name = f"checkpoint-{self.state.global_step}"
            staged = output / CHECKPOINTS_DIR / STAGING_DIR / name
            _fsync_tree(staged)
            final = output / CHECKPOINTS_DIR / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            _fsync_dir(final.parent)

    trainer = AtomicCheckpointTrainer(model=model, args=sft, train_dataset=dataset, eval_dataset=eval_dataset,
                         processing_class=tokenizer, callbacks=[EventsCallback()])
    skipped_note = f" (skipped {'; '.join(skipped)})" if skipped else ""
    events.stage("train", f"resuming from {checkpoint.name}{skipped_note}" if checkpoint else "LoRA fine-tuning")
    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        outcome = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stop_requested["flag"]:
        saved = last_complete_checkpoint(output)
        raise InterruptedJobError(
            f"Training stopped at step {trainer.state.global_step}"
            + (f"; {saved.name} is saved" if saved else ""),
            "Run the same command with --resume to continue.",
        )

    events.stage("save", "writing the adapter")
    partial = output / f".{ADAPTER_DIR}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    trainer.model.save_pretrained(str(partial), safe_serialization=True)
    tokenizer.save_pretrained(str(partial))
    for item in partial.rglob("*"):  # readable by the jobs that use it next (export, load), whoever owns it then
        item.chmod(0o755 if item.is_dir() else 0o644)
    final = output / ADAPTER_DIR
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    metrics = {k: v for k, v in outcome.metrics.items() if isinstance(v, int | float)}
    metrics["global_step"] = trainer.state.global_step
    import peft
    import transformers
    import trl

    manifest = {
        "image": os.environ.get("MF_IMAGE"),
        "lock_hash": os.environ.get("MF_LOCK_HASH"),
        "provider": job.provider,
        "model": job.model,
        "model_source": options.get("model_source"),
        "dataset": {"path": options["dataset"], "sha256": summary.sha256, "records": summary.records,
                    "format": summary.format},
        "config": config.model_dump(),
        "resumed_from": checkpoint.name if checkpoint else None,
        "skipped_checkpoints": skipped,
        "adapter_files": {f.name: sha256_file(f) for f in sorted(final.iterdir()) if f.is_file()},
        "metrics": metrics,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "trl": trl.__version__},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _atomic_json(output / MANIFEST, manifest)
    return {"adapter": str(output / ADAPTER_DIR), "steps": trainer.state.global_step,
            "train_loss": metrics.get("train_loss"), "train_runtime": metrics.get("train_runtime"),
            "train_steps_per_second": metrics.get("train_steps_per_second"),
            "resumed_from": manifest["resumed_from"]}
