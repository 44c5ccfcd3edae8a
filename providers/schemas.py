"""Validation schemas shared by the CLI and the images: the providers a job may name, and the
job config file a user passes with ``mf run --config``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .errors import ConfigurationError
from .provider_factory import available_providers


def valid_providers() -> list[str]:
    """The registered provider names, read from the registry each time."""
    return available_providers()


#: The providers registered when this module was imported.
VALID_PROVIDERS: list[str] = valid_providers()


class JobConfig(BaseModel):
    """A user's job config file (JSON)."""

    model_config = ConfigDict(extra="forbid")

    provider: str | None = None
    provider_config: dict[str, Any] = Field(default_factory=dict)
    model_class: str | None = None
    #: bitsandbytes settings for load and validate, e.g. {"load_in_4bit": true} (GPU or CPU).
    quantization_config: dict[str, Any] | None = None
    #: The training hyperparameters (see ``providers.runtime.train_config.TrainConfig``).
    train: dict[str, Any] = Field(default_factory=dict)
    #: secrets for the job: {"NAME": "env:VAR" | "file:PATH"} (the values themselves never go in this file)
    secrets: dict[str, str] = Field(default_factory=dict)
    #: read from a ModelForge TrainingConfig: what it became (lines for the user), and its dataset
    _notes: list[str] = PrivateAttr(default_factory=list)
    _dataset: str | None = PrivateAttr(default=None)
    _model: str | None = PrivateAttr(default=None)

    @property
    def notes(self) -> list[str]:
        return self._notes

    @property
    def dataset(self) -> str | None:
        return self._dataset

    @property
    def model(self) -> str | None:
        return self._model

    @field_validator("provider")
    @classmethod
    def _registered(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in valid_providers():
            raise ValueError(f"unknown provider {value!r}; available: {valid_providers()}")
        return value.lower() if value else value


def load_job_config(path: Path) -> JobConfig:
    """Read and validate a job config; ConfigurationError names the file and the bad field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"Config file not found: {path}", "Check the --config path.") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            "Fix the JSON and run again.",
        ) from None
    from .runtime.modelforge_config import is_modelforge_config, translate

    if isinstance(data, dict) and is_modelforge_config(data):  # ModelForge's TrainingConfig, mapped onto ours
        translation = translate(data)
        config = JobConfig(provider=translation.provider, model_class=translation.model_class,
                           train=translation.train)
        config._notes = [line for line in (translation.stage_message(), translation.ignored_message()) if line]
        config._dataset = translation.dataset
        config._model = translation.model
        return config
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigurationError(f"{path}: {where}: {first['msg']}", "Fix that field and run again.") from None
