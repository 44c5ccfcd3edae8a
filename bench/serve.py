"""`mf serve`: ready time (the command's start to /health 200), and generation through the server (streamed,
greedy, from this machine's loopback through mf's relay) against the same library in-process in the same
image (llama-cpp-python's streamed completion; transformers' ``generate``), on the same machine, one after
the other. Tokens/s count the whole request (prompt included) on both sides; time to first token is from the
request (the call) to the first piece of text."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import GGUF, ROOT, median, status
from orchestrator.serving import health

READY_TARGET = 2.0
SPEED_TARGET = 0.95
TTFT_TARGET_MS = 50.0
PROMPT = "Once upon a time"
TOKENS = 128

_GGUF_IN_PROCESS = r"""
import json, os, sys, time, llama_cpp
reps, tokens = int(sys.argv[1]), int(sys.argv[2])
llm = llama_cpp.Llama(model_path="/m/model.gguf", n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(), seed=0,
                      n_ctx=2048, verbose=False)
out = []
for _ in range(reps + 1):
    started = time.perf_counter(); first = None; n = 0
    for chunk in llm.create_completion(sys.argv[3], max_tokens=tokens, temperature=0, top_k=1, seed=0, stream=True):
        if chunk["choices"][0]["text"] and first is None:
            first = time.perf_counter()
        n += 1
    end = time.perf_counter()
    out.append({"tokens": n, "seconds": end - started, "ttft": first - started})
print(json.dumps(out[1:]))
"""

_HF_IN_PROCESS = r"""
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
reps, tokens = int(sys.argv[1]), int(sys.argv[2])
tok = AutoTokenizer.from_pretrained("/m"); model = AutoModelForCausalLM.from_pretrained("/m", torch_dtype=torch.float32)
ids = tok(sys.argv[3], return_tensors="pt")
out = []
for _ in range(reps + 1):
    started = time.perf_counter()
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    out.append({"tokens": int(gen.shape[1] - ids["input_ids"].shape[1]), "seconds": time.perf_counter() - started})
print(json.dumps(out[1:]))
"""


def _mf(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready_seconds(reps: int) -> list[float]:
    """`mf serve --provider gguf` (foreground, images built) from its start to /health 200, then Ctrl-C."""
    times = []
    for _ in range(reps):
        port = _free_port()
        started = time.perf_counter()
        proc = subprocess.Popen(_mf("serve", "--provider", "gguf", "--model", str(GGUF), "--port", str(port)),  # noqa: S603
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        while health("127.0.0.1", port) != 200:  # noqa: PLR2004
            if proc.poll() is not None:
                raise RuntimeError("mf serve ended before it answered")
            time.sleep(0.005)
        times.append(time.perf_counter() - started)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return times


def _stream(port: int, key: str, model: str, tokens: int) -> dict[str, float]:
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request("POST", "/v1/completions", body=body,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = conn.getresponse()
    first = None
    count = 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        event = json.loads(line[5:])
        if event.get("usage"):
            count = event["usage"]["completion_tokens"]
        elif event["choices"] and event["choices"][0]["text"] and first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    conn.close()
    return {"tokens": count, "seconds": end - started, "ttft": (first or end) - started}


def _through_server(args: list[str], reps: int, tokens: int) -> list[dict[str, float]]:
    res = subprocess.run(_mf("serve", *args, "--port", "0", "--detach", "--json"), capture_output=True, text=True,  # noqa: S603
                         cwd=ROOT, check=True)
    ready = json.loads(res.stdout.splitlines()[0])
    port = int(ready["url"].rsplit(":", 1)[1].split("/")[0])
    key = Path(ready["key_file"]).read_text().strip()
    try:
        _stream(port, key, ready["model_id"], tokens)  # warm-up
        return [_stream(port, key, ready["model_id"], tokens) for _ in range(reps)]
    finally:
        subprocess.run(_mf("jobs", "cancel", ready["job"]), capture_output=True, check=False, cwd=ROOT)  # noqa: S603


def _in_image(image: str, code: str, mount: Path, target: str, reps: int, tokens: int) -> list[dict[str, float]]:
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", "--user", "1000:1000", "-e", "HOME=/tmp",  # noqa: S607
                          "-e", "HF_HUB_OFFLINE=1", "-v", f"{mount}:{target}:ro", "--entrypoint", "python", image,
                          "-c", code, str(reps), str(tokens), PROMPT], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _tps(runs: list[dict[str, float]]) -> float:
    return median([r["tokens"] / r["seconds"] for r in runs])


def bench_serve(reps: int, checkpoint: Path) -> dict[str, Any]:
    from orchestrator import images

    gguf = images.ensure(images.image_spec("gguf", "cpu"), lambda line: None)
    hf = images.ensure(images.image_spec("huggingface", "cpu"), lambda line: None)
    ready = ready_seconds(reps)
    served = _through_server(["--provider", "gguf", "--model", str(GGUF)], reps, TOKENS)
    tokens = int(served[0]["tokens"])
    model_dir = Path(os.path.realpath(GGUF)).parent
    native = _in_image(gguf, _GGUF_IN_PROCESS.replace("/m/model.gguf", f"/m/{GGUF.name}"), model_dir, "/m", reps,
                       tokens)
    hf_served = _through_server(["--provider", "huggingface", "--model", str(checkpoint)], reps, TOKENS)
    hf_tokens = int(hf_served[0]["tokens"])
    hf_native = _in_image(hf, _HF_IN_PROCESS, checkpoint, "/m", reps, hf_tokens)
    return {
        "ready_seconds": median(ready), "ready_runs": ready,
        "gguf": {"tokens": tokens, "served_tps": _tps(served), "native_tps": _tps(native),
                 "served_ttft_ms": median([r["ttft"] for r in served]) * 1000,
                 "native_ttft_ms": median([r["ttft"] for r in native]) * 1000},
        "huggingface": {"tokens": hf_tokens, "served_tps": _tps(hf_served), "native_tps": _tps(hf_native)},
    }


def rows(r: dict[str, Any]) -> list[str]:
    g, h = r["gguf"], r["huggingface"]
    ratio, hf_ratio = g["served_tps"] / g["native_tps"], h["served_tps"] / h["native_tps"]
    extra = g["served_ttft_ms"] - g["native_ttft_ms"]
    return [
        f"| mf serve ready (start to /health 200), gguf SmolLM2 | {r['ready_seconds']:.2f} s | | | <= {READY_TARGET} s "
        f"| {status(r['ready_seconds'], READY_TARGET, False)} |",
        f"| gguf tokens/s streamed through mf serve vs llama-cpp-python in-process ({g['tokens']} tokens, greedy) "
        f"| {g['served_tps']:.2f} | {g['native_tps']:.2f} | {ratio:.3f}x | >= {SPEED_TARGET} "
        f"| {status(ratio, SPEED_TARGET, True)} |",
        f"| gguf time to first token, server vs in-process | {g['served_ttft_ms']:.1f} ms | {g['native_ttft_ms']:.1f} ms "
        f"| +{extra:.1f} ms | <= +{TTFT_TARGET_MS:.0f} ms | {status(extra, TTFT_TARGET_MS, False)} |",
        f"| huggingface tokens/s through mf serve vs transformers generate in-process ({h['tokens']} tokens) "
        f"| {h['served_tps']:.2f} | {h['native_tps']:.2f} | {hf_ratio:.3f}x | >= {SPEED_TARGET} "
        f"| {status(hf_ratio, SPEED_TARGET, True)} |",
    ]
