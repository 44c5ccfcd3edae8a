"""The shared train action: LoRA fine-tuning of any task and strategy, outputs and resume.

What is trained and how is a recipe's business (``tasks/``: one module per task and objective, each
building its trainer and metrics); this module does what every recipe shares: the output folder,
loading (4-bit or 8-bit through bitsandbytes for qlora), the evaluation split, atomic checkpoints,
Ctrl-C and SIGTERM, metric events, the adapter and the manifest. Providers plug in through two hooks:
``load_model``/``load_tokenizer`` (the protocol) and ``prepare_for_training`` (wrapping the model with
LoRA). The config and dataset checks are in ``train_config.py``; the output folder's layout,
checkpoints and atomic writes in ``checkpoints.py``. No ML library is imported at module level.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ..common.cpus import TorchThreads
from ..errors import ConfigurationError, InterruptedJobError
from .checkpoints import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    LOGS_DIR,
    MANIFEST,
    METRICS,
    STAGING_DIR,
    atomic_json,
    check_output_folder,
    fsync_dir,
    fsync_tree,
    last_complete_checkpoint,
    sha256_file,
)
from .memory import MemoryWatch
from .tasks import TrainContext, recipe_for
from .train_config import TrainConfig, load_dataset_records


def is_metric(key: str) -> bool:
    """The trainer's log entries that become metric events: the loss, DPO's rewards (chosen, rejected,
    margins, accuracies) and every evaluation figure; the rest (grad norm, token counts) stays in the log."""
    if key.endswith(("_runtime", "_per_second", "num_tokens")):
        return False
    return key == "loss" or key.startswith(("eval_", "rewards/"))


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop metrics.jsonl's lines past ``step`` (a resumed run logs them again), atomically."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue  # a line cut off by a crash
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def split_records(records: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any] | None]:
    """A seeded evaluation split (at least one record each side), or None when there is none."""
    if fraction <= 0 or len(records) < 2:
        return records, None
    import random

    order = list(range(len(records)))
    random.Random(seed).shuffle(order)  # noqa: S311 - a reproducible split, not a secret
    n_eval = min(len(records) - 1, max(1, round(len(records) * fraction)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def atomic_checkpoints(trainer_cls: type, output: Path) -> type:
    """``trainer_cls`` writing each checkpoint under checkpoints/.staging/, flushed to disk, then renamed into
    place: a save cut off by a crash or a full disk never looks like a whole checkpoint."""

    class AtomicCheckpoints(trainer_cls):  # type: ignore[misc, valid-type]
        _mf_staging = False

        def _get_output_dir(self, trial: Any) -> str:
            run_dir = str(super()._get_output_dir(trial))
            return os.path.join(run_dir, STAGING_DIR) if self._mf_staging else run_dir

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            from .distributed import barrier

            self._mf_staging = True
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._mf_staging = False
            barrier()  # every rank has written its part (its rng_state_<rank>.pth) before the rename
            if self.is_world_process_zero():
                name = f"checkpoint-{self.state.global_step}"
                staged = output / CHECKPOINTS_DIR / STAGING_DIR / name
                fsync_tree(staged)
                final = output / CHECKPOINTS_DIR / name
                if final.exists():
                    shutil.rmtree(final)
                os.replace(staged, final)
                fsync_dir(final.parent)
            barrier()

    AtomicCheckpoints.__name__ = f"Atomic{trainer_cls.__name__}"
    return AtomicCheckpoints


def tensorboard_available() -> bool:
    """Whether the image has a TensorBoard writer (tensorboardX, in the huggingface and unsloth images)."""
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in ("tensorboardX", "tensorboard"))


def trainer_args(config: TrainConfig, output: Path, *, use_cpu: bool, evaluate: bool,
                 distributed: bool = False) -> dict[str, Any]:
    """The arguments every recipe's trainer takes (transformers' TrainingArguments and TRL's configs). Under
    torchrun on the CPU the backend must be named (gloo): without it every process trains alone as rank 0."""
    gradient_checkpointing = config.gradient_checkpointing
    if gradient_checkpointing is None:  # TRL's default for causal LMs; always with a quantized base
        gradient_checkpointing = config.quant is not None or config.task == "text-generation"
    # without eval_steps the held-out records are evaluated once, when training ends (run_training)
    eval_strategy = "steps" if evaluate and config.eval_steps else "no"
    return {
        "output_dir": str(output / CHECKPOINTS_DIR),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "seed": config.seed,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "logging_steps": config.logging_steps,
        "eval_strategy": eval_strategy,
        **({"eval_steps": config.eval_steps} if evaluate and config.eval_steps else {}),
        "bf16": config.precision == "bf16",  # explicit: TRL's configs default to bf16 even on the CPU
        "fp16": config.precision == "fp16",
        "gradient_checkpointing": gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if gradient_checkpointing else None,
        "report_to": ["tensorboard"] if tensorboard_available() else [],
        "disable_tqdm": True,
        "use_cpu": use_cpu,
        "dataloader_num_workers": 0,
        **({"ddp_backend": "gloo" if use_cpu else "nccl", "ddp_find_unused_parameters": False,
            "ddp_timeout": 300} if distributed else {}),
    }


def run_training(provider: Any, job: Any, events: Any) -> dict[str, Any]:
    """Fine-tune ``job.model`` with LoRA on ``job.options['dataset']``; write the adapter to ``job.output_dir``."""
    if not job.output_dir:
        raise ConfigurationError("Training needs an output folder.", "Pass --output DIR.")
    output = Path(job.output_dir)
    options = job.options
    config = TrainConfig.parse(options.get("train"))
    recipe = recipe_for(config)
    resume = bool(options.get("resume"))
    skipped: list[str] = []
    checkpoint = check_output_folder(output, resume=resume, overwrite=bool(options.get("overwrite")), skipped=skipped)
    for reason in skipped:
        events.log(f"skipped {reason}; resuming from the newest whole checkpoint", "warning")
    if not resume:
        for leftover in (output / CHECKPOINTS_DIR, output / ADAPTER_DIR, output / MANIFEST, output / METRICS,
                         output / LOGS_DIR):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)  # every rank starts here: one of them removes it
            elif leftover.exists():
                leftover.unlink(missing_ok=True)
    shutil.rmtree(output / CHECKPOINTS_DIR / STAGING_DIR, ignore_errors=True)  # a save cut off last time
    from .distributed import world as current_world

    world = current_world()
    if checkpoint is not None and world.is_main:  # the lines past the checkpoint are logged again on resume
        keep_metrics_until(output / METRICS, int(checkpoint.name.rsplit("-", 1)[1]))
    memory = MemoryWatch()
    summary, records = load_dataset_records(Path(options["dataset"]), config)
    events.stage("dataset", f"{summary.records} records ({summary.format}) for {config.task}")
    if config.strategy == "rlhf":
        events.log("strategy rlhf runs DPO (direct preference optimisation) on the preference pairs")

    # The model loads before trl is imported: Unsloth must patch transformers and trl first.
    quantization_config = job.quantization_config
    if config.quant:
        from .tasks.quantized import bnb_config, cpu_backend_note

        quantization_config = bnb_config(config.quant, config.precision, config.double_quant)
        note = cpu_backend_note()
        if note:
            events.log(note, "warning")
    events.stage("load", f"loading {job.model} as {recipe.model_class}")
    load_kwargs = provider.training_load_kwargs(config) if hasattr(provider, "training_load_kwargs") else {}
    device_map: Any = job.device_map
    if world.distributed:  # each rank holds a whole copy: on its own GPU (the local rank), or the CPU
        device_map = {"": world.local_rank} if job.device_map != "cpu" else "cpu"
    model = provider.load_model(job.model, recipe.model_class, quantization_config=quantization_config,
                                device_map=device_map, **load_kwargs)
    tokenizer = provider.load_tokenizer(job.model, padding_side="right")
    quantized: dict[str, Any] | None = None
    if config.quant:
        from .tasks.quantized import describe, quantized_layers

        quantized = {"type": config.quant, "layers": quantized_layers(model)}
        layers = ", ".join(f"{n} {name}" for name, n in quantized["layers"].items()) or "no quantized layers"
        events.stage("quantize", f"base weights {describe(config.quant)}: {layers}")

    import torch
    from transformers import TrainerCallback

    records = recipe.prepare_records(records, summary.format, tokenizer)
    train_records, eval_records = split_records(records, config.eval_split, config.seed)
    from transformers import set_seed

    set_seed(config.seed)  # the adapter's initial weights come from the seed too, not from what ran before
    model = provider.prepare_for_training(model, {**config.lora(), "task_type": recipe.peft_task_type, **recipe.lora_extra})

    stop_requested = {"flag": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop_requested["flag"] = True

    class EventsCallback(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.metrics_file: Any = None
            self.started = time.perf_counter()
            self.first_step: int | None = None
            self.last_eval: dict[str, float] = {}
            self.last_eval_step = -1

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            logs = logs or {}
            if state.is_world_process_zero:
                self.write_metrics(state, logs)
            for key, value in logs.items():
                if is_metric(key) and isinstance(value, int | float):
                    events.metric(key, float(value), step=state.global_step)
                    if key.startswith("eval_"):
                        self.last_eval[key] = float(value)
                        self.last_eval_step = state.global_step
            if "loss" not in logs:
                return
            if self.first_step is None:
                self.first_step = state.global_step - 1
            elapsed = time.perf_counter() - self.started
            rate = (state.global_step - self.first_step) / elapsed if elapsed > 0 else 0.0
            events.progress(
                state.global_step, state.max_steps, "steps",
                f"loss={logs['loss']:.4f} lr={logs.get('learning_rate', 0):.2e} {rate:.2f} steps/s",
            )

        def write_metrics(self, state: Any, logs: dict[str, Any]) -> None:
            row = {"step": state.global_step, "epoch": round(float(state.epoch or 0), 4),
                   **{k: v for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}}
            if self.metrics_file is None:
                self.metrics_file = (output / METRICS).open("a", encoding="utf-8")
            self.metrics_file.write(json.dumps(row) + "\n")
            self.metrics_file.flush()  # a reader (mf runs show, a plot) sees each line as it is logged

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.metrics_file is not None:
                self.metrics_file.close()
                self.metrics_file = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            fit_threads()

        def on_substep_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            fit_threads()  # between accumulated micro-batches

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if world.distributed:  # every rank stops at the same step, or the others wait in a collective
                from .distributed import stop_agreed

                stop_requested["flag"] = stop_agreed(stop_requested["flag"])
            if stop_requested["flag"]:
                control.should_save = True
                control.should_training_stop = True
            return control

    on_cpu = getattr(getattr(model, "device", None), "type", "cpu") == "cpu"
    threads = getattr(provider, "cpu_threads", None) or TorchThreads()

    def fit_threads() -> None:  # as many threads as the CPUs give now (common.cpus); ranks keep their share
        threads.fit(on_cpu=on_cpu)

    callback = EventsCallback()
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(output / LOGS_DIR)  # the trainer's TensorBoard callback writes there
    ctx = TrainContext(config=config, model=model, tokenizer=tokenizer, train_records=train_records,
                       eval_records=eval_records, callbacks=[callback], events=events,
                       args=trainer_args(config, output, evaluate=eval_records is not None, distributed=world.distributed,
                                         use_cpu=job.device_map == "cpu" or not torch.cuda.is_available()),
                       atomic=lambda cls: atomic_checkpoints(cls, output))
    trainer = recipe.build_trainer(ctx)
    if trainer.args.world_size != world.size:
        raise ConfigurationError(
            f"torchrun started {world.size} ranks, but the trainer sees a world of {trainer.args.world_size}: "
            "its gradients would not be synchronised.", "This is a bug in how the job was launched; report it.")
    if world.distributed:
        events.stage("distributed", f"{world.size} ranks ({world.local_size} per node, {world.nodes} node"
                     f"{'s' if world.nodes > 1 else ''}), {trainer.args.ddp_backend or 'nccl'}")
    if checkpoint is not None:
        saved_by = len(list(checkpoint.glob("rng_state_*.pth"))) or 1
        if saved_by != world.size:
            events.log(f"{checkpoint.name} was written by {saved_by} rank(s) and resumes on {world.size}: "
                       "the weights and optimizer carry over, the data order from here differs", "warning")
    skipped_note = f" (skipped {'; '.join(skipped)})" if skipped else ""
    held_out = f", {len(eval_records)} records held out for evaluation" if eval_records else ""
    events.stage("train", f"resuming from {checkpoint.name}{skipped_note}" if checkpoint
                 else f"{recipe.describe}, {config.strategy}{held_out}")
    previous = signal.signal(signal.SIGTERM, request_stop)
    memory.training = True
    try:
        outcome = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
        memory.training = False
    if stop_requested["flag"]:
        saved = last_complete_checkpoint(output)
        raise InterruptedJobError(
            f"Training stopped at step {trainer.state.global_step}"
            + (f"; {saved.name} is saved" if saved else ""),
            "Run the same command with --resume to continue.",
        )
    metrics = {k: v for k, v in outcome.metrics.items() if isinstance(v, int | float)}
    if eval_records and callback.last_eval_step == trainer.state.global_step:
        metrics.update(callback.last_eval)  # eval_steps already evaluated the final weights
    elif eval_records:
        events.stage("evaluate", f"{len(eval_records)} held-out records")
        metrics.update({k: v for k, v in trainer.evaluate().items() if isinstance(v, int | float)})

    if not world.is_main:  # rank 0 writes the adapter and the manifest; the others are done
        return {"rank": world.rank, "steps": trainer.state.global_step}
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
    metrics["global_step"] = trainer.state.global_step
    metrics.update(memory.stop())
    import peft
    import transformers
    import trl

    manifest = {
        "image": os.environ.get("MF_IMAGE"),
        "lock_hash": os.environ.get("MF_LOCK_HASH"),
        "provider": job.provider,
        "model": job.model,
        "model_source": options.get("model_source"),
        "model_class": recipe.model_class,
        "task": config.task,
        "strategy": config.strategy,
        "quantization": quantized,
        "dataset": {"path": options["dataset"], "sha256": summary.sha256, "records": summary.records,
                    "format": summary.format, "eval_records": len(eval_records) if eval_records else 0},
        "config": config.model_dump(),
        "resumed_from": checkpoint.name if checkpoint else None,
        "skipped_checkpoints": skipped,
        "distributed": world.describe(),
        "adapter_files": {f.name: sha256_file(f) for f in sorted(final.iterdir()) if f.is_file()},
        "metrics": metrics,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "trl": trl.__version__},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_json(output / MANIFEST, manifest)
    result = {"adapter": str(output / ADAPTER_DIR), "task": config.task, "strategy": config.strategy,
              "steps": trainer.state.global_step, "train_loss": metrics.get("train_loss"),
              "train_runtime": metrics.get("train_runtime"),
              "train_steps_per_second": metrics.get("train_steps_per_second"),
              "resumed_from": manifest["resumed_from"], **world.describe()}
    if quantized:
        result["quantized_layers"] = sum(quantized["layers"].values())
    result.update({k: v for k, v in metrics.items() if k.endswith("_bytes")})
    result.update({k: v for k, v in metrics.items() if k.startswith("eval_")})
    return result
