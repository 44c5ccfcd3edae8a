"""Every task x strategy cell that makes sense, trained for real in the huggingface cpu image: QLoRA and
DPO on the real SmolLM2 checkpoint, summarization on a tiny T5 and extractive QA on a tiny BERT (made
offline by scripts/make_tiny_models.py). Each run must lower its loss, and its adapter must load with
plain peft + transformers (a client script that imports none of our code) and do the task."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import PROJECT_ROOT

from .conftest import mf
from .test_huggingface_image import write_dataset

FACTS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Egypt", "Cairo"),
         ("Peru", "Lima")]


def _tiny() -> Any:
    spec = importlib.util.spec_from_file_location("make_tiny_models", PROJECT_ROOT / "scripts" / "make_tiny_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_models(hf_image: str, docker_client: Any) -> dict[str, Path]:
    return dict(_tiny().ensure_tiny_models(docker_client, hf_image))


def write_preferences(path: Path, n: int = 24) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            country, city = FACTS[i % len(FACTS)]
            wrong = FACTS[(i + 1) % len(FACTS)][1]
            fh.write(json.dumps({"prompt": f"The capital of {country} is", "chosen": f" {city}.",
                                 "rejected": f" {wrong}."}) + "\n")
    return path


def train(tmp_path: Path, model: Path, data: Path, *flags: str, **train: Any) -> tuple[Any, Path]:
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"train": {"batch_size": 4, "save_steps": 1000, "logging_steps": 1,
                                            "max_seq_length": 64, "lora_r": 8, **train}}))
    out = tmp_path / "run"
    res = mf("run", "--provider", "huggingface", "train", "--model", str(model), "--dataset", str(data),
             "--output", str(out), "--config", str(config), *flags, "--json", timeout=900)
    assert res.code == 0, res.stderr
    return res, out


def losses(res: Any) -> list[float]:
    return [e["value"] for e in res.events if e["event"] == "metric" and e["name"] == "loss"]


def assert_loss_falls(res: Any) -> None:
    values = losses(res)
    assert len(values) >= 6, values
    first, last = sum(values[:3]) / 3, sum(values[-3:]) / 3
    assert last < 0.8 * first, f"the loss did not fall: {values}"


def client(docker_client: Any, image: str, script: str, mounts: dict[Path, str]) -> dict[str, Any]:
    """Run ``script`` (plain transformers + peft) in the image with the folders mounted read-only."""
    out = docker_client.containers.run(
        image, entrypoint=["python", "-c", script], network_mode="none", remove=True,
        environment={"HOME": "/tmp", "PYTHONPATH": ""}, user=f"{os.getuid()}:{os.getgid()}",
        volumes={str(host): {"bind": inside, "mode": "ro"} for host, inside in mounts.items()},
    )
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


_DPO_MARGIN = """
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
tok = AutoTokenizer.from_pretrained("/base")
model = AutoModelForCausalLM.from_pretrained("/base", dtype=torch.float32)
pairs = [json.loads(line) for line in open("/data/prefs.jsonl")][:6]
def logp(m, prompt, answer):
    n = tok(prompt, return_tensors="pt").input_ids.shape[1]
    ids = tok(prompt + answer, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = m(input_ids=ids).logits[0, :-1].log_softmax(-1)
    return float(logits.gather(1, ids[0, 1:, None])[n - 1:].sum())
def margin(m):
    return sum(logp(m, r["prompt"], r["chosen"]) - logp(m, r["prompt"], r["rejected"]) for r in pairs) / len(pairs)
before = margin(model)
after = margin(PeftModel.from_pretrained(model, "/run/adapter"))
print(json.dumps({"before": before, "after": after}))
"""


@pytest.mark.parametrize("flags, train_extra", [
    (["--strategy", "dpo"], {}),
    (["--strategy", "rlhf"], {"quantization": "nf4"}),  # ModelForge's name, on a 4-bit base
], ids=["dpo", "rlhf-4bit"])
def test_dpo_makes_the_policy_prefer_chosen_answers(smollm2_hf: Path, tmp_path: Path, docker_client: Any,
                                                    hf_image: str, flags: list[str], train_extra: dict) -> None:
    data = write_preferences(tmp_path / "prefs.jsonl")
    res, out = train(tmp_path, smollm2_hf, data, *flags, max_steps=8, batch_size=2, learning_rate=1e-3,
                     beta=0.1, **train_extra)
    assert_loss_falls(res)
    names = {e["name"] for e in res.events if e["event"] == "metric"}
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["strategy"] == flags[1]
    if train_extra:
        assert manifest["quantization"]["layers"]["Linear4bit"] > 0
        logs = [e["message"] for e in res.events if e["event"] == "log"]
        assert any("rlhf runs DPO" in m for m in logs)
    check = client(docker_client, hf_image, _DPO_MARGIN, {smollm2_hf: "/base", out: "/run", tmp_path: "/data"})
    assert check["after"] > check["before"] + 0.5, check


_CAUSAL_REPLY = """
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
tok = AutoTokenizer.from_pretrained("/base")
base = AutoModelForCausalLM.from_pretrained("/base", dtype=torch.float32)
ids = tok("The capital of Peru is", return_tensors="pt")
with torch.no_grad():
    before = base(**ids).logits
    tuned = PeftModel.from_pretrained(base, "/run/adapter")
    after = tuned(**ids).logits
    text = tok.decode(tuned.generate(**ids, max_new_tokens=4, do_sample=False)[0][ids.input_ids.shape[1]:])
print(json.dumps({"max_diff": float((after - before).abs().max()), "text": text}))
"""


def test_qlora_trains_a_4bit_base_and_its_adapter_loads_on_full_weights(smollm2_hf: Path, tmp_path: Path,
                                                                         docker_client: Any, hf_image: str) -> None:
    data = write_dataset(tmp_path / "data.jsonl")
    res, out = train(tmp_path, smollm2_hf, data, "--strategy", "qlora", max_steps=8, batch_size=2,
                     learning_rate=1e-3, eval_split=0.25)
    assert_loss_falls(res)
    stages = {e["name"]: e["message"] for e in res.events if e["event"] == "stage"}
    assert "base weights 4-bit nf4: 210 Linear4bit" in stages["quantize"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"] == {"type": "nf4", "layers": {"Linear4bit": 210}}
    assert manifest["config"]["double_quant"] is True and manifest["dataset"]["eval_records"] == 6
    assert manifest["metrics"]["eval_loss"] > 0
    check = client(docker_client, hf_image, _CAUSAL_REPLY, {smollm2_hf: "/base", out: "/run"})
    assert check["max_diff"] > 1e-3 and "Lima" in check["text"], check


_SUMMARIZE = """
import json
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from peft import PeftModel
tok = AutoTokenizer.from_pretrained("/run/adapter")
model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained("/base"), "/run/adapter")
records = [json.loads(line) for line in open("/data/docs.jsonl")][:6]
out = []
for r in records:
    ids = tok(r["document"], return_tensors="pt")
    out.append(tok.decode(model.generate(**ids, max_new_tokens=12, do_sample=False)[0], skip_special_tokens=True))
