"""Text generation from preference pairs (``dpo``; ``rlhf`` is ModelForge's name for it): TRL's
``DPOTrainer`` with the LoRA adapter as the policy and the same model with the adapter disabled as the
reference, so no second copy of the model is loaded. Records: {"prompt", "chosen", "rejected"}, each a
string, or each a list of chat messages."""

from __future__ import annotations

from typing import Any

from .base import RecordError, TrainContext, TrainingRecipe, nonempty_string
from .text_generation import TextGenerationSFT, check_messages

HINT = '{"prompt", "chosen", "rejected"}'


class TextGenerationDPO(TrainingRecipe):
    task = "text-generation"
    objective = "dpo"
    model_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    record_hint = HINT
    describe = "DPO on preference pairs (the LoRA adapter is the policy; the base model is the reference)"

    def record_format(self, record: dict[str, Any]) -> str | None:
        if not any(k in record for k in ("chosen", "rejected")):
            return None
        return "preference_chat" if isinstance(record.get("chosen"), list) else "preference"

    def check_record(self, record: dict[str, Any], fmt: str) -> None:
        for key in ("prompt", "chosen", "rejected"):
            if key not in record:
                raise RecordError(f"missing {key!r} (DPO records are {HINT})")
        if fmt == "preference":
            for key in ("prompt", "chosen", "rejected"):
                nonempty_string(record, key, HINT + " strings, or lists of chat messages")
        else:
            for key in ("prompt", "chosen", "rejected"):
                check_messages(record[key], key)
        if record["chosen"] == record["rejected"]:
            raise RecordError("'chosen' and 'rejected' are the same, so the pair teaches nothing")

    def fits_model(self, config_json: dict[str, Any]) -> str | None:
        return TextGenerationSFT().fits_model(config_json)

    def prepare_records(self, records: list[dict[str, Any]], fmt: str, tokenizer: Any) -> list[dict[str, Any]]:
        records = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]
        if fmt == "preference_chat":
            from trl.data_utils import maybe_apply_chat_template

            records = [dict(maybe_apply_chat_template(r, tokenizer)) for r in records]
        return records

    def build_trainer(self, ctx: TrainContext) -> Any:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        cfg = ctx.config
        train, evals = ctx.train_records, ctx.eval_records
        if cfg.max_prompt_length:  # TRL 1.16 truncates whole sequences only: keep each prompt's last tokens
            train = [truncate_prompt(r, ctx.tokenizer, cfg.max_prompt_length) for r in train]
            evals = [truncate_prompt(r, ctx.tokenizer, cfg.max_prompt_length) for r in evals] if evals else evals
        args = DPOConfig(**ctx.args, beta=cfg.beta, loss_type=[cfg.loss_type], max_length=cfg.max_seq_length)
        return ctx.atomic(DPOTrainer)(
            model=ctx.model, ref_model=None, args=args, train_dataset=Dataset.from_list(train),
            eval_dataset=Dataset.from_list(evals) if evals else None,
            processing_class=ctx.tokenizer, callbacks=ctx.callbacks,
        )


def truncate_prompt(record: dict[str, Any], tokenizer: Any, max_tokens: int) -> dict[str, Any]:
    ids = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return record
    return {**record, "prompt": tokenizer.decode(ids[-max_tokens:])}
