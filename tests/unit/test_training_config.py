"""The train action's checks that run on the host before any container: config and dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.errors import ConfigurationError
from providers.runtime.train_config import TrainConfig, load_dataset_records


def test_defaults_are_a_usable_lora_run() -> None:
    config = TrainConfig.parse({})
    assert config.lora() == {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"}
    assert config.max_steps == -1 and config.epochs == 1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", 0, "learning_rate: Input should be greater than 0"),
        ("batch_size", 0, "batch_size: Input should be greater than or equal to 1"),
        ("lora_dropout", 1.5, "lora_dropout: Input should be less than 1"),
        ("precision", "fp8", "precision: Input should be 'fp32', 'bf16' or 'fp16'"),
        ("max_seq_length", 2, "max_seq_length: Input should be greater than or equal to 8"),
        ("eval_split", -0.1, "eval_split: Input should be greater than or equal to 0"),
        ("epochs", "many", "epochs: Input should be a valid number"),
        ("lora_rank", 8, "lora_rank: Extra inputs are not permitted"),
    ],
)
def test_each_bad_field_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TrainConfig.parse({field: value}, source="job.json")
    assert str(info.value).startswith(f"job.json: {message}")


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "records, fmt",
    [
        ([{"prompt": "a", "completion": "b"}], "prompt_completion"),
        ([{"text": "hello"}], "text"),
        ([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}], "messages"),
    ],
)
def test_the_three_record_formats(tmp_path: Path, records: list, fmt: str) -> None:
    summary, loaded = load_dataset_records(_write(tmp_path, *(json.dumps(r) for r in records), ""))
    assert (summary.format, summary.records, loaded) == (fmt, len(records), records)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "a"}', '{"text": "b"', '{"text": "c"}'], "data.jsonl line 2: not valid JSON"),
        (['{"text": "a"}', '{"prompt": "x"}'], "data.jsonl line 2: missing or empty 'text'"),
        (['{"prompt": "a", "completion": ""}'], "data.jsonl line 1: missing or empty 'completion'"),
        (['{"messages": [{"role": "user"}]}'], "data.jsonl line 1: messages[0] needs a string 'role' and 'content'"),
        (['["a"]'], "data.jsonl line 1: a record must be a JSON object"),
        (['{"question": "Q"}'], 'data.jsonl line 1: text-generation records are {"prompt", "completion"}, {"text"}'),
        ([""], "Dataset data.jsonl is empty"),
    ],
)
def test_bad_datasets_name_the_line(tmp_path: Path, lines: list, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_dataset_records(_write(tmp_path, *lines))
    assert str(info.value).startswith(message)