print(json.dumps({"summaries": out, "targets": [r["summary"] for r in records]}))
"""


@pytest.mark.parametrize("strategy", ["sft", "qlora"])
def test_summarization_trains_an_encoder_decoder(tiny_models: dict[str, Path], tmp_path: Path, docker_client: Any,
                                                 hf_image: str, strategy: str) -> None:
    data = _tiny().write_summarization_dataset(tmp_path / "docs.jsonl")
    res, out = train(tmp_path, tiny_models["t5"], data, "--task", "summarization", "--strategy", strategy,
                     max_steps=80, learning_rate=1e-2, eval_split=0.25, max_target_length=16, logging_steps=5)
    assert_loss_falls(res)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_class"] == "AutoModelForSeq2SeqLM" and manifest["task"] == "summarization"
    assert {"eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_loss"} <= set(manifest["metrics"])
    if strategy == "qlora":
        assert manifest["quantization"]["layers"]["Linear4bit"] > 0
    check = client(docker_client, hf_image, _SUMMARIZE, {tiny_models["t5"]: "/base", out: "/run", tmp_path: "/data"})
    assert all(s.strip() for s in check["summaries"]), check
    hits = sum(s.strip() == t for s, t in zip(check["summaries"], check["targets"], strict=True))
    print(f"summaries equal to their targets: {hits}/6; rouge1 {manifest['metrics']['eval_rouge1']}")


_ANSWER = """
import json, torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer
from peft import PeftModel
tok = AutoTokenizer.from_pretrained("/run/adapter")
model = PeftModel.from_pretrained(AutoModelForQuestionAnswering.from_pretrained("/base"), "/run/adapter").eval()
records = [json.loads(line) for line in open("/data/qa.jsonl")][:6]
spans = []
for r in records:
    enc = tok(r["question"], r["context"], return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0]
    seq = enc.sequence_ids(0)
    with torch.no_grad():
        out = model(**enc)
    ctx = [i for i, s in enumerate(seq) if s == 1]
    s = max(ctx, key=lambda i: out.start_logits[0, i])
    e = max([i for i in ctx if s <= i < s + 30], key=lambda i: out.end_logits[0, i])
    spans.append(r["context"][offsets[s][0]:offsets[e][1]])
