"""Run at image build time, with bytecode writing on: import what a gguf job imports (llama-cpp-python
with its chat formatting, pydantic for the job contract, the standard library modules they pull in)
and exercise pydantic's lazily imported parts, so their bytecode is compiled into the image. The job's
root filesystem is read-only: whatever is left uncompiled is compiled from source at every run.
"""

from __future__ import annotations

import argparse  # noqa: F401 - the runtime and llama-cpp-python import these
import ctypes  # noqa: F401
import json
import logging  # noqa: F401
import mmap  # noqa: F401
import signal  # noqa: F401
import struct  # noqa: F401
from typing import Annotated, Literal

import jinja2.sandbox
import llama_cpp  # noqa: F401
import llama_cpp.llama_chat_format  # noqa: F401
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["a"] = "a"
    value: int = Field(default=1, ge=0)
    names: dict[str, str] = Field(default_factory=dict)

    @field_validator("value")
    @classmethod
    def _check(cls, v: int) -> int:
        return v


class _Other(BaseModel):
    kind: Literal["b"] = "b"
    text: str | None = None


adapter: TypeAdapter = TypeAdapter(Annotated[_Spec | _Other, Field(discriminator="kind")])
adapter.validate_json(json.dumps({"kind": "a", "value": 2}))
_Spec.model_validate_json(_Spec().model_dump_json())
jinja2.sandbox.ImmutableSandboxedEnvironment().from_string("{{ messages }}").render(messages=[])
