"""The contract across the container wall, defined once for both ends.

In:  the orchestrator writes a ``JobSpec`` as JSON to ``JOB_SPEC_PATH`` (mounted read-only).
Out: the image's entrypoint (``providers.runtime``) writes one JSON event per line to stdout,
     ending with exactly one ``result`` or ``error`` event, and exits with ``EXIT_CODES``:
     0 for success, the error kind's code otherwise.

``CONTRACT_VERSION`` changes whenever a field's meaning changes; each side refuses a version
it does not know.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from .errors import ERROR_CLASSES, ConfigurationError

CONTRACT_VERSION = 1

# Where things live inside a job container.
JOB_DIR = PurePosixPath("/job")
JOB_SPEC_PATH = JOB_DIR / "spec.json"
MODEL_DIR = PurePosixPath("/models")
OUTPUT_DIR = PurePosixPath("/output")
DATA_DIR = PurePosixPath("/data")
HF_HOME = PurePosixPath("/cache/huggingface")

#: Exit code of the entrypoint for each error kind.
EXIT_CODES: dict[str, int] = {"ok": 0, **{kind: cls.exit_code for kind, cls in ERROR_CLASSES.items()}}


class JobSpec(BaseModel):
    """One job for one provider image."""

    model_config = ConfigDict(extra="forbid")

    contract_version: int = CONTRACT_VERSION
    provider: str
    action: Literal["validate", "load", "train", "export", "serve", "check"]
    #: A path inside the container, or a hub reference ``org/repo:file``.
    model: str
    model_class: str = "AutoModelForCausalLM"
    provider_config: dict[str, Any] = Field(default_factory=dict)
    quantization_config: dict[str, Any] | None = None
    device_map: str = "auto"
    prompt: str | None = None
    max_new_tokens: int = Field(default=32, ge=1, le=8192)
    #: 0 means greedy decoding.
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    online: bool = False
    #: Where the job may write (a path inside the container), or None for no output.
    output_dir: str | None = None
    #: Action-specific settings (the training config, for example).
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("contract_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != CONTRACT_VERSION:
            raise ValueError(f"contract version {value} is not {CONTRACT_VERSION}; rebuild the image")
        return value

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "job"
            raise ConfigurationError(
                f"Invalid job spec: {where}: {first['msg']}",
                "The orchestrator and the image disagree; rebuild the image with `mf images build`.",
            ) from None


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: int = CONTRACT_VERSION


class StageEvent(_Event):
    event: Literal["stage"] = "stage"
    name: str
    message: str = ""


class ProgressEvent(_Event):
    event: Literal["progress"] = "progress"
    current: float
    total: float | None = None
    unit: str = ""
    message: str = ""


class MetricEvent(_Event):
    event: Literal["metric"] = "metric"
    name: str
    value: float
    step: int | None = None


class LogEvent(_Event):
    event: Literal["log"] = "log"
    level: str = "info"
    message: str


class ResultEvent(_Event):
    """The job's outcome. Beyond ``provider`` and ``action``, fields depend on the action."""

    model_config = ConfigDict(extra="allow")
    event: Literal["result"] = "result"
    provider: str
    action: str


class ErrorEvent(_Event):
    event: Literal["error"] = "error"
    kind: str
    message: str
    hint: str = ""


Event = Annotated[
    StageEvent | ProgressEvent | MetricEvent | LogEvent | ResultEvent | ErrorEvent,
    Field(discriminator="event"),
]
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def encode_event(event: _Event) -> str:
    """One event as one line of JSON (no trailing newline)."""
    return json.dumps(event.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


def decode_event(line: str | bytes) -> Any:
    """Parse one line of a job's stdout; ``ValueError`` when it is not an event of this version."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON event: {line!r:.80}") from exc
    if not isinstance(data, dict) or data.get("v") != CONTRACT_VERSION:
        raise ValueError(f"not a version {CONTRACT_VERSION} event: {line!r:.80}")
    try:
        return _EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ValueError(f"malformed event: {exc.errors()[0]['msg']}") from exc


def event_payload(event: _Event) -> dict[str, Any]:
    """The event as a plain dict, the form ``mf --json`` prints."""
    return event.model_dump(mode="json")
