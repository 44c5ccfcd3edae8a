"""The machine-readable outputs scripts read, pinned: `mf run --json` events (each kind's keys, the
result's keys for validate and load, the error's), `mf images --json` and `mf providers --json` rows, and
`mf run --detach --json`. A change to any of them breaks someone's pipeline: it must be deliberate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import mf

EVENT_KEYS = {
    "stage": {"v", "event", "name", "message"},
    "log": {"v", "event", "level", "message"},
    "metric": {"v", "event", "name", "value", "step"},
    "progress": {"v", "event", "current", "total", "unit", "message"},
    "error": {"v", "event", "kind", "message", "hint"},
}
RESULT_KEYS = {
    "validate": {"v", "event", "provider", "action", "image", "model", "valid", "path", "name", "architecture",
                 "parameters", "context_length", "vocab_size", "quantization", "tensors", "file_size",
                 "gguf_version", "has_chat_template"},
    "load": {"v", "event", "provider", "action", "image", "model", "prompt", "text", "prompt_tokens", "new_tokens",
             "finish_reason", "seconds", "tokens_per_second", "load_seconds", "device", "threads", "cpu_budget",
             "backend"},
}


def _shapes(events: list[dict[str, Any]]) -> None:
    for event in events:
        if event["event"] == "result":
            assert set(event) == RESULT_KEYS[event["action"]], sorted(event)
        else:
            assert set(event) == EVENT_KEYS[event["event"]], event


def test_run_json_events_keep_their_keys(gguf_image: str, demo_model: Path, truncated_gguf: Path) -> None:
    for action in ("validate", "load"):
        res = mf("run", "--provider", "gguf", action, "--model", str(demo_model), "--prompt", "Hi",
                 "--max-new-tokens", "4", "--json")
        assert res.code == 0, res.stderr
        _shapes(res.events)
        assert res.last["event"] == "result" and res.last["image"] == gguf_image
        assert {e["event"] for e in res.events} >= {"stage", "result"}
    bad = mf("run", "--provider", "gguf", "validate", "--model", str(truncated_gguf), "--json")
    assert bad.code != 0 and bad.last["event"] == "error"
    _shapes(bad.events)


def test_images_and_providers_json_keep_their_keys(gguf_image: str) -> None:
    rows = json.loads(mf("images", "--json").stdout)
    assert rows and all(set(r) == {"provider", "flavour", "tag", "status", "size_mb", "created", "lock_hash", "builder",
                                   "superseded"} for r in rows), rows[0]
    providers = json.loads(mf("providers", "--json").stdout)
    assert {p["name"] for p in providers} >= {"gguf", "huggingface", "unsloth"}
    assert all(set(p) == {"name", "origin", "actions", "requires_gpu", "network", "secrets", "image", "built", "note"}
               for p in providers)


def test_a_detached_run_prints_its_job_as_json(gguf_image: str, demo_model: Path) -> None:
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model), "--detach", "--json")
    assert res.code == 0, res.stderr
    outcome = json.loads(res.stdout.strip().splitlines()[-1])
    try:
        assert list(outcome) == ["job", "backend", "detached"] and outcome["backend"] == "docker"
    finally:
        assert mf("jobs", "cancel", outcome["job"]).code == 0
