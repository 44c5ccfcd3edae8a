"""Reading a job config written for ModelForge (github.com/RETR0-OS/ModelForge): its ``TrainingConfig``
(``ModelForge/schemas/training_schemas.py``), plus the keys its strategies and settings builder read
(``ModelForge/strategies/*.py``, ``ModelForge/utilities/finetuning/settings_builder.py``), translated
into our train config (``train_config.TrainConfig``), the model, provider and dataset.

Every key of the file is accounted for: translated (a line in ``Translation.mapping``) or listed with
its value and the reason it has no meaning here (``Translation.ignored``); none is dropped silently.
A value we cannot honour raises ``ConfigurationError`` naming ModelForge's field, the value and what
is allowed. Where ModelForge's schema has a default that differs from ours (4-bit quantization, LoRA
rank, batch size, eval split, ...), the translation follows ModelForge, and says so in ``mapping``:
the same file trains the same way in both tools. Pure Python: nothing here imports an ML library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigurationError
from .train_config import TASK_MODEL_CLASS, TASK_STRATEGIES, TrainConfig

#: The top-level keys of our own job config (``providers.schemas.JobConfig``).
JOB_CONFIG_KEYS = frozenset({"provider", "provider_config", "model_class", "quantization_config", "train", "secrets"})

#: ModelForge's task names (``VALID_TASKS``) and ours.
MF_TASKS = {
    "text-generation": "text-generation",
    "summarization": "summarization",
    "extractive-question-answering": "question-answering",
}
#: ModelForge's strategies (``VALID_STRATEGIES``); each keeps its name here (rlhf runs DPO, see TrainConfig).
MF_STRATEGIES = ("sft", "qlora", "rlhf", "dpo")
MF_4BIT_TYPES = ("nf4", "fp4")
MF_COMPUTE_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}

#: ModelForge's ``TrainingConfig`` defaults for the fields translated here that it gives a default.
MF_DEFAULTS: dict[str, Any] = {
    "strategy": "sft",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.1,
    "use_4bit": True,
    "use_8bit": False,
    "bnb_4bit_quant_type": "nf4",
    "use_nested_quant": False,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 4,
    "learning_rate": 2e-4,
    "max_steps": -1,
    "max_seq_length": None,
    "eval_split": 0.2,
    "eval_steps": 100,
}

#: ModelForge key -> our TrainConfig field, value copied (TrainConfig checks it).
_COPIED = {
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation",
    "learning_rate": "learning_rate",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "target_modules": "target_modules",
    "eval_split": "eval_split",
    "eval_steps": "eval_steps",
    "seed": "seed",
    # DPO (ModelForge/strategies/dpo_strategy.py)
    "beta": "beta",
    "loss_type": "loss_type",
    "max_prompt_length": "max_prompt_length",
}
#: Step intervals where ModelForge's 0 means "not set" and ours needs at least 1.
_INTERVALS = {"save_steps": "save_steps", "logging_steps": "logging_steps"}
#: Keys translated by hand in ``translate``.
_SPECIAL = frozenset({
    "task", "strategy", "model_name", "provider", "dataset",
    "use_4bit", "use_8bit", "quantization", "bnb_4bit_quant_type", "use_nested_quant", "bnb_4bit_use_double_quant",
    "bnb_4bit_compute_dtype", "fp16", "bf16", "max_steps", "max_seq_length", "use_lora", "gradient_checkpointing",
})

_TRAINER_DEFAULT = "not configurable here; our trainer's default applies"
_PPO = "ModelForge's PPO setting; rlhf runs DPO here"
#: ModelForge keys with no meaning here, and why.
IGNORED_FIELDS: dict[str, str] = {
    "compute_specs": "ModelForge's hardware profile; not used here",
    "per_device_eval_batch_size": _TRAINER_DEFAULT,
    "max_grad_norm": _TRAINER_DEFAULT,
    "weight_decay": _TRAINER_DEFAULT,
    "optim": _TRAINER_DEFAULT,
    "lr_scheduler_type": _TRAINER_DEFAULT,
    "warmup_ratio": _TRAINER_DEFAULT,
    "group_by_length": _TRAINER_DEFAULT,
    "packing": _TRAINER_DEFAULT,
    "save_strategy": "checkpoints are saved every save_steps here",
    "output_dir": "the output folder is ours to pick (--output)",
    "logging_dir": "logs and metrics are job events here",
    "report_to": "logs and metrics are job events here",
    "device_map": "the provider places the model",
    "fine_tuned_name": "the adapter is written to the output folder",
    "is_custom_model": "ModelForge UI bookkeeping",
    "load_in_4bit": "use_4bit decides",
    "load_in_8bit": "use_8bit decides",
    "bnb_4bit_use_quant_type": "ModelForge UI flag; bnb_4bit_quant_type decides",
    "bnb_8bit_quant_type": "8-bit quantization has no type to pick here",
    "use_rslora": "plain LoRA here",
    "use_dora": "plain LoRA here",
    "ppo_epochs": _PPO,
    "mini_batch_size": _PPO,
    "target_kl": _PPO,
    "early_stopping": _PPO,
    "batch_size": _PPO,
}

#: Every key ModelForge's config may hold: the ones that mark a file as ModelForge's (not ``provider``,
#: which ours has too).
MODELFORGE_KEYS = frozenset(_COPIED) | frozenset(_INTERVALS) | _SPECIAL | frozenset(IGNORED_FIELDS)
_MARKERS = MODELFORGE_KEYS - JOB_CONFIG_KEYS

#: our TrainConfig defaults, to say which applies when a ModelForge value is dropped
_OUR_DEFAULTS = {name: info.default for name, info in TrainConfig.model_fields.items()}

_HINT = "Fix that field of the ModelForge config and run again."


def is_modelforge_config(data: dict[str, Any]) -> bool:
    """True when ``data`` is a ModelForge training config rather than our job config: it holds a
    ModelForge key (``model_name``, ``num_train_epochs``, ...) and none only ours has."""
    if not isinstance(data, dict):
        return False
    keys = set(data)
    if keys & (JOB_CONFIG_KEYS - {"provider"}):
        return False
    return bool(keys & _MARKERS)


@dataclass(frozen=True)
class Translation:
    """A ModelForge config, read: ``train`` is input for ``TrainConfig.parse``; ``mapping`` says how each
    value got there, ``ignored`` each ModelForge field left out, with its value and why."""

    train: dict[str, Any]
    model: str | None
    provider: str | None
    dataset: str | None
    model_class: str | None
    mapping: list[str]
    ignored: list[str]

    def stage_message(self) -> str:
        """One line: what the ModelForge config became."""
        return "ModelForge config: " + "; ".join(self.mapping)

    def ignored_message(self) -> str:
        """One line listing the ignored fields, or "" when there are none."""
        if not self.ignored:
            return ""
        return f"ModelForge fields ignored ({len(self.ignored)}): " + "; ".join(self.ignored)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _refuse(field: str, value: Any, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"ModelForge config: {field} = {_show(value)} is not supported here; {allowed}", _HINT)


def _flag(field: str, value: Any) -> bool:
    """A boolean as ModelForge reads one (pydantic's lax bool): true/false, 1/0, "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise _refuse(field, value, "allowed: true or false")


class _Reader:
    """The file's keys with ModelForge's defaults behind them, and what they became."""

    def __init__(self, data: dict[str, Any], defaults: bool) -> None:
        self.data = data
        self.defaults = defaults
        self.train: dict[str, Any] = {}
        #: our TrainConfig field -> the ModelForge key it came from (to name it in an error)
        self.sources: dict[str, str] = {}
        self.mapping: list[str] = []
        self.ignored: list[str] = []

    def given(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(self, key: str) -> Any:
        """The key's value; ModelForge's default when the file leaves it out (and defaults apply); else None."""
        if self.given(key):
            return self.data[key]
        return MF_DEFAULTS.get(key) if self.defaults else None

    def left(self, key: str, value: Any, result: Any) -> str:
        """How to name where a value came from: ``key``, ``key = value`` when it was converted, and
        ``(ModelForge default)`` when the file left it out."""
        text = key if _show(value) == _show(result) else f"{key} = {_show(value)}"
        return text if self.given(key) else f"{text} (ModelForge default)"

    def put(self, ours: str, value: Any, key: str, left: str | None = None, note: str = "") -> None:
        self.train[ours] = value
        self.sources[ours] = key
        left = left if left is not None else self.left(key, self.get(key), value)
        self.mapping.append(f"{left} -> {ours} = {_show(value)}" + (f" ({note})" if note else ""))

    def ignore(self, key: str, why: str) -> None:
        self.ignored.append(f"{key} = {_show(self.data[key])} ({why})")


def translate(data: dict[str, Any], *, modelforge_defaults: bool = True) -> Translation:
    """Translate a ModelForge training config into ours.

    With ``modelforge_defaults`` (the default), a field the file leaves out takes ModelForge's default,
    as ModelForge itself would (its 4-bit quantization, LoRA rank 16, batch size 1, eval split 0.2, ...);
    without it, our TrainConfig's default. Raises ConfigurationError (one line: the field, its value,
    what is allowed) for a value we cannot honour. ``Translation.train`` passes ``TrainConfig.parse``.
    """
    if not isinstance(data, dict):
        raise ConfigurationError("ModelForge config: expected a JSON object", _HINT)
    r = _Reader(data, modelforge_defaults)

    # What to train: model, provider, dataset, task, strategy.
    model = _text(data, "model_name")
    if model is not None:
        r.mapping.append(f"model_name -> model = {model}")
    provider = _text(data, "provider")
    if provider is not None:
        provider = provider.lower()
        r.mapping.append(f"provider -> provider = {provider}")
    dataset = _text(data, "dataset")
    if dataset is not None:
        r.mapping.append(f"dataset -> dataset = {dataset}")

    task = "text-generation"
    model_class: str | None = None
    if r.given("task"):
        if not isinstance(data["task"], str) or data["task"] not in MF_TASKS:
            raise _refuse("task", data["task"], "allowed: " + ", ".join(MF_TASKS))
        task = MF_TASKS[data["task"]]
        r.put("task", task, "task")
        model_class = TASK_MODEL_CLASS[task]
        r.mapping.append(f"task -> model_class = {model_class}")
    strategy = r.get("strategy") or "sft"
    if strategy not in MF_STRATEGIES:
        raise _refuse("strategy", strategy, "allowed: " + ", ".join(MF_STRATEGIES))
    if strategy not in TASK_STRATEGIES[task]:
        raise _refuse("strategy", strategy, f"{task} trains with " + " or ".join(TASK_STRATEGIES[task]))
    if r.given("strategy") or modelforge_defaults:
        r.put("strategy", strategy, "strategy",
              note="DPO on prompt/chosen/rejected pairs here; ModelForge's rlhf ran PPO" if strategy == "rlhf" else "")
    if r.given("use_lora"):
        if not _flag("use_lora", data["use_lora"]):
            raise _refuse("use_lora", data["use_lora"], "training here is LoRA only: set use_lora true")
        r.ignore("use_lora", "training here is always LoRA")

    # Quantization and precision.
    quantization = _quantization(r, task, strategy)
    four_bit = quantization in MF_4BIT_TYPES
    if four_bit:
        _double_quant(r)
    else:
        for key in ("bnb_4bit_quant_type", "use_nested_quant", "bnb_4bit_use_double_quant"):
            if r.given(key):
                r.ignore(key, "4-bit only; the base model is not 4-bit here")
    _precision(r, four_bit)

    # The hyperparameters.
    for key, ours in _COPIED.items():
        value = r.get(key)
        if value is not None:
            r.put(ours, value, key)
    if r.given("gradient_checkpointing"):
        if "gradient_checkpointing" in TrainConfig.model_fields:  # a TrainConfig that has the knob
            r.put("gradient_checkpointing", _flag("gradient_checkpointing", data["gradient_checkpointing"]),
                  "gradient_checkpointing")
        else:
            r.ignore("gradient_checkpointing", _TRAINER_DEFAULT)
    for key, ours in _INTERVALS.items():
        if r.given(key):
            if _number(data[key]) and data[key] <= 0:
                r.ignore(key, f"ModelForge's unset; ours must be >= 1, so our default {_OUR_DEFAULTS[ours]} applies")
            else:
                r.put(ours, data[key], key)
    value = r.get("max_steps")
    if value is not None:
        if _number(value) and value <= 0:
            r.put("max_steps", -1, "max_steps", note="train for the epochs")
        else:
            r.put("max_steps", value, "max_steps")
    if "max_seq_length" in data or modelforge_defaults:
        value = data.get("max_seq_length")
        if value is None or value == -1:
            r.put("max_seq_length", 2048, "max_seq_length", note="ModelForge's fallback for -1 or null")
        else:
            r.put("max_seq_length", value, "max_seq_length")

    # Everything else is ignored, out loud; so is a translated key set to null.
    handled = frozenset(_COPIED) | frozenset(_INTERVALS) | _SPECIAL
    for key, value in data.items():
        if key not in handled:
            r.ignore(key, IGNORED_FIELDS.get(key, "not a ModelForge training field"))
        elif value is None and key != "max_seq_length":
            r.ignore(key, "null: not set")

    _validate(r)
    return Translation(train=r.train, model=model, provider=provider, dataset=dataset, model_class=model_class,
                       mapping=r.mapping, ignored=r.ignored)



def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _refuse(key, value, "expected a non-empty string")
    return value.strip()


def _quantization(r: _Reader, task: str, strategy: str) -> str | None:
    """Our ``quantization`` from use_4bit/use_8bit and bnb_4bit_quant_type (or the settings builder's
    ``quantization: "4bit" | "8bit" | "none"``); None when nothing says (and defaults do not apply)."""
    data = r.data
    four = r.get("use_4bit")
    eight = r.get("use_8bit")
    four = None if four is None else _flag("use_4bit", four)
    eight = None if eight is None else _flag("use_8bit", eight)
    four_key, eight_key = "use_4bit", "use_8bit"
    if r.given("quantization"):
        legacy = data["quantization"]
        if r.given("use_4bit") or r.given("use_8bit"):
            r.ignore("quantization", "use_4bit/use_8bit decide")
        elif legacy in ("4bit", "8bit", "none"):
            four, eight = legacy == "4bit", legacy == "8bit"
            four_key = eight_key = "quantization"
        else:
            raise _refuse("quantization", legacy, 'allowed: "4bit", "8bit" or "none"')
    if four and eight and r.given("use_4bit"):
        raise _refuse("use_4bit", True, "use_4bit and use_8bit are both true: set one of them")
    eight_note = ""
    if four and eight:  # use_8bit given, use_4bit left to ModelForge's default (which would win there)
        four, eight_note = False, "use_4bit is not set, so ModelForge's default true is not applied"

    def refuse_quantized(key: str) -> ConfigurationError:
        return _refuse(key, data[key], f"question-answering models train unquantized here: set {key} to false"
                       if key != "quantization" else 'question-answering models train unquantized here: use "none"')

    def left(result: str) -> str:
        """The given flags (and ModelForge's use_4bit default when it decided), as the mapping's left side."""
        if four_key == "quantization":
            return r.left("quantization", data["quantization"], result)
        parts = [f"{k} = {_show(_flag(k, data[k]))}" for k in ("use_4bit", "use_8bit") if r.given(k)]
        if four and not r.given("use_4bit"):
            parts.insert(0, "use_4bit = true (ModelForge default)")
        if four and r.given("bnb_4bit_quant_type"):
            parts.append(f"bnb_4bit_quant_type = {_show(data['bnb_4bit_quant_type'])}")
        return ", ".join(parts)

    if four:
        if task == "question-answering":
            if r.given(four_key):
                raise refuse_quantized(four_key)
            r.put("quantization", "none", "use_4bit", left("none"), "question-answering models train unquantized here")
            return "none"
        quant_type = r.get("bnb_4bit_quant_type") or "nf4"
        if quant_type not in MF_4BIT_TYPES:
            raise _refuse("bnb_4bit_quant_type", quant_type, "allowed: " + ", ".join(MF_4BIT_TYPES))
        r.put("quantization", quant_type, four_key, left(quant_type))
        return str(quant_type)
    if eight:
        if task == "question-answering":
            raise refuse_quantized(eight_key)
        r.put("quantization", "int8", eight_key, left("int8"), eight_note)
        return "int8"
    if four is None and eight is None:
        return None
    key = four_key if four is not None else eight_key
    if strategy == "qlora":
        raise _refuse(key, data.get(key, False),
                      "strategy qlora trains on a 4-bit base here: set use_4bit to true, or use strategy sft")
    r.put("quantization", "none", key, left("none"), "full precision")
    return "none"


def _double_quant(r: _Reader) -> None:
    keys = [k for k in ("use_nested_quant", "bnb_4bit_use_double_quant") if r.given(k)]
    values = {k: _flag(k, r.data[k]) for k in keys}
    if len(set(values.values())) > 1:
        raise _refuse("use_nested_quant", values["use_nested_quant"],
                      "it says the opposite of bnb_4bit_use_double_quant: set only one of them")
    if keys:
        r.put("double_quant", values[keys[0]], keys[0], " and ".join(keys))
    elif r.defaults:
        r.put("double_quant", MF_DEFAULTS["use_nested_quant"], "use_nested_quant")


def _precision(r: _Reader, four_bit: bool) -> None:
    """Our ``precision`` from fp16/bf16 (the trainer's flags in both tools), else from the 4-bit compute
    dtype, which is the dtype the quantized model computes in."""
    data = r.data
    fp16 = _flag("fp16", data["fp16"]) if r.given("fp16") else None
    bf16 = _flag("bf16", data["bf16"]) if r.given("bf16") else None
    if fp16 and bf16:
        raise _refuse("fp16", True, "fp16 and bf16 are both true: set one of them")
    dtype = data.get("bnb_4bit_compute_dtype")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in MF_COMPUTE_DTYPES):
        raise _refuse("bnb_4bit_compute_dtype", dtype, "allowed: " + ", ".join(MF_COMPUTE_DTYPES))
    flags = ", ".join(f"{k} = {_show(v)}" for k, v in (("fp16", fp16), ("bf16", bf16)) if v is not None)
    if bf16 or fp16:
        key = "bf16" if bf16 else "fp16"
        r.put("precision", key, key, flags)
        if dtype is not None:
            r.ignore("bnb_4bit_compute_dtype", f"{key} = true decides the precision")
    elif dtype is not None and four_bit:
        left = f"bnb_4bit_compute_dtype = {dtype}" + (f", {flags}" if flags else "")
        r.put("precision", MF_COMPUTE_DTYPES[dtype], "bnb_4bit_compute_dtype", left, "no fp16/bf16 flag is true")
    else:
        if flags:
            r.put("precision", "fp32", "fp16" if fp16 is not None else "bf16", flags)
        if dtype is not None:
            r.ignore("bnb_4bit_compute_dtype", "4-bit only; the base model is not 4-bit here")


def _validate(r: _Reader) -> None:
    """Check the result with TrainConfig; a refused value is named by the ModelForge field it came from."""
    try:
        TrainConfig.model_validate(r.train)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        ours = str(first["loc"][0]) if first["loc"] else ""
        key = r.sources.get(ours)
        if key is None:
            raise ConfigurationError(f"ModelForge config: {msg}", _HINT) from None
        shown = _show(r.data[key]) if key in r.data else f"{_show(r.train[ours])} (ModelForge default)"
        raise ConfigurationError(f"ModelForge config: {key} = {shown} is not supported here ({ours}: {msg})",
                                 _HINT) from None
