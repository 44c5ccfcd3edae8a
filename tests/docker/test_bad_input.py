"""Bad input, case by case: a one-line error that says what to do, a non-zero exit code, no
traceback, no container left behind (the autouse fixture checks), and no partial output."""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from providers.contract import EXIT_CODES

from .conftest import mf

Ctx = dict[str, Any]


def _dataset(ctx: Ctx, text: str) -> str:
    path = ctx["tmp"] / "data.jsonl"
    path.write_text(text)
    return str(path)


def _config(ctx: Ctx, data: Any) -> str:
    path = ctx["tmp"] / "job.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _corrupt_checkpoint(ctx: Ctx) -> str:
    broken = ctx["tmp"] / "broken-model"
    shutil.copytree(ctx["hf"], broken)
    with (broken / "model.safetensors").open("r+b") as fh:
        fh.write(struct.pack("<Q", 10**12))
    return str(broken)


def _finished_run(ctx: Ctx) -> str:
    out = ctx["tmp"] / "finished"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    return str(out)


GOOD_DATA = '{"prompt": "The capital of France is", "completion": " Paris."}\n'
TRAIN = ["run", "--provider", "huggingface", "train"]

# (id, needs, args, exit kind, what the one line must say)
CASES: list[tuple[str, tuple[str, ...], Callable[[Ctx], list[str]], str, str]] = [
    ("unknown provider", (), lambda c: ["run", "--provider", "ggml", "validate", "--model", c["gguf"]],
     "provider", "Unknown provider: ggml. Available providers: ['gguf', 'huggingface', 'unsloth']"),
    ("unknown action", (), lambda c: ["run", "--provider", "gguf", "export", "--model", c["gguf"]],
     "configuration", "Invalid value for 'ACTION': 'export' is not one of 'validate', 'load', 'train'"),
    ("tokens out of range", (), lambda c: ["run", "-p", "gguf", "load", "--model", c["gguf"], "--max-new-tokens", "0"],
     "configuration", "Invalid value for '--max-new-tokens'"),
    ("missing model path", (), lambda c: ["run", "-p", "gguf", "validate", "--model", str(c["tmp"] / "absent.gguf")],
     "model_access", "Model not found"),
    ("folder with no config", ("hf_image",), lambda c: ["run", "-p", "huggingface", "validate", "--model", str(c["tmp"])],
     "model_access", "has no config.json"),
    ("truncated gguf", ("gguf_image",), lambda c: ["run", "-p", "gguf", "validate", "--model", c["truncated"]],
     "model_access", "truncated.gguf is truncated"),
    ("text file named .gguf", ("gguf_image",), lambda c: ["run", "-p", "gguf", "load", "--model", c["text"]],
     "model_access", "notes.gguf is not a GGUF file"),
    ("corrupt safetensors header", ("hf",),
     lambda c: ["run", "-p", "huggingface", "validate", "--model", _corrupt_checkpoint(c)],
     "model_access", "corrupt safetensors header"),
    ("unsupported model class", ("hf",),
     lambda c: ["run", "-p", "huggingface", "validate", "--model", str(c["hf"]), "--model-class", "AutoModelForCTC"],
     "provider", "does not support model_class 'AutoModelForCTC'"),
    ("gguf model class", ("gguf_image",),
     lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--model-class", "AutoModelForSeq2SeqLM"],
     "provider", "Supported: ['AutoModelForCausalLM']"),
    ("malformed config json", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"],
                                             "--config", _config(c, '{"provider_config": ')],
     "configuration", "is not valid JSON (line 1"),
    ("unknown config key", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"],
                                          "--config", _config(c, {"providr_config": {}})],
     "configuration", "providr_config: Extra inputs are not permitted"),
    ("hyperparameter out of range", ("hf",),
     lambda c: [*TRAIN, "--model", str(c["hf"]), "--dataset", _dataset(c, GOOD_DATA), "--output", str(c["out"]),
                "--config", _config(c, {"train": {"learning_rate": -1}})],
     "configuration", "train config: learning_rate: Input should be greater than 0"),
    ("dataset missing", ("hf",),
     lambda c: [*TRAIN, "--model", str(c["hf"]), "--dataset", str(c["tmp"] / "none.jsonl"), "--output", str(c["out"])],
     "configuration", "Dataset not found"),
    ("dataset empty", ("hf",),
     lambda c: [*TRAIN, "--model", str(c["hf"]), "--dataset", _dataset(c, "\n"), "--output", str(c["out"])],
     "configuration", "Dataset data.jsonl is empty"),
    ("dataset bad json line", ("hf",),
     lambda c: [*TRAIN, "--model", str(c["hf"]), "--dataset", _dataset(c, GOOD_DATA + "{oops\n"), "--output",
                str(c["out"])],
     "configuration", "data.jsonl line 2: not valid JSON"),
    ("dataset missing fields", ("hf",),
     lambda c: [*TRAIN, "--model", str(c["hf"]), "--dataset", _dataset(c, GOOD_DATA + '{"prompt": "x"}\n'),
                "--output", str(c["out"])],
     "configuration", "data.jsonl line 2: missing or empty 'completion'"),
    ("training without a dataset", ("hf",), lambda c: [*TRAIN, "--model", str(c["hf"]), "--output", str(c["out"])],
     "configuration", "Training needs a dataset"),
    ("output folder not writable", ("gguf_image",),
     lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--output", "/proc/mf-output"],
     "configuration", "Cannot create the output folder /proc/mf-output"),
    ("output holds a finished run", ("hf",),
     lambda c: [*TRAIN, "--model", str(c["hf"]), "--dataset", _dataset(c, GOOD_DATA), "--output", _finished_run(c)],
     "configuration", "already holds a finished run"),
    ("resume without a checkpoint", ("hf",),
     lambda c: [*TRAIN, "--model", str(c["hf"]), "--dataset", _dataset(c, GOOD_DATA), "--output", str(c["out"]),
                "--resume"],
     "configuration", "--resume found no complete checkpoint"),
    ("gguf cannot train", (), lambda c: ["run", "-p", "gguf", "train", "--model", c["gguf"]],
     "unsupported_action", "The gguf provider does not train. Providers that train: ['huggingface', 'unsloth']"),
    ("image flavour that has no recipe", (), lambda c: ["run", "-p", "unsloth", "validate", "--model", c["gguf"],
                                                       "--flavour", "cpu"],
     "image", "Provider unsloth has no 'cpu' flavour. Flavours: ['cuda']"),
    ("docker engine down", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"]],
     "engine", "Cannot reach the Docker engine"),
    ("unsloth without a gpu", (), lambda c: ["run", "-p", "unsloth", "load", "--model", c["gguf"]],
     "provider", "The unsloth provider needs an NVIDIA GPU for load"),
    ("hub id while offline", ("gguf_image",),
     lambda c: ["run", "-p", "gguf", "validate", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:x.gguf"],
     "model_access", "is not in the HF cache and this run is offline"),
    ("hub model id while offline", ("hf_image",),
     lambda c: ["run", "-p", "huggingface", "validate", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct"],
     "model_access", "HuggingFaceTB/SmolLM2-135M-Instruct is not in the HF cache and this run is offline. Add --online"),
    ("question answering of a causal LM", ("hf",),
     lambda c: ["run", "-p", "huggingface", "train", "--model", str(c["hf"]), "--task", "question-answering",
                "--dataset", _dataset(c, '{"context": "Paris is big.", "question": "What is big?", "answer": "Paris"}\n'),
                "--output", str(c["tmp"] / "run")],
     "configuration", "is not an encoder model: its weights do not load into a question-answering head"),
    ("a DPO record without rejected", ("hf",),
     lambda c: ["run", "-p", "huggingface", "train", "--model", str(c["hf"]), "--strategy", "dpo",
                "--dataset", _dataset(c, '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n'),
                "--output", str(c["tmp"] / "run")],
     "configuration", "data.jsonl line 2: missing 'rejected'"),
    ("qlora of a gguf file", (),
     lambda c: ["run", "-p", "huggingface", "train", "--model", c["gguf"], "--strategy", "qlora",
                "--dataset", _dataset(c, '{"text": "a"}\n'), "--output", str(c["tmp"] / "run")],
     "configuration", "is a GGUF file (already quantized by llama.cpp)"),
    ("remote code without a pinned revision", ("hf",),
     lambda c: ["run", "-p", "huggingface", "validate", "--model", str(c["hf"]),
                "--config", _config(c, {"provider_config": {"trust_remote_code": True}})],
     "configuration", "trust_remote_code runs the model repository's own Python code"),
    ("memory without a unit", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--memory", "abc"],
     "configuration", "Invalid value for '--memory': 'abc' is not a memory size; use a number with a unit, e.g. --memory 512m"),
    ("memory below the engine's minimum", (),
     lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--memory", "1k"],
     "configuration", "'1k' is below the engine's minimum of 6m"),
    ("gpus not a count", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--gpus", "foo"],
     "configuration", "Invalid value for '--gpus': 'foo' is not a GPU request; use --gpus all, --gpus 2 or --gpus device=0,1"),
    ("gpus zero", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--gpus", "0"],
     "configuration", "'0' is not a GPU request"),
    ("gpus on an engine with no nvidia runtime", (),
     lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--gpus", "all"],
     "configuration", "--gpus all asks for GPUs, but this Docker engine has no NVIDIA runtime"),
    ("gpus count on an engine with no nvidia runtime", (),
     lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--gpus", "2"],
     "configuration", "Install the NVIDIA Container Toolkit"),
    ("docker timeout not a number", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"]],
     "engine", "MF_DOCKER_TIMEOUT='soon' is not a number of seconds"),
    ("model readable only by its owner", ("gguf_image",),
     lambda c: ["run", "-p", "gguf", "validate", "--model", c["private"]],
     "model_access", "is readable only by its owner"),
    ("slurm options on the docker backend", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"],
                                                           "--partition", "gpu"],
     "configuration", "--partition and --time go with --backend slurm"),
    ("not a job id", (), lambda c: ["jobs", "logs", "mf-gguf-load-1a2b"],
     "configuration", "'mf-gguf-load-1a2b' is not a job id; `mf jobs list` shows them"),
    ("a docker job that is not there", (), lambda c: ["jobs", "cancel", "docker-mf-gguf-load-00000000"],
     "configuration", "No record of docker-mf-gguf-load-00000000 on this machine's Docker engine."),
    ("kubernetes client not installed", (),
     lambda c: ["run", "--backend", "kubernetes", "-p", "huggingface", "train", "--model", "pvc://m/x", "--dataset",
                "pvc://d/d.jsonl", "--output", "pvc://r/1", "--dry-run"],
     "configuration", "The Kubernetes backend needs the official kubernetes client, which is not installed beside mf. "
                      "pip install 'modelforge[kubernetes]'"),
    ("empty prompt", (), lambda c: ["run", "-p", "gguf", "load", "--model", c["gguf"], "--prompt", " "],
     "configuration", "Invalid value for '--prompt': an empty prompt leaves the model nothing to complete"),
    ("registry with a scheme and a space", (), lambda c: ["config", "set", "registry", "http://foo bar"],
     "configuration", "'http://foo bar' is not a registry reference. Give HOST[:PORT]/PATH: drop the scheme"),
    ("--registry with a scheme", (), lambda c: ["run", "-p", "gguf", "validate", "--model", c["gguf"], "--registry",
                                                "https://reg.example.com/team"],
     "configuration", "Invalid value for '--registry': 'https://reg.example.com/team' is not a registry reference"),
    ("MF_REGISTRY with a space", (), lambda c: ["images", "pull", "gguf"],
     "configuration", "'reg.example.com/my team' (MF_REGISTRY) is not a registry reference"),
]


