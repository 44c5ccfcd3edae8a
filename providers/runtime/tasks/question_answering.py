"""Extractive question answering: an encoder (BERT-style) learns to point at the answer's span in a
context, with LoRA (``TaskType.QUESTION_ANS``: peft trains and saves ``qa_outputs`` whole) and
transformers' ``Trainer``. Long contexts are cut into overlapping windows (``doc_stride``) as SQuAD's
reference preprocessing does; a window that does not hold the answer is labelled with the CLS token.
Evaluation picks the best span per question across its windows and scores exact match and F1 with
SQuAD's normalisation (torchmetrics). Records: {"context", "question", "answers": {"text": [...],
"answer_start": [...]}}; ModelForge's {"context", "question", "answer"} is read too."""

from __future__ import annotations

from typing import Any

from .base import RecordError, TrainContext, TrainingRecipe, is_causal_lm, is_encoder_decoder, model_name, nonempty_string

HINT = '{"context", "question", "answers": {"text": [...], "answer_start": [...]}} (or "answer": "...")'


def answer_spans(record: dict[str, Any]) -> list[tuple[str, int]]:
    """The (text, start) of each answer; a plain "answer" string is looked up in the context."""
    context = record["context"]
    if "answers" not in record:
        text = record["answer"]
        start = context.find(text)
        if start < 0:
            raise RecordError(f"the answer {text!r} does not occur in the context")
        return [(text, start)]
    answers = record["answers"]
    if not isinstance(answers, dict) or not isinstance(answers.get("text"), list) \
            or not isinstance(answers.get("answer_start"), list):
        raise RecordError("'answers' must be {\"text\": [...], \"answer_start\": [...]}")
    texts, starts = answers["text"], answers["answer_start"]
    if not texts or len(texts) != len(starts):
        raise RecordError("'answers' needs as many answer_start values as texts, and at least one")
    spans = []
    for text, start in zip(texts, starts, strict=True):
        if not isinstance(text, str) or not text or not isinstance(start, int) or isinstance(start, bool):
            raise RecordError("each answer needs a non-empty text and an integer answer_start")
        found = context[start:start + len(text)]
        if found != text:
            raise RecordError(f"answer_start {start} does not point at {text!r} in the context (it points at "
                              f"{found!r})")
        spans.append((text, start))
    return spans


