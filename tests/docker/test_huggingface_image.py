"""`mf run --provider huggingface`: validate, load, train and resume on the real SmolLM2 checkpoint,
in the real cpu image."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from providers.contract import EXIT_CODES

from .conftest import JOB_LABEL, SESSION_LABEL, job_containers, mf

PROMPT = "The capital of France is"


def write_dataset(path: Path, n: int = 24) -> Path:
    facts = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Egypt", "Cairo"),
             ("Peru", "Lima")]
    with path.open("w") as fh:
        for i in range(n):
            country, city = facts[i % len(facts)]
            fh.write(json.dumps({"prompt": f"The capital of {country} is", "completion": f" {city}."}) + "\n")
    return path


def write_config(path: Path, **train: Any) -> Path:
    base = {"max_steps": 10, "batch_size": 2, "save_steps": 5, "logging_steps": 1, "max_seq_length": 64,
            "learning_rate": 1e-3, "lora_r": 4}
    path.write_text(json.dumps({"train": {**base, **train}}))
    return path


def test_validate_a_local_checkpoint(smollm2_hf: Path) -> None:
    res = mf("run", "--provider", "huggingface", "validate", "--model", str(smollm2_hf), "--json")
    assert res.code == 0, res.stderr
    result = res.last
    assert result["architecture"] == "LlamaForCausalLM"
    assert result["parameters"] == 134_515_008
    assert result["vocab_size"] == 49152
    assert result["weights"] == ["model.safetensors"]


def test_validate_a_gguf_file(hf_image: str, demo_model: Path) -> None:
    res = mf("run", "--provider", "huggingface", "validate", "--model", str(demo_model), "--json")
    assert res.code == 0, res.stderr
    assert res.last["architecture"] == "LlamaForCausalLM" and res.last["parameters"] == 134_515_008


def test_load_and_generate_greedy_says_paris(smollm2_hf: Path) -> None:
    res = mf("run", "--provider", "huggingface", "load", "--model", str(smollm2_hf), "--prompt", PROMPT,
             "--max-new-tokens", "6", "--json")
    assert res.code == 0, res.stderr
    assert "Paris" in res.last["text"]
    assert res.last["device"] == "cpu"


def test_a_corrupt_safetensors_header_is_caught_at_validate(smollm2_hf: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(smollm2_hf, broken)
    weights = broken / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.write(struct.pack("<Q", 10**12))
    res = mf("run", "--provider", "huggingface", "validate", "--model", str(broken))
    assert res.code == EXIT_CODES["model_access"]
    assert "corrupt safetensors header" in res.stderr and "Traceback" not in res.stderr


def test_a_folder_without_config_is_refused(hf_image: str, tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    res = mf("run", "--provider", "huggingface", "validate", "--model", str(tmp_path / "empty-model"))
    assert res.code == EXIT_CODES["model_access"]
    assert "has no config.json" in res.stderr


def test_an_unsupported_model_class_lists_the_supported_ones(smollm2_hf: Path) -> None:
    res = mf("run", "--provider", "huggingface", "validate", "--model", str(smollm2_hf), "--model-class", "AutoModel")
    assert res.code == EXIT_CODES["provider"]
    assert "'AutoModelForCausalLM', 'AutoModelForSeq2SeqLM'" in res.stderr


_CHECK_ADAPTER = """
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
tok = AutoTokenizer.from_pretrained("/base")
ids = tok("The capital of Italy is", return_tensors="pt")
base = AutoModelForCausalLM.from_pretrained("/base", dtype=torch.float32)
with torch.no_grad():
    before = base(**ids).logits
    tuned = PeftModel.from_pretrained(base, "/trained/adapter")
    after = tuned(**ids).logits
