"""The shared train action: LoRA fine-tuning with trl, outputs and resume. Providers plug in through
two hooks: ``load_model``/``load_tokenizer`` (the protocol) and ``prepare_for_training`` (wrapping the
model with LoRA). The config and dataset checks are in ``train_config.py``; the output folder's layout,
checkpoints and atomic writes in ``checkpoints.py``. No ML library is imported at module level.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, InterruptedJobError
from .checkpoints import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    MANIFEST,
    STAGING_DIR,
    atomic_json,
    check_output_folder,
    fsync_dir,
    fsync_tree,
    last_complete_checkpoint,
    sha256_file,
)
from .train_config import TrainConfig, load_dataset_records


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
            fsync_tree(staged)
            final = output / CHECKPOINTS_DIR / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            fsync_dir(final.parent)

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
    atomic_json(output / MANIFEST, manifest)
    return {"adapter": str(output / ADAPTER_DIR), "steps": trainer.state.global_step,
            "train_loss": metrics.get("train_loss"), "train_runtime": metrics.get("train_runtime"),
            "train_steps_per_second": metrics.get("train_steps_per_second"),
            "resumed_from": manifest["resumed_from"]}