print(json.dumps({"spans": spans, "answers": [r["answers"]["text"][0] for r in records],
                  "contexts": [r["context"] for r in records]}))
"""


def test_question_answering_trains_an_encoder_that_extracts_spans(tiny_models: dict[str, Path], tmp_path: Path,
                                                                  docker_client: Any, hf_image: str) -> None:
    data = _tiny().write_qa_dataset(tmp_path / "qa.jsonl")
    res, out = train(tmp_path, tiny_models["bert"], data, "--task", "question-answering", max_steps=160,
                     learning_rate=1e-2, eval_split=0.25, doc_stride=16, logging_steps=5)
    assert_loss_falls(res)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_class"] == "AutoModelForQuestionAnswering"
    assert {"eval_exact_match", "eval_f1", "eval_loss"} <= set(manifest["metrics"])
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "QUESTION_ANS" and "qa_outputs" in adapter_config["modules_to_save"]
    check = client(docker_client, hf_image, _ANSWER, {tiny_models["bert"]: "/base", out: "/run", tmp_path: "/data"})
    assert all(span and span in ctx for span, ctx in zip(check["spans"], check["contexts"], strict=True)), check
    hits = sum(span == answer for span, answer in zip(check["spans"], check["answers"], strict=True))
    assert hits >= 4, check  # a head that did not load from the adapter (random weights) gets none right
    print(f"answers extracted exactly: {hits}/6; eval EM {manifest['metrics']['eval_exact_match']}")


def test_load_in_4bit_on_the_cpu_generates(smollm2_hf: Path, tmp_path: Path) -> None:
    config = tmp_path / "q.json"
    config.write_text(json.dumps({"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                                          "bnb_4bit_compute_dtype": "float32"}}))
    res = mf("run", "--provider", "huggingface", "load", "--model", str(smollm2_hf), "--config", str(config),
             "--prompt", "The capital of France is", "--max-new-tokens", "6", "--json")
    assert res.code == 0, res.stderr
    assert res.last["quantized_layers"] == {"Linear4bit": 210}
    assert res.last["new_tokens"] > 0 and res.last["device"] == "cpu"
    print(f"4-bit answer: {res.last['text']!r}")




@pytest.mark.parametrize("cell", ["dpo", "summarization", "question-answering"])
def test_every_new_cell_stops_with_a_checkpoint_and_resumes(cell: str, smollm2_hf: Path, tiny_models: dict[str, Path],
                                                            tmp_path: Path, docker_client: Any) -> None:
    """SIGTERM (what `docker stop` and Ctrl-C's clean-up send) saves a whole checkpoint in every recipe's
    trainer, the exit says how to go on, and --resume finishes the run from that checkpoint."""
    import subprocess

    from providers.contract import EXIT_CODES

    from .conftest import job_containers

    if cell == "dpo":
        model, data, flags, steps = smollm2_hf, write_preferences(tmp_path / "prefs.jsonl"), ["--strategy", "dpo"], 24
    elif cell == "summarization":
        model, data, flags, steps = (tiny_models["t5"], _tiny().write_summarization_dataset(tmp_path / "d.jsonl"),
                                     ["--task", "summarization"], 400)
    else:
        model, data, flags, steps = (tiny_models["bert"], _tiny().write_qa_dataset(tmp_path / "d.jsonl"),
                                     ["--task", "question-answering"], 400)
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"train": {"max_steps": steps, "batch_size": 2, "save_steps": 1000,
                                            "max_seq_length": 64, "learning_rate": 1e-3, "doc_stride": 16}}))
    out = tmp_path / "run"
    args = ["run", "--provider", "huggingface", "train", "--model", str(model), "--dataset", str(data),
            "--output", str(out), "--config", str(config), *flags, "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["current"] >= 3:
            break
    [container] = job_containers(docker_client)
    container.kill(signal="SIGTERM")
    proc.communicate(timeout=300)
    assert proc.returncode == EXIT_CODES["interrupted"]
    assert not (out / "manifest.json").exists() and not (out / "adapter").exists()
    [saved] = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert 3 <= saved < steps

    res = mf(*args, "--resume", timeout=900)
    assert res.code == 0, res.stderr
    assert res.last["resumed_from"] == f"checkpoint-{saved}" and res.last["steps"] == steps
    assert (out / "adapter" / "adapter_config.json").is_file()
