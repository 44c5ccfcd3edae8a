"""The train config and the dataset checks: what a training run is asked to do, read and checked on
the host (``orchestrator/checks.py``) and again in the image, before any ML library is imported."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigurationError

TASKS = ("text-generation", "summarization", "question-answering")
STRATEGIES = ("sft", "qlora", "dpo", "rlhf")
#: the model class each task trains
TASK_MODEL_CLASS = {
    "text-generation": "AutoModelForCausalLM",
    "summarization": "AutoModelForSeq2SeqLM",
    "question-answering": "AutoModelForQuestionAnswering",
}
#: which strategies make sense for each task (a provider may support fewer: ``training_tasks``)
TASK_STRATEGIES = {
    "text-generation": ("sft", "qlora", "dpo", "rlhf"),
    "summarization": ("sft", "qlora"),
    "question-answering": ("sft",),
}


class TrainConfig(BaseModel):
    """Every hyperparameter of a LoRA fine-tuning run: what it trains (``task``), how (``strategy``:
    LoRA ``sft``, ``qlora`` on a 4-bit base, ``dpo`` on preference pairs; ``rlhf`` is ModelForge's name
    for DPO), and the knobs of each."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["text-generation", "summarization", "question-answering"] = "text-generation"
    strategy: Literal["sft", "qlora", "dpo", "rlhf"] = "sft"
    #: the base model's weights: ``None`` is nf4 for qlora and full precision otherwise
    quantization: Literal["none", "nf4", "fp4", "int8"] | None = None
    double_quant: bool = Field(default=True, description="4-bit: quantize the quantization constants too")
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
    eval_steps: int | None = Field(default=None, ge=1, description="evaluate every N steps (default: each epoch)")
    #: None: on for causal LMs (TRL's default) and quantized bases, off for encoder models
    gradient_checkpointing: bool | None = None
    # DPO
    beta: float = Field(default=0.1, gt=0, le=100)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = "sigmoid"
    max_prompt_length: int | None = Field(default=None, ge=1)
    # summarization
    max_target_length: int = Field(default=128, ge=1, le=131072)
    # extractive question answering
    doc_stride: int = Field(default=128, ge=1)
    max_answer_length: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _cell_makes_sense(self) -> TrainConfig:
        if self.strategy not in TASK_STRATEGIES[self.task]:
            raise ValueError(f"{self.task} trains with {' or '.join(TASK_STRATEGIES[self.task])}, not {self.strategy}")
        if self.quantization not in (None, "none") and self.task == "question-answering":
            raise ValueError("question-answering models train unquantized; drop 'quantization'")
        if self.task == "question-answering" and self.doc_stride >= self.max_seq_length:
            raise ValueError(f"doc_stride ({self.doc_stride}) must be smaller than max_seq_length "
                             f"({self.max_seq_length}): windows overlap by doc_stride tokens")
        if self.strategy == "qlora" and self.quantization == "none":
            raise ValueError("qlora trains on a quantized base; drop quantization: none, or use strategy sft")
        return self

    @property
    def objective(self) -> Literal["sft", "dpo"]:
        """What the loss is: supervised (sft, qlora) or preference pairs (dpo, rlhf)."""
        return "dpo" if self.strategy in ("dpo", "rlhf") else "sft"

    @property
    def quant(self) -> Literal["nf4", "fp4", "int8"] | None:
        """The base model's quantization, or None for full precision."""
        if self.quantization in ("nf4", "fp4", "int8"):
            return self.quantization
        return "nf4" if self.strategy == "qlora" else None

    @property
    def model_class(self) -> str:
        return TASK_MODEL_CLASS[self.task]

    @classmethod
    def parse(cls, data: dict[str, Any] | None, source: str = "train config") -> TrainConfig:
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigurationError(f"{source}: {where + ': ' if where else ''}{msg}",
                                     "Fix that field and run again.") from None

    def lora(self) -> dict[str, Any]:
        return {"r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                "target_modules": self.target_modules}


@dataclass(frozen=True)
class DatasetSummary:
    #: the record shape, as the task's recipe names it (prompt_completion, text, messages, preference, ...)
    format: str
    records: int
    sha256: str


def load_dataset_records(path: Path, config: TrainConfig | None = None) -> tuple[DatasetSummary, list[dict[str, Any]]]:
    """Read and check a JSONL dataset for the config's task and strategy (``tasks/``); a bad line is reported
    with its number, before any training."""
    from .tasks import RecordError, recipe_for

    recipe = recipe_for(config or TrainConfig())
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
            if not isinstance(record, dict):
                raise ConfigurationError(f"{where}: a record must be a JSON object",
                                         "Fix that line of the dataset and run again.")
            if fmt is None:
                fmt = recipe.record_format(record)
                if fmt is None:
                    what = f"{recipe.task} with {config.strategy}" if config and config.objective == "dpo" \
                        else recipe.task
                    raise ConfigurationError(f"{where}: {what} records are {recipe.record_hint}",
                                             "Fix that line of the dataset, or pick the --task/--strategy it is for.")
            try:
                recipe.check_record(record, fmt)
            except RecordError as exc:
                raise ConfigurationError(f"{where}: {exc}", "Fix that line of the dataset and run again.") from None
            records.append(record)
    if not records or fmt is None:
        raise ConfigurationError(f"Dataset {path.name} is empty.", "Add at least one JSON record per line.")
    return DatasetSummary(fmt, len(records), digest.hexdigest()), records