class QuestionAnswering(TrainingRecipe):
    task = "question-answering"
    objective = "sft"
    model_class = "AutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    record_hint = HINT
    describe = "LoRA fine-tuning for extractive question answering"
    #: peft trains the qa_outputs head whole (modules_to_save), so "all-linear" must leave it out
    lora_extra = {"exclude_modules": ["qa_outputs"]}

    def record_format(self, record: dict[str, Any]) -> str | None:
        if "context" in record or "question" in record:
            return "squad" if "answers" in record else "answer"
        return None

    def check_record(self, record: dict[str, Any], fmt: str) -> None:
        for key in ("context", "question"):
            nonempty_string(record, key, HINT)
        if fmt == "answer":
            nonempty_string(record, "answer", HINT)
        answer_spans(record)

    def fits_model(self, config_json: dict[str, Any]) -> str | None:
        if is_causal_lm(config_json) or is_encoder_decoder(config_json):
            return (f"{model_name(config_json)} is not an encoder model: its weights do not load into a "
                    "question-answering head (it would train from random weights); use an encoder such as BERT")
        return None

    def prepare_records(self, records: list[dict[str, Any]], fmt: str, tokenizer: Any) -> list[dict[str, Any]]:
        out = []
        for i, r in enumerate(records):
            spans = answer_spans(r)
            out.append({"id": str(i), "question": r["question"].lstrip(), "context": r["context"],
                        "answers": {"text": [t for t, _ in spans], "answer_start": [s for _, s in spans]}})
        return out

    def build_trainer(self, ctx: TrainContext) -> Any:
        from datasets import Dataset
        from transformers import Trainer, TrainingArguments, default_data_collator

        cfg, tokenizer = ctx.config, ctx.tokenizer
        max_length = min(cfg.max_seq_length, getattr(tokenizer, "model_max_length", cfg.max_seq_length) or 10**6)
        if cfg.doc_stride >= max_length:
            from ...errors import ConfigurationError

            raise ConfigurationError(f"doc_stride {cfg.doc_stride} must be smaller than max_seq_length {max_length}.",
                                     "Lower doc_stride (a quarter of max_seq_length is usual).")

        def windows(records: list[dict[str, Any]], keep_offsets: bool) -> tuple[Any, list[Any]]:
            enc = tokenizer([r["question"] for r in records], [r["context"] for r in records],
                            truncation="only_second", max_length=max_length, stride=cfg.doc_stride,
                            return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
            sample_of = enc.pop("overflow_to_sample_mapping")
            offsets = enc.pop("offset_mapping")
            starts, ends, meta = [], [], []
            for i, offset in enumerate(offsets):
                seq = enc.sequence_ids(i)
                record = records[sample_of[i]]
                cls = enc["input_ids"][i].index(tokenizer.cls_token_id) if tokenizer.cls_token_id in \
                    enc["input_ids"][i] else 0
                first = seq.index(1)
                last = len(seq) - 1 - seq[::-1].index(1)
                start_char = record["answers"]["answer_start"][0]
                end_char = start_char + len(record["answers"]["text"][0])
                if offset[first][0] > start_char or offset[last][1] < end_char:
                    starts.append(cls)  # the answer is not in this window: SQuAD labels it with CLS
                    ends.append(cls)
                else:
                    s = first
                    while s <= last and offset[s][0] <= start_char:
                        s += 1
                    e = last
                    while e >= first and offset[e][1] >= end_char:
                        e -= 1
                    starts.append(s - 1)
                    ends.append(e + 1)
                if keep_offsets:
                    meta.append((record["id"], [o if seq[k] == 1 else None for k, o in enumerate(offset)]))
            enc["start_positions"] = starts
            enc["end_positions"] = ends
            return Dataset.from_dict(dict(enc)), meta

        train_ds, _ = windows(ctx.train_records, keep_offsets=False)
        eval_ds, eval_meta = windows(ctx.eval_records, keep_offsets=True) if ctx.eval_records else (None, [])
        by_id = {r["id"]: r for r in ctx.eval_records or []}

        def compute_metrics(prediction: Any) -> dict[str, float]:
            from torchmetrics.text import SQuAD

            start_logits, end_logits = prediction.predictions[:2]
            best: dict[str, tuple[float, str]] = {}
            for k, (rid, offsets) in enumerate(eval_meta):
                context = by_id[rid]["context"]
                top_s = start_logits[k].argsort()[::-1][:20]
                top_e = end_logits[k].argsort()[::-1][:20]
                for s in top_s:
                    for e in top_e:
                        if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > cfg.max_answer_length:
                            continue
                        score = float(start_logits[k][s] + end_logits[k][e])
                        if rid not in best or score > best[rid][0]:
                            best[rid] = (score, context[offsets[s][0]:offsets[e][1]])
            preds = [{"prediction_text": best.get(rid, (0.0, ""))[1], "id": rid} for rid in by_id]
            target = [{"answers": by_id[rid]["answers"], "id": rid} for rid in by_id]
            scores = SQuAD()(preds, target)
            return {"exact_match": round(float(scores["exact_match"]), 2), "f1": round(float(scores["f1"]), 2)}

        args = TrainingArguments(**ctx.args, label_names=["start_positions", "end_positions"])
        return ctx.atomic(Trainer)(
            model=ctx.model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
            data_collator=default_data_collator, processing_class=tokenizer, callbacks=ctx.callbacks,
            compute_metrics=compute_metrics if eval_ds is not None else None,
        )
