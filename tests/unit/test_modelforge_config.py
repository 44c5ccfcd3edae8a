"""A job config written for ModelForge (RETR0-OS/ModelForge, ``ModelForge/schemas/training_schemas.py``)
translated into ours: what each field becomes, what is ignored out loud, what is refused."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from providers.errors import ConfigurationError
from providers.runtime.modelforge_config import (
    IGNORED_FIELDS,
    JOB_CONFIG_KEYS,
    MODELFORGE_KEYS,
    is_modelforge_config,
    translate,
)
from providers.runtime.train_config import TrainConfig
from providers.schemas import JobConfig

#: ModelForge's "Mid Range Hardware" example (docs/api-reference/training-config.md), with the
#: required compute_specs, as its TrainingConfig takes it.
MID_RANGE: dict[str, Any] = {
    "task": "text-generation",
    "model_name": "meta-llama/Llama-3.1-8B-Instruct",
    "provider": "unsloth",
    "strategy": "qlora",
    "dataset": "/path/to/dataset.jsonl",
    "compute_specs": "mid_range",
    "lora_r": 64,
    "lora_alpha": 128,
    "lora_dropout": 0.1,
    "use_4bit": True,
    "bf16": True,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "learning_rate": 2e-4,
    "max_seq_length": 2048,
    "eval_split": 0.2,
    "eval_steps": 100,
}

#: Every field of ModelForge's TrainingConfig, as its model_dump() hands it to the trainer.
FULL_DUMP: dict[str, Any] = {
    "task": "summarization", "model_name": "google/flan-t5-base", "provider": "huggingface", "strategy": "sft",
    "dataset": "/data/sum.jsonl", "compute_specs": "high_end",
    "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1,
    "use_4bit": True, "use_8bit": False, "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_type": "nf4",
    "use_nested_quant": True,
    "fp16": False, "bf16": False,
    "num_train_epochs": 2, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
    "gradient_accumulation_steps": 2, "gradient_checkpointing": True, "max_grad_norm": 0.3, "learning_rate": 1e-4,
    "weight_decay": 0.001, "optim": "paged_adamw_32bit", "lr_scheduler_type": "cosine", "max_steps": -1,
    "warmup_ratio": 0.03, "group_by_length": True, "packing": False,
    "max_seq_length": None,
    "eval_split": 0.1, "eval_steps": 50,
}
#: the TrainingConfig fields that have no meaning here
FULL_DUMP_IGNORED = {"compute_specs", "per_device_eval_batch_size", "max_grad_norm",
                     "weight_decay", "optim", "lr_scheduler_type", "warmup_ratio", "group_by_length", "packing"}
#: mapped once our TrainConfig has the knob, ignored (out loud) before
HAS_CHECKPOINTING = "gradient_checkpointing" in TrainConfig.model_fields
if not HAS_CHECKPOINTING:
    FULL_DUMP_IGNORED.add("gradient_checkpointing")


def _ignored_names(lines: list[str]) -> set[str]:
    return {line.split(" = ", 1)[0] for line in lines}


def test_a_realistic_modelforge_config_becomes_a_valid_train_config() -> None:
    t = translate(MID_RANGE)
    config = TrainConfig.parse(t.train, source="modelforge.json")
    assert (config.task, config.strategy, config.quant, config.precision) == ("text-generation", "qlora", "nf4", "bf16")
    assert (config.epochs, config.batch_size, config.gradient_accumulation, config.learning_rate) == (3, 2, 4, 2e-4)
    assert config.lora() == {"r": 64, "lora_alpha": 128, "lora_dropout": 0.1, "target_modules": "all-linear"}
    assert (config.max_seq_length, config.eval_split, config.eval_steps, config.max_steps) == (2048, 0.2, 100, -1)
    assert (t.model, t.provider, t.dataset, t.model_class) == (
        "meta-llama/Llama-3.1-8B-Instruct", "unsloth", "/path/to/dataset.jsonl", "AutoModelForCausalLM")
    assert "num_train_epochs -> epochs = 3" in t.mapping
    assert "per_device_train_batch_size -> batch_size = 2" in t.mapping
    assert "gradient_accumulation_steps -> gradient_accumulation = 4" in t.mapping
    assert "bf16 = true -> precision = bf16" in t.mapping
    assert t.ignored == ["compute_specs = mid_range (ModelForge's hardware profile; not used here)"]


def test_the_whole_trainingconfig_dump_translates_and_every_leftover_is_listed() -> None:
    t = translate(FULL_DUMP)
    config = TrainConfig.parse(t.train)
    assert (config.task, config.strategy, config.quant, config.double_quant) == ("summarization", "sft", "nf4", True)
    # no fp16/bf16 flag is true: the 4-bit compute dtype decides, and the mapping says so
    assert config.precision == "bf16"
    assert ("bnb_4bit_compute_dtype = bfloat16, fp16 = false, bf16 = false -> precision = bf16"
            " (no fp16/bf16 flag is true)") in t.mapping
    assert (config.epochs, config.batch_size, config.gradient_accumulation, config.learning_rate) == (2, 4, 2, 1e-4)
    assert (config.eval_split, config.eval_steps) == (0.1, 50)
    assert config.max_seq_length == 2048  # ModelForge's fallback for null
    assert t.model_class == "AutoModelForSeq2SeqLM"
    assert "use_4bit = true, use_8bit = false, bnb_4bit_quant_type = nf4 -> quantization = nf4" in t.mapping
    assert _ignored_names(t.ignored) == FULL_DUMP_IGNORED


def _unaccounted(data: dict[str, Any], defaults: bool = True) -> set[str]:
    """The keys of ``data`` that neither a mapping line (on its left side) nor an ignored line names."""
    t = translate(data, modelforge_defaults=defaults)
    named = {word for line in t.mapping for word in re.findall(r"[a-z][a-z0-9_]*", line.split(" -> ")[0])}
    return set(data) - named - _ignored_names(t.ignored)


def test_no_field_is_dropped_silently() -> None:
    """Each key of the file is named in the mapping or listed as ignored; a key handled without
    either (or a new IGNORED_FIELDS entry that is not reported) fails here."""
    data = dict(FULL_DUMP)
    data.update({key: "x" for key in IGNORED_FIELDS if key not in data})
    data.update({"output_dir": "/ckpt", "report_to": "tensorboard", "device_map": {"": 0}, "made_up_knob": 7,
                 "seed": 3, "save_steps": 0, "logging_steps": 5, "quantization": "4bit", "use_lora": True,
                 "bnb_4bit_use_double_quant": True, "target_modules": ["q_proj", "v_proj"]})
    assert _unaccounted(data) == set()
    assert _unaccounted(data, defaults=False) == set()
    t = translate(data)
    assert "made_up_knob = 7 (not a ModelForge training field)" in t.ignored
    assert "output_dir = /ckpt (the output folder is ours to pick (--output))" in t.ignored
    assert 'device_map = {"": 0} (the provider places the model)' in t.ignored
    assert any(line.startswith("save_steps = 0 (") and "our default 50" in line for line in t.ignored)
    assert (t.train["seed"], t.train["logging_steps"], t.train["target_modules"]) == (3, 5, ["q_proj", "v_proj"])
    assert "ModelForge fields ignored" in t.ignored_message() and "\n" not in t.ignored_message()
    TrainConfig.parse(t.train)


@pytest.mark.parametrize(
    "data",
    [
        {"model_name": "m", "fp16": True, "bf16": False},
        {"model_name": "m", "fp16": False, "bf16": False, "bnb_4bit_compute_dtype": "bfloat16"},
        {"model_name": "m", "use_4bit": False, "use_8bit": True, "bnb_4bit_quant_type": "nf4"},
        {"model_name": "m", "use_4bit": True, "use_8bit": False, "quantization": "8bit"},
        {"model_name": "m", "use_8bit": None, "eval_steps": None, "max_seq_length": None},
        {"task": "extractive-question-answering", "model_name": "m", "use_8bit": False, "use_nested_quant": True},
        {"model_name": "m", "strategy": "rlhf", "ppo_epochs": 4, "target_kl": 0.1, "max_steps": 0},
    ],
)
def test_no_field_is_dropped_silently_in_small_configs(data: dict[str, Any]) -> None:
    assert _unaccounted(data) == set()
    assert _unaccounted(data, defaults=False) == set()


def test_gradient_checkpointing_maps_when_our_config_has_it() -> None:
    t = translate({"model_name": "m", "gradient_checkpointing": False})
    if HAS_CHECKPOINTING:
        assert TrainConfig.parse(t.train).gradient_checkpointing is False  # type: ignore[attr-defined,unused-ignore]
        assert "gradient_checkpointing -> gradient_checkpointing = false" in t.mapping
    else:
        assert _ignored_names(t.ignored) == {"gradient_checkpointing"}
    assert "gradient_checkpointing" not in translate({"model_name": "m"}).train  # ModelForge's default is not forced


def test_every_key_modelforge_reads_is_handled() -> None:
    translated = {"task", "model_name", "provider", "strategy", "dataset", "lora_r", "lora_alpha", "lora_dropout",
                  "use_4bit", "use_8bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "use_nested_quant",
                  "fp16", "bf16", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                  "learning_rate", "max_steps", "max_seq_length", "eval_split", "eval_steps", "save_steps",
                  "logging_steps", "seed", "beta", "loss_type", "max_prompt_length", "target_modules"}
    assert translated | FULL_DUMP_IGNORED <= MODELFORGE_KEYS


@pytest.mark.parametrize(
    "fields, quantization, double_quant",
    [
        ({"use_4bit": True}, "nf4", False),  # ModelForge's use_nested_quant default is false
        ({"use_4bit": True, "use_nested_quant": True}, "nf4", True),
        ({"use_4bit": True, "bnb_4bit_use_double_quant": True}, "nf4", True),
        ({"use_4bit": True, "bnb_4bit_quant_type": "fp4", "use_nested_quant": True}, "fp4", True),
        ({}, "nf4", False),  # ModelForge's use_4bit default is true
        ({"quantization": "4bit"}, "nf4", False),  # the settings builder's form
    ],
)
def test_qlora_fields_map_to_quantization(fields: dict[str, Any], quantization: str, double_quant: bool) -> None:
    t = translate({"model_name": "m", "strategy": "qlora", **fields})
    config = TrainConfig.parse(t.train)
    assert (config.strategy, config.quantization, config.quant, config.double_quant) == (
        "qlora", quantization, quantization, double_quant)


@pytest.mark.parametrize(
    "fields, quantization, note",
    [
        ({"use_8bit": True}, "int8", "ModelForge's default true is not applied"),
        ({"use_4bit": False, "use_8bit": True}, "int8", ""),
        ({"use_4bit": False}, "none", "full precision"),
        ({"quantization": "8bit"}, "int8", ""),
        ({"quantization": "none"}, "none", "full precision"),
    ],
)
def test_8bit_and_full_precision(fields: dict[str, Any], quantization: str, note: str) -> None:
    t = translate({"model_name": "m", **fields})
    assert TrainConfig.parse(t.train).quantization == quantization
    assert any(f"-> quantization = {quantization}" in line and note in line for line in t.mapping)
    assert "bnb_4bit_quant_type" not in t.train and "double_quant" not in t.train


def test_4bit_settings_without_4bit_are_listed_as_ignored() -> None:
    t = translate({"model_name": "m", "use_4bit": False, "use_nested_quant": True, "bnb_4bit_quant_type": "fp4",
                   "bnb_4bit_compute_dtype": "bfloat16"})
    assert _ignored_names(t.ignored) == {"use_nested_quant", "bnb_4bit_quant_type", "bnb_4bit_compute_dtype"}
    assert TrainConfig.parse(t.train).precision == "fp32"


@pytest.mark.parametrize(
    "task, ours, model_class",
    [
        ("text-generation", "text-generation", "AutoModelForCausalLM"),
        ("summarization", "summarization", "AutoModelForSeq2SeqLM"),
        ("extractive-question-answering", "question-answering", "AutoModelForQuestionAnswering"),
    ],
)
def test_task_names(task: str, ours: str, model_class: str) -> None:
    t = translate({"task": task, "model_name": "m", "dataset": "d.jsonl"})
    config = TrainConfig.parse(t.train)
    assert (config.task, config.model_class, t.model_class) == (ours, model_class, model_class)


def test_question_answering_drops_modelforges_default_4bit_out_loud() -> None:
    t = translate({"task": "extractive-question-answering", "model_name": "m"})
    assert TrainConfig.parse(t.train).quant is None
    assert any("use_4bit = true (ModelForge default) -> quantization = none" in line for line in t.mapping)


@pytest.mark.parametrize("strategy", ["sft", "qlora", "dpo", "rlhf"])
def test_strategies_keep_their_names(strategy: str) -> None:
    t = translate({"model_name": "m", "strategy": strategy, "beta": 0.2, "loss_type": "hinge"})
    config = TrainConfig.parse(t.train)
    assert (config.strategy, config.beta, config.loss_type) == (strategy, 0.2, "hinge")
    if strategy == "rlhf":
        assert config.objective == "dpo"
        assert any("rlhf" in line and "DPO" in line for line in t.mapping)


@pytest.mark.parametrize(
    "fields, precision",
    [
        ({"fp16": True}, "fp16"),
        ({"bf16": True, "bnb_4bit_compute_dtype": "float16"}, "bf16"),  # the flag wins over the dtype
        ({"bnb_4bit_compute_dtype": "float16"}, "fp16"),
        ({"bnb_4bit_compute_dtype": "float32"}, "fp32"),
        ({"fp16": False, "bf16": False}, "fp32"),
        ({}, "fp32"),
    ],
)
def test_precision(fields: dict[str, Any], precision: str) -> None:
    assert TrainConfig.parse(translate({"model_name": "m", **fields}).train).precision == precision


@pytest.mark.parametrize("value, ours", [(-1, -1), (0, -1), (500, 500)])
def test_max_steps_minus_one_and_zero_mean_train_for_the_epochs(value: int, ours: int) -> None:
    assert translate({"model_name": "m", "max_steps": value}).train["max_steps"] == ours


def test_modelforge_defaults_can_be_left_out() -> None:
    t = translate({"model_name": "m", "num_train_epochs": 2}, modelforge_defaults=False)
    assert t.train == {"epochs": 2}
    config = TrainConfig.parse(t.train)
    assert (config.lora_r, config.batch_size, config.quant) == (8, 4, None)  # ours


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"strategy": "ppo"}, "ModelForge config: strategy = ppo is not supported here; allowed: sft, qlora, rlhf, dpo"),
        ({"task": "translation"}, "ModelForge config: task = translation is not supported here; "
                                  "allowed: text-generation, summarization, extractive-question-answering"),
        ({"task": "summarization", "strategy": "dpo"},
         "ModelForge config: strategy = dpo is not supported here; summarization trains with sft or qlora"),
        ({"use_4bit": True, "use_8bit": True}, "use_4bit and use_8bit are both true"),
        ({"bnb_4bit_quant_type": "int4"}, "bnb_4bit_quant_type = int4 is not supported here; allowed: nf4, fp4"),
        ({"bnb_4bit_compute_dtype": "float8"}, "bnb_4bit_compute_dtype = float8 is not supported here; "
                                               "allowed: float16, bfloat16, float32"),
        ({"fp16": True, "bf16": True}, "fp16 and bf16 are both true"),
        ({"strategy": "qlora", "use_4bit": False}, "use_4bit = false is not supported here; strategy qlora trains"),
        ({"task": "extractive-question-answering", "use_4bit": True}, "question-answering models train unquantized"),
        ({"use_lora": False}, "use_lora = false is not supported here"),
        ({"use_4bit": "sometimes"}, "use_4bit = sometimes is not supported here; allowed: true or false"),
        ({"lora_r": 0}, "lora_r = 0 is not supported here (lora_r: Input should be greater than or equal to 1)"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size = 0 is not supported here (batch_size:"),
        ({"model_name": ""}, "model_name =  is not supported here; expected a non-empty string"),
        ({"task": ["text-generation"]}, 'task = ["text-generation"] is not supported here; allowed: text-generation'),
        ({"bnb_4bit_compute_dtype": {"x": 1}}, 'bnb_4bit_compute_dtype = {"x": 1} is not supported here'),
    ],
)
def test_a_refused_value_is_one_line_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        translate({"model_name": "m", **fields})
    assert message in str(info.value)
    assert "\n" not in str(info.value) and str(info.value).startswith("ModelForge config: ")
    assert info.value.hint


def test_translate_does_not_change_its_input() -> None:
    data = copy.deepcopy(FULL_DUMP)
    translate(data)
    assert data == FULL_DUMP


def test_stage_message_is_one_line() -> None:
    t = translate(MID_RANGE)
    message = t.stage_message()
    assert message.startswith("ModelForge config: ") and "\n" not in message
    assert "num_train_epochs -> epochs = 3" in message and "use_4bit = true -> quantization = nf4" in message
    assert translate({"model_name": "m"}).ignored_message() == ""


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"provider": "huggingface"},
        {"train": {"epochs": 2, "lora_r": 16}},
        {"provider": "huggingface", "provider_config": {}, "model_class": "AutoModelForCausalLM",
         "quantization_config": {"load_in_4bit": True}, "train": {"strategy": "qlora", "batch_size": 2}},
        {"model_class": "AutoModelForCausalLM", "train": {"task": "text-generation"}},
    ],
)
def test_our_own_config_is_not_modelforges(data: dict[str, Any]) -> None:
    assert not is_modelforge_config(data)
    JobConfig.model_validate(data)


@pytest.mark.parametrize("data", [MID_RANGE, FULL_DUMP, {"model_name": "m"}, {"num_train_epochs": 3},
                                  {"provider": "huggingface", "per_device_train_batch_size": 2}])
def test_modelforges_config_is_detected(data: dict[str, Any]) -> None:
    assert is_modelforge_config(data)


def test_our_keys_match_the_job_config_schema() -> None:
    assert set(JobConfig.model_fields) == JOB_CONFIG_KEYS
