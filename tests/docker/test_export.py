"""`mf export` on the real SmolLM2, fine-tuned 10 steps by the real train path: merge and convert in the
huggingface image, quantize in the gguf image; the GGUF computes what the adapted model computes."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from providers.contract import EXIT_CODES

from .conftest import mf

PROMPT = "The capital of Italy is"
ANSWER = " Rome."

# Logits of the last prompt token from the model with its adapter applied by peft (not merged), the
# prompt's token ids, and the log-likelihood of ANSWER: the reference the GGUF must reproduce.
_PEFT_LOGITS = f"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
tok = AutoTokenizer.from_pretrained("/base")
model = AutoModelForCausalLM.from_pretrained("/base", dtype=torch.float32)
if len(sys.argv) > 1:
    model = PeftModel.from_pretrained(model, sys.argv[1])
ids = tok({PROMPT!r}, add_special_tokens=False)["input_ids"]
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0, -1]
print(json.dumps({{"ids": ids, "logits": logits.tolist(), "greedy": int(logits.argmax())}}))
"""

# The same from a GGUF with llama.cpp, plus the mean negative log-likelihood of ANSWER after PROMPT.
_GGUF_LOGITS = f"""
import json, sys, numpy as np, llama_cpp
# an f32 KV cache: llama.cpp's default (f16) would round the keys and values
llm = llama_cpp.Llama(sys.argv[1], n_ctx=128, logits_all=True, verbose=False, type_k=0, type_v=0)
ids = llm.tokenize({PROMPT!r}.encode(), add_bos=False, special=True)
answer = llm.tokenize({ANSWER!r}.encode(), add_bos=False, special=True)
llm.eval(ids + answer)
scores = np.array(llm.scores[: len(ids) + len(answer)], dtype=np.float64)
logp = scores - np.log(np.exp(scores - scores.max(-1, keepdims=True)).sum(-1, keepdims=True)) - scores.max(-1, keepdims=True)
nll = -np.mean([logp[len(ids) - 1 + i, t] for i, t in enumerate(answer)])
last = scores[len(ids) - 1]
print(json.dumps({{"ids": ids, "logits": last.tolist(), "greedy": int(last.argmax()), "nll": float(nll)}}))
"""


