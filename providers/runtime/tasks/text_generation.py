"""Text generation, supervised (``sft``; ``qlora`` is the same on a quantized base): a causal LM learns
completions with TRL's ``SFTTrainer``. Records: {"prompt", "completion"}, {"text"} or {"messages"}."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigurationError
from .base import RecordError, TrainContext, TrainingRecipe, is_encoder_decoder, model_name, nonempty_string


class TextGenerationSFT(TrainingRecipe):
    task = "text-generation"
    objective = "sft"
    model_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    record_hint = '{"prompt", "completion"}, {"text"} or {"messages"}'

    def record_format(self, record: dict[str, Any]) -> str | None:
        if "messages" in record:
            return "messages"
        if "prompt" in record or "completion" in record:
            return "prompt_completion"
        if "text" in record:
            return "text"
        return None

    def check_record(self, record: dict[str, Any], fmt: str) -> None:
        if fmt == "prompt_completion":
            for key in ("prompt", "completion"):
                nonempty_string(record, key, '{"prompt", "completion"}')
        elif fmt == "text":
            nonempty_string(record, "text", '{"text"}')
        else:
            check_messages(record.get("messages"), "messages")

    def fits_model(self, config_json: dict[str, Any]) -> str | None:
        if is_encoder_decoder(config_json):
            return (f"{model_name(config_json)} is an encoder-decoder model; text-generation trains causal LMs "
                    "(train it with task summarization)")
        return None

    def prepare_records(self, records: list[dict[str, Any]], fmt: str, tokenizer: Any) -> list[dict[str, Any]]:
        if fmt != "messages":
            return records
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigurationError("The dataset holds chat messages, but the model's tokenizer has no chat template.",
                                     "Use {\"text\"} or {\"prompt\", \"completion\"} records for this model.")
        return [{"text": tokenizer.apply_chat_template(r["messages"], tokenize=False)} for r in records]

    def build_trainer(self, ctx: TrainContext) -> Any:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        cfg = ctx.config
        args = SFTConfig(**ctx.args, max_length=cfg.max_seq_length)
        return ctx.atomic(SFTTrainer)(
            model=ctx.model, args=args, train_dataset=Dataset.from_list(ctx.train_records),
            eval_dataset=Dataset.from_list(ctx.eval_records) if ctx.eval_records else None,
            processing_class=ctx.tokenizer, callbacks=ctx.callbacks,
        )


def check_messages(messages: Any, key: str) -> None:
    """A chat: a non-empty list of {"role", "content"} strings."""
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"{key!r} must be a non-empty list of messages")
    for i, msg in enumerate(messages):
        if not (isinstance(msg, dict) and isinstance(msg.get("role"), str) and isinstance(msg.get("content"), str)):
            raise RecordError(f"{key}[{i}] needs a string 'role' and 'content'")
