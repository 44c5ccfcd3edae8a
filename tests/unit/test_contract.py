"""The container contract, from both ends: the job spec in, JSON-lines events out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from providers.contract import (
    CONTRACT_VERSION,
    EXIT_CODES,
    ErrorEvent,
    JobSpec,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    ResultEvent,
    StageEvent,
    decode_event,
    encode_event,
)
from providers.errors import ERROR_CLASSES, ConfigurationError, ModelAccessError, error_from_kind


def test_job_spec_round_trips() -> None:
    spec = JobSpec(provider="gguf", action="load", model="/models/m.gguf", prompt="Hi", provider_config={"n_ctx": 64})
    again = JobSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["contract_version"] == CONTRACT_VERSION


@pytest.mark.parametrize(
    "change, field",
    [
        ({"contract_version": CONTRACT_VERSION + 1}, "contract_version"),
        ({"action": "publish"}, "action"),
        ({"surprise": 1}, "surprise"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_job_spec_refuses_what_it_does_not_know(change: dict, field: str) -> None:
    data = {"provider": "gguf", "action": "validate", "model": "/m.gguf", **change}
    with pytest.raises(ConfigurationError, match=field):
        JobSpec.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "event",
    [
        StageEvent(name="load", message="loading"),
        ProgressEvent(current=3, total=10, unit="steps"),
        MetricEvent(name="loss", value=1.25, step=3),
        LogEvent(level="warning", message="careful"),
        ResultEvent(provider="gguf", action="validate", parameters=134515008, architecture="llama"),
        ErrorEvent(kind="model_access", message="gone", hint="look again"),
    ],
)
def test_every_event_type_round_trips(event) -> None:
    line = encode_event(event)
    assert "\n" not in line
    assert decode_event(line) == event


def test_result_keeps_action_specific_fields_at_the_top_level() -> None:
    payload = json.loads(encode_event(ResultEvent(provider="gguf", action="load", text=" Paris.")))
    assert payload == {"v": CONTRACT_VERSION, "event": "result", "provider": "gguf", "action": "load", "text": " Paris."}


@pytest.mark.parametrize("line", ["llama.cpp says hi", "[1, 2]", '{"v": 99, "event": "log", "message": "x"}',
                                  '{"v": 1, "event": "explode"}'])
def test_lines_that_are_not_events_are_rejected(line: str) -> None:
    with pytest.raises(ValueError):
        decode_event(line)


def test_each_error_kind_has_its_own_exit_code() -> None:
    codes = [cls.exit_code for cls in ERROR_CLASSES.values()]
    assert len(codes) == len(set(codes))
    assert EXIT_CODES["ok"] == 0 and 0 not in codes
    assert isinstance(error_from_kind("model_access", "m", "h"), ModelAccessError)


def _run_runtime(spec: dict, tmp_path: Path) -> tuple[int, list[dict], str]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "providers.runtime", str(spec_file)],
                          capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, events, proc.stderr


def test_runtime_validates_a_real_model_and_ends_with_a_result(demo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code, events, _ = _run_runtime(
        {"provider": "gguf", "action": "validate", "model": str(demo_model), "output_dir": str(out)}, tmp_path
    )
    assert code == 0
    assert [e["event"] for e in events] == ["stage", "result"]
    assert events[-1]["parameters"] == 134_515_008
    assert json.loads((out / "result.json").read_text())["parameters"] == 134_515_008


def test_runtime_reports_errors_as_an_event_and_an_exit_code(tmp_path: Path, truncated_gguf: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code, events, stderr = _run_runtime(
        {"provider": "gguf", "action": "validate", "model": str(truncated_gguf), "output_dir": str(out)}, tmp_path
    )
    assert code == EXIT_CODES["model_access"]
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "model_access"
    assert "truncated" in events[-1]["message"]
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []


def test_runtime_refuses_a_spec_from_another_contract_version(tmp_path: Path) -> None:
    code, events, _ = _run_runtime(
        {"contract_version": 0, "provider": "gguf", "action": "validate", "model": "/x.gguf"}, tmp_path
    )
    assert code == EXIT_CODES["configuration"]
    assert "contract version" in events[-1]["message"]


def test_runtime_says_which_providers_train(tmp_path: Path, demo_model: Path) -> None:
    code, events, _ = _run_runtime({"provider": "gguf", "action": "train", "model": str(demo_model)}, tmp_path)
    assert code == EXIT_CODES["unsupported_action"]
    assert events[-1]["message"] == "The gguf provider does not train. Providers that train: ['huggingface', 'unsloth']."