@pytest.mark.parametrize(("needs", "make_args", "kind", "message"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input(request: pytest.FixtureRequest, tmp_path: Path, demo_model: Path, truncated_gguf: Path,
                   text_named_gguf: Path, monkeypatch: pytest.MonkeyPatch, needs: tuple[str, ...],
                   make_args: Callable[[Ctx], list[str]], kind: str, message: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ctx: Ctx = {"tmp": work, "gguf": str(demo_model), "truncated": str(truncated_gguf), "text": str(text_named_gguf),
                "out": tmp_path / "out"}
    for name in needs:
        ctx[name] = request.getfixturevalue({"hf": "smollm2_hf"}.get(name, name))
    if request.node.callspec.id == "docker engine down":
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    if request.node.callspec.id == "kubernetes client not installed":  # as after `pip install modelforge`, no extras
        hide = tmp_path.parent / f"{tmp_path.name}-no-kubernetes"
        hide.mkdir()
        (hide / "sitecustomize.py").write_text("import sys\nsys.modules['kubernetes'] = None\n")
        monkeypatch.setenv("PYTHONPATH", str(hide))
    if request.node.callspec.id == "registry with a scheme and a space":
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # nothing may be written there
    if request.node.callspec.id == "MF_REGISTRY with a space":
        monkeypatch.setenv("MF_REGISTRY", "reg.example.com/my team")
    if request.node.callspec.id == "docker timeout not a number":
        monkeypatch.setenv("MF_DOCKER_TIMEOUT", "soon")
    if "no nvidia runtime" in request.node.callspec.id:
        from orchestrator import engine

        if engine.has_nvidia_runtime():
            pytest.skip("this engine has an NVIDIA runtime")
    if request.node.callspec.id == "model readable only by its owner":
        if os.getuid() != 0:
            pytest.skip("the job user differs from the owner only when mf runs as root")
        private = work / "private.gguf"
        shutil.copyfile(demo_model, private)
        private.chmod(0o600)
        ctx["private"] = str(private)
    args = make_args(ctx)  # writes the inputs
    before = {p for p in tmp_path.rglob("*")}

    res = mf(*args)

    assert res.code == EXIT_CODES[kind], res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    assert message in errors[0]
    assert "Traceback" not in res.stderr
    assert res.stdout == ""
    assert not (tmp_path / "out").exists()
    created = {p for p in tmp_path.rglob("*")} - before
    assert not created, f"left behind: {sorted(created)}"