def _in_image(client: Any, image: str, code: str, args: list[str], volumes: dict[str, str]) -> dict[str, Any]:
    out = client.containers.run(image, entrypoint=["python", "-c", code, *args], network_mode="none", remove=True,
                                environment={"HOME": "/tmp", "HF_HUB_OFFLINE": "1"}, user="1000:1000",
                                volumes={src: {"bind": dst, "mode": "ro"} for src, dst in volumes.items()})
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def _readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def test_a_run_exports_to_gguf_that_computes_what_the_adapted_model_computes(
        trained_run: Path, smollm2_hf: Path, hf_image: str, gguf_image: str, docker_client: Any,
        tmp_path: Path) -> None:
    out = tmp_path / "run-gguf"
    started = time.monotonic()
    res = mf("export", str(trained_run), "--quantize", "f16,q8_0,q4_k_m,f32", "--output", str(out), "--json",
             timeout=900)
    total = time.monotonic() - started
    assert res.code == 0, res.stderr
    result = res.last
    runs = json.loads(mf("runs", "--json").stdout)  # the export is in the run history, finished
    [record] = [r for r in runs if r["kind"] == "export" and r["output"] == str(out)]
    assert record["status"] == "finished" and "Q8_0" in record["result"]["files"][1]["quantization"]
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "manifest.json", "model-f16.gguf", "model-f32.gguf",
                                                     "model-q4_k_m.gguf", "model-q8_0.gguf"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "gguf-export" and manifest["source"]["run"] == str(trained_run.resolve())
    assert manifest["source"]["adapter_sha256"]["adapter_model.safetensors"]
    assert manifest["llama_cpp"]["llama_cpp_python"] == "0.3.36"
    sizes = {f["type"]: f["bytes"] for f in manifest["files"]}
    assert sizes["q4_k_m"] < sizes["q8_0"] < sizes["f16"] < sizes["f32"]
    assert all(f["parameters"] == 134_515_008 for f in manifest["files"])
    assert [f["quantization"] for f in manifest["files"]] == ["F16", "Q8_0", "Q4_K_M", "ALL_F32"]

    # the Modelfile, parsed: FROM the first quantized file, SmolLM2's ChatML template, its stop tokens
    text = (out / "Modelfile").read_text()
    [source] = re.findall(r"^FROM (\S+)$", text, re.M)
    assert source == "./model-q8_0.gguf" and (out / source).is_file()
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.M | re.S)
    assert template and "<|im_start|>{{ .Role }}" in template.group(1) and template.group(1).count("{{") == \
        template.group(1).count("}}")
    assert re.findall(r'^PARAMETER stop "(.+)"$', text, re.M) == ["<|im_start|>", "<|im_end|>"]

    _readable(out)
    adapted = _in_image(docker_client, hf_image, _PEFT_LOGITS, ["/run/adapter"],
                        {str(smollm2_hf): "/base", str(trained_run): "/run"})
    base = _in_image(docker_client, hf_image, _PEFT_LOGITS, [], {str(smollm2_hf): "/base"})
    ggufs = {t: _in_image(docker_client, gguf_image, _GGUF_LOGITS, [f"/out/model-{t}.gguf"], {str(out): "/out"})
             for t in ("f32", "f16", "q8_0", "q4_k_m")}
    f32, f16 = ggufs["f32"], ggufs["f16"]
    assert f32["ids"] == f16["ids"] == adapted["ids"]
    # f32: conversion alone, no rounding of the merged weights: llama.cpp computes what peft computes
    assert _max_diff(f32["logits"], adapted["logits"]) < 1e-3
    # f16 adds the rounding of every merged weight to half precision (transformers itself moves the logits
    # by ~0.015 when this model's merged weights are cast to f16); the greedy answer stays the same
    assert _max_diff(f16["logits"], adapted["logits"]) < 5e-2
    assert f16["greedy"] == f32["greedy"] == adapted["greedy"]
    assert _max_diff(f16["logits"], base["logits"]) > 1e-3  # the adapter really went in
    for qtype in ("q8_0", "q4_k_m"):
        assert ggufs[qtype]["nll"] < f16["nll"] + 1.0
    for qtype in ("q8_0", "q4_k_m"):
        res = mf("run", "--provider", "gguf", "load", "--model", str(out / f"model-{qtype}.gguf"), "--prompt",
                 PROMPT, "--max-new-tokens", "4", "--json")
        assert res.code == 0, res.stderr
        assert res.last["text"].strip()
    print(f"export of f16+q8_0+q4_k_m: {total:.1f} s (steps {result['steps_seconds']}); sizes MB "
          f"{ {t: round(b / 1e6, 1) for t, b in sizes.items()} }; NLL of {ANSWER!r}: "
          f"{ {t: round(g['nll'], 3) for t, g in ggufs.items()} }; max |f32 - peft| = "
          f"{_max_diff(f32['logits'], adapted['logits']):.2e}, max |f16 - peft| = "
          f"{_max_diff(f16['logits'], adapted['logits']):.2e}")


_RSLORA_ADAPTER = """
import sys, torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained("/base", dtype=torch.float32)
kind = sys.argv[1]
config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                    use_rslora=kind == "rslora", use_dora=kind == "dora")
peft_model = get_peft_model(model, config)
with torch.no_grad():
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.mul_(0.05)
peft_model.save_pretrained(sys.argv[2])
print("{}")
"""


