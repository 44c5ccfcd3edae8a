"""Summarization: an encoder-decoder model (T5, BART) learns to write a summary of a document, with LoRA
(``TaskType.SEQ_2_SEQ_LM``) and transformers' ``Seq2SeqTrainer`` (TRL's SFTTrainer does not train
encoder-decoder models: T5 fails, BART learns to copy its input). Evaluation generates summaries and
scores them with ROUGE-1/2/L (torchmetrics). Records: {"document", "summary"}; ModelForge's
{"input", "output"} and {"article", "summary"} are read too."""

from __future__ import annotations

from typing import Any

from .base import TrainContext, TrainingRecipe, is_encoder_decoder, model_name, nonempty_string

#: record format -> (document key, summary key)
FORMATS = {"document": ("document", "summary"), "article": ("article", "summary"), "input": ("input", "output")}
HINT = '{"document", "summary"} (or {"article", "summary"}, {"input", "output"})'
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


class Summarization(TrainingRecipe):
    task = "summarization"
    objective = "sft"
    model_class = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    record_hint = HINT
    describe = "LoRA fine-tuning for summarization (Seq2SeqTrainer)"

    def record_format(self, record: dict[str, Any]) -> str | None:
        return next((fmt for fmt in FORMATS if fmt in record), None)

    def check_record(self, record: dict[str, Any], fmt: str) -> None:
        for key in FORMATS[fmt]:
            nonempty_string(record, key, HINT)

    def fits_model(self, config_json: dict[str, Any]) -> str | None:
        if not is_encoder_decoder(config_json):
            return (f"{model_name(config_json)} is not an encoder-decoder model; summarization trains models such as "
                    "T5 or BART (for a causal LM, use task text-generation with prompt/completion records)")
        return None

    def prepare_records(self, records: list[dict[str, Any]], fmt: str, tokenizer: Any) -> list[dict[str, Any]]:
        doc, summary = FORMATS[fmt]
        return [{"document": r[doc], "summary": r[summary]} for r in records]

    def build_trainer(self, ctx: TrainContext) -> Any:
        import numpy as np
        from datasets import Dataset
        from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

        cfg, tokenizer = ctx.config, ctx.tokenizer

        def tokenize(batch: dict[str, list[str]]) -> Any:
            inputs = tokenizer(batch["document"], max_length=cfg.max_seq_length, truncation=True)
            inputs["labels"] = tokenizer(text_target=batch["summary"], max_length=cfg.max_target_length,
                                         truncation=True)["input_ids"]
            return inputs

        def dataset(records: list[dict[str, Any]]) -> Any:
            return Dataset.from_list(records).map(tokenize, batched=True, remove_columns=["document", "summary"])

        def compute_metrics(prediction: Any) -> dict[str, float]:
            from torchmetrics.text.rouge import ROUGEScore

            preds, labels = prediction.predictions, prediction.label_ids
            if isinstance(preds, tuple):
                preds = preds[0]
            pad = tokenizer.pad_token_id
            preds = np.where(preds < 0, pad, preds)
            labels = np.where(labels < 0, pad, labels)
            texts = tokenizer.batch_decode(preds, skip_special_tokens=True)
            targets = tokenizer.batch_decode(labels, skip_special_tokens=True)
            rouge = ROUGEScore(use_stemmer=True, rouge_keys=ROUGE_KEYS)
            scores = rouge([t.strip() for t in texts], [t.strip() for t in targets])
            return {key: round(float(scores[f"{key}_fmeasure"]), 4) for key in ROUGE_KEYS}

        args = Seq2SeqTrainingArguments(**ctx.args, predict_with_generate=True,
                                        generation_max_length=cfg.max_target_length, label_names=["labels"])
        return ctx.atomic(Seq2SeqTrainer)(
            model=ctx.model, args=args, train_dataset=dataset(ctx.train_records),
            eval_dataset=dataset(ctx.eval_records) if ctx.eval_records else None,
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
            processing_class=tokenizer, callbacks=ctx.callbacks,
            compute_metrics=compute_metrics if ctx.eval_records else None,
        )