print(json.dumps({"max_diff": float((after - before).abs().max()), "peft": type(tuned).__name__}))
"""


def test_train_ten_steps_writes_an_adapter_that_changes_the_logits(smollm2_hf: Path, tmp_path: Path,
                                                                   docker_client: Any, hf_image: str) -> None:
    data = write_dataset(tmp_path / "data.jsonl")
    out = tmp_path / "run"
    res = mf("run", "--provider", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(data),
             "--output", str(out), "--config", str(write_config(tmp_path / "job.json")), "--json", timeout=900)
    assert res.code == 0, res.stderr
    losses = [e for e in res.events if e["event"] == "metric" and e["name"] == "loss"]
    assert [e["step"] for e in losses] == list(range(1, 11))
    progress = [e for e in res.events if e["event"] == "progress"]
    assert progress[-1]["current"] == 10 and progress[-1]["total"] == 10 and "steps/s" in progress[-1]["message"]
    assert res.last["steps"] == 10
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "tokenizer.json").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"] == hf_image and manifest["lock_hash"]
    assert manifest["dataset"]["records"] == 24 and len(manifest["dataset"]["sha256"]) == 64
    assert manifest["config"]["max_steps"] == 10 and manifest["metrics"]["global_step"] == 10
    out_json = docker_client.containers.run(
        hf_image, entrypoint=["python", "-c", _CHECK_ADAPTER], network_mode="none", remove=True,
        environment={"HOME": "/tmp"}, user=f"{os.getuid()}:{os.getgid()}",
        volumes={str(smollm2_hf): {"bind": "/base", "mode": "ro"}, str(out): {"bind": "/trained", "mode": "ro"}},
    )
    check = json.loads(out_json.decode().strip().splitlines()[-1])
    assert check["peft"] == "PeftModelForCausalLM"
    assert check["max_diff"] > 1e-3


def test_a_stopped_run_resumes_from_its_checkpoint(smollm2_hf: Path, tmp_path: Path, docker_client: Any) -> None:
    data = write_dataset(tmp_path / "data.jsonl")
    out = tmp_path / "run"
    config = write_config(tmp_path / "job.json", max_steps=24, save_steps=4)
    args = ["run", "--provider", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(data),
            "--output", str(out), "--config", str(config), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["current"] >= 6:
            break
    [container] = job_containers(docker_client)
    container.kill(signal="SIGTERM")  # what `docker stop` sends: training saves a checkpoint and stops
    proc.communicate(timeout=300)
    assert proc.returncode == EXIT_CODES["interrupted"]
    assert not (out / "manifest.json").exists() and not (out / "adapter").exists()
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and 6 <= checkpoints[-1] < 24

    res = mf(*args, "--resume", timeout=900)
    assert res.code == 0, res.stderr
    assert res.last["resumed_from"] == f"checkpoint-{checkpoints[-1]}"
    assert res.last["steps"] == 24
    steps = [e["step"] for e in res.events if e["event"] == "metric" and e["name"] == "loss"]
    assert steps[0] == checkpoints[-1] + 1 and steps[-1] == 24
    assert json.loads((out / "manifest.json").read_text())["resumed_from"] == f"checkpoint-{checkpoints[-1]}"


def test_a_broken_dataset_line_is_rejected_before_any_container(hf_image: str, smollm2_hf: Path, tmp_path: Path,
                                                                docker_client: Any) -> None:
    data = write_dataset(tmp_path / "data.jsonl", n=4)
    with data.open("a") as fh:
        fh.write('{"prompt": "The capital of Chile is", "completion": " Santiago."\n')
    since = time.time() - 1
    res = mf("run", "--provider", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(data),
             "--output", str(tmp_path / "run"))
    until = time.time() + 1
    assert res.code == EXIT_CODES["configuration"]
    assert "data.jsonl line 5: not valid JSON" in res.stderr
    created = list(docker_client.events(since=since, until=until, decode=True,
                                        filters={"label": [JOB_LABEL, SESSION_LABEL], "event": "create"}))
    assert created == []
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "Q"}, "line 1: missing or empty 'completion'"),
        ({"question": "Q"}, 'line 1: text-generation records are {"prompt", "completion"}, {"text"} or {"messages"}'),
    ],
)
def test_records_missing_fields_are_rejected(hf_image: str, smollm2_hf: Path, tmp_path: Path, record: dict,
                                             message: str) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(record) + "\n")
    res = mf("run", "--provider", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(data),
             "--output", str(tmp_path / "run"))
    assert res.code == EXIT_CODES["configuration"]
    assert message in res.stderr