@pytest.mark.parametrize("kind", ["rslora", "dora"])
def test_rslora_and_dora_adapters_export_with_their_scaling(kind: str, smollm2_hf: Path, hf_image: str,
                                                            gguf_image: str, docker_client: Any,
                                                            tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    adapters.chmod(0o777)
    docker_client.containers.run(
        hf_image, entrypoint=["python", "-c", _RSLORA_ADAPTER, kind, f"/adapters/{kind}"], network_mode="none",
        remove=True, environment={"HOME": "/tmp"}, user="1000:1000",
        volumes={str(smollm2_hf): {"bind": "/base", "mode": "ro"}, str(adapters): {"bind": "/adapters", "mode": "rw"}})
    out = tmp_path / "out"
    res = mf("export", "--model", str(smollm2_hf), "--adapter", str(adapters / kind), "--quantize", "f32",
             "--output", str(out), timeout=900)
    assert res.code == 0, res.stderr
    _readable(out)
    adapted = _in_image(docker_client, hf_image, _PEFT_LOGITS, [f"/adapters/{kind}"],
                        {str(smollm2_hf): "/base", str(adapters): "/adapters"})
    base = _in_image(docker_client, hf_image, _PEFT_LOGITS, [], {str(smollm2_hf): "/base"})
    gguf = _in_image(docker_client, gguf_image, _GGUF_LOGITS, ["/out/model-f32.gguf"], {str(out): "/out"})
    # the adapter's own scaling (rsLoRA: alpha/sqrt(r); DoRA: the magnitude vector) went into the weights
    assert _max_diff(gguf["logits"], adapted["logits"]) < 1e-3 < _max_diff(gguf["logits"], base["logits"])


# -- bad input: one line, exit != 0, nothing left in --output ---------------------------------------
def _unfinished(ctx: dict[str, Any]) -> list[str]:
    run = ctx["tmp"] / "unfinished"
    shutil.copytree(ctx["run"], run)
    (run / "manifest.json").unlink()
    return [str(run)]


def _base_gone(ctx: dict[str, Any]) -> list[str]:
    run = ctx["tmp"] / "moved"
    shutil.copytree(ctx["run"], run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["model_source"] = str(ctx["tmp"] / "deleted-base")
    (run / "manifest.json").write_text(json.dumps(manifest))
    return [str(run)]


def _unsupported_architecture(ctx: dict[str, Any]) -> list[str]:
    model = ctx["tmp"] / "xglm"
    model.mkdir()
    model.chmod(0o777)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (ctx["base"] / name).exists():
            shutil.copy(ctx["base"] / name, model / name)
    ctx["client"].containers.run(
        ctx["hf_image"], entrypoint=["python", "-c", "from transformers import XGLMConfig, XGLMForCausalLM; "
                                     "XGLMForCausalLM(XGLMConfig(vocab_size=49152, d_model=32, num_layers=1, "
                                     "attention_heads=2, ffn_dim=64)).save_pretrained('/m')"],
        network_mode="none", remove=True, environment={"HOME": "/tmp"}, user="1000:1000",
        volumes={str(model): {"bind": "/m", "mode": "rw"}})
    _readable(model)
    return ["--model", str(model)]


def _finished_export(ctx: dict[str, Any]) -> list[str]:
    ctx["out"].mkdir()
    (ctx["out"] / "manifest.json").write_text('{"kind": "gguf-export"}')
    ctx["keep"] = True
    return [str(ctx["run"])]


BAD = [
    ("unfinished run", _unfinished, "configuration", "is not a finished training run (it has no manifest.json)"),
    ("base model gone", _base_gone, "model_access", "deleted-base is missing"),
    ("unsupported architecture", _unsupported_architecture, "provider",
     "llama.cpp's converter failed: Model XGLMForCausalLM is not supported. llama.cpp cannot convert this architecture"),
    ("unknown quantization type", lambda c: [str(c["run"]), "--quantize", "q8_0,q9_k"], "configuration",
     "Unknown quantization type 'q9_k'. Valid types: f16, f32, q8_0, q6_k"),
    ("output holds an export", _finished_export, "configuration", "already holds an export"),
    ("not enough disk", lambda c: [str(c["run"]), "--output", str(c["small"])], "configuration",
     "Not enough space in"),
]


@pytest.mark.parametrize(("make", "kind", "message"), [pytest.param(*b[1:], id=b[0]) for b in BAD])
def test_bad_export_input(request: pytest.FixtureRequest, make: Any, kind: str, message: str, trained_run: Path,
                          smollm2_hf: Path, hf_image: str, gguf_image: str, docker_client: Any, tmp_path: Path,
                          small_fs: Any) -> None:
    ctx: dict[str, Any] = {"tmp": tmp_path, "run": trained_run, "base": smollm2_hf, "out": tmp_path / "out",
                           "client": docker_client, "hf_image": hf_image}
    if request.node.callspec.id == "not enough disk":
        ctx["small"] = small_fs("50m") / "out"
    args = make(ctx)
    if "--output" not in args:
        args += ["--output", str(ctx["out"])]
    if "--quantize" not in args:
        args += ["--quantize", "q8_0"]
    res = mf("export", *args, timeout=900)
    assert res.code == EXIT_CODES[kind], res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    target = Path(args[args.index("--output") + 1])
    if ctx.get("keep"):
        assert sorted(p.name for p in target.iterdir()) == ["manifest.json"]
    else:
        assert not target.exists()
