"""The interface every training recipe (one task, one objective) implements, and what they share.

A recipe has two halves. The top half is pure Python and runs on the host before any container
starts (``orchestrator/checks.py``) and again in the image: which records it reads (``record_format``,
``check_record``) and which model it trains (``model_class``, ``peft_task_type``, ``fits_model``). The
bottom half imports the ML stack lazily: ``build_trainer`` turns checked records and a LoRA-wrapped
model into a ``transformers.Trainer`` (or a TRL trainer) whose ``evaluate`` reports the task's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..train_config import TrainConfig


class RecordError(ValueError):
    """A dataset record that cannot be trained on; the message says what is wrong with it."""


@dataclass
class TrainContext:
    """What ``build_trainer`` gets: the model (LoRA-wrapped), the tokenizer, the records (already split),
    and the trainer arguments every recipe shares (output folder, schedule, precision, logging)."""

    config: TrainConfig
    model: Any
    tokenizer: Any
    train_records: list[dict[str, Any]]
    eval_records: list[dict[str, Any]] | None
    args: dict[str, Any]
    callbacks: list[Any] = field(default_factory=list)
    #: wraps a trainer class so its checkpoints are written atomically (``training.atomic_checkpoints``)
    atomic: Any = None
    events: Any = None


class TrainingRecipe:
    """One cell of the task x objective table. Subclasses set the class attributes and the methods."""

    task: ClassVar[str]
    objective: ClassVar[str] = "sft"
    model_class: ClassVar[str]
    peft_task_type: ClassVar[str]
    #: what one record looks like, for error messages
    record_hint: ClassVar[str]
    #: the stage message when training starts
    describe: ClassVar[str] = "LoRA fine-tuning"
    #: LoraConfig fields the recipe adds (e.g. a head that trains whole must not also get an adapter)
    lora_extra: ClassVar[dict[str, Any]] = {}

    # -- the pure half (host and image) ---------------------------------------------------------
    def record_format(self, record: dict[str, Any]) -> str | None:
        """The format of the first record (a dataset keeps one), or None when it fits none."""
        raise NotImplementedError

    def check_record(self, record: dict[str, Any], fmt: str) -> None:
        """Raise ``RecordError`` when the record cannot be trained on."""
        raise NotImplementedError

    def fits_model(self, config_json: dict[str, Any]) -> str | None:
        """Why a model (its config.json) cannot be trained with this recipe, or None when it can."""
        return None

    # -- the ML half (image only) ---------------------------------------------------------------
    def prepare_records(self, records: list[dict[str, Any]], fmt: str, tokenizer: Any) -> list[dict[str, Any]]:
        """The records in the shape the trainer reads (e.g. chat messages through the chat template)."""
        return records

    def build_trainer(self, ctx: TrainContext) -> Any:
        raise NotImplementedError


def nonempty_string(record: dict[str, Any], key: str, hint: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"missing or empty {key!r} (records are {hint})")
    return value


def architectures(config_json: dict[str, Any]) -> list[str]:
    archs = config_json.get("architectures") or []
    return [a for a in archs if isinstance(a, str)]


def is_causal_lm(config_json: dict[str, Any]) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures(config_json))


def is_encoder_decoder(config_json: dict[str, Any]) -> bool:
    return bool(config_json.get("is_encoder_decoder"))


def model_name(config_json: dict[str, Any]) -> str:
    return (architectures(config_json) or [str(config_json.get("model_type", "this"))])[0]
