"""Train on a GPU machine natively (GPU machines here have no Docker): the huggingface and unsloth providers'
train action, the very code the images run (`python -m providers.runtime SPEC`), on a SmolLM2-135M-shaped
model, and print what a user would ask: the card, samples/s on the GPU against the same machine's CPU, the
GPU memory each run held, and whether the loss went down (and, with --cpu-baseline, the CPU's rate).

    python scripts/gpu_train_check.py --model-files DIR [--out OUT] [--steps 40] [--batch 16]

DIR holds the real model's config.json and tokenizer files (no weights: what may travel to a GPU machine
here is 64 MiB, and the weights are 270 MB); the weights are drawn at random, seeded, so the figures are
SmolLM2-135M's shape and cost, and "the loss went down" means the adapter learned this dataset. The Python
packages are the machine's own (torch, transformers) plus what the caller put on PYTHONPATH (trl, peft,
datasets, bitsandbytes, unsloth: the unsloth image's lock, `make gpu-bundle`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("model", "layer", "token", "train", "adapter", "loss", "batch", "step", "paris", "france", "capital",
         "river", "north", "green", "seven", "quiet", "window", "garden", "signal", "engine")


def make_model(files: Path, out: Path) -> Path:
    """A bf16 checkpoint with ``files``' config and tokenizer and seeded random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(str(files))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    for item in files.iterdir():
        if item.is_file() and item.name != "config.json":
            shutil.copy2(item, out / item.name)
    return out


def write_dataset(path: Path, records: int = 512) -> Path:
    rng = random.Random(0)  # noqa: S311 - a seeded dataset, not a secret
    with path.open("w") as fh:
        for i in range(records):
            prompt = f"Note {i}: " + " ".join(rng.choice(WORDS) for _ in range(60))
            completion = " " + " ".join(rng.choice(WORDS[:8]) for _ in range(40))
            fh.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    return path


def run(name: str, provider: str, model: Path, data: Path, train: dict[str, Any], device_map: str, work: Path,
        timeout: int) -> dict[str, Any]:
    out = work / name
    out.mkdir(parents=True)
    spec = {"provider": provider, "action": "train", "model": str(model), "output_dir": str(out),
            "device_map": device_map, "options": {"dataset": str(data), "train": train}}
    spec_file = work / f"{name}.spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "MODELFORGE_LOAD_PLUGINS": "", "UNSLOTH_DISABLE_STATISTICS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    started = time.monotonic()
    stderr = (work / f"{name}.stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "providers.runtime", str(spec_file)], stdout=subprocess.PIPE,
                            stderr=stderr, text=True, env=env)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    events, steps_at = [], []  # each progress event's step and when it came: the steady rate, warm-up left out
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            events.append(json.loads(line))
            if events[-1].get("event") == "progress":
                steps_at.append((events[-1]["current"], time.monotonic()))
    proc.wait()
    timer.cancel()
    stderr.close()
    wall = time.monotonic() - started
    if proc.returncode == -9:
        return {"name": name, "ok": False, "error": f"killed after {timeout} s"}
    result = next((e for e in reversed(events) if e.get("event") == "result"), None)
    error = next((e for e in reversed(events) if e.get("event") == "error"), None)
    losses = [e["value"] for e in events if e.get("event") == "metric" and e.get("name") == "loss"]
    row: dict[str, Any] = {"name": name, "provider": provider, "device_map": device_map, "ok": result is not None,
                           "wall_s": round(wall, 1), "exit": proc.returncode}
    if result is None:
        row["error"] = (error or {}).get("message") or (work / f"{name}.stderr.txt").read_text().splitlines()[-3:]
        return row
    steady = [(step, at) for step, at in steps_at if step >= min(5, max(1, train["max_steps"] // 2))]
    if len(steady) >= 2 and steady[-1][1] > steady[0][1]:
        row["steady_samples_per_s"] = round((steady[-1][0] - steady[0][0]) * train["batch_size"]
                                            / (steady[-1][1] - steady[0][1]), 1)
    steps_per_s = result.get("train_steps_per_second") or 0
    row.update({"steps": result.get("steps"), "samples_per_s": round(steps_per_s * train["batch_size"], 2),
                "train_loss": result.get("train_loss"), "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "gpu_peak_allocated_mib": round((result.get("gpu_peak_allocated_bytes") or 0) / 2**20),
                "quantized_layers": result.get("quantized_layers")})
    manifest = out / "manifest.json"
    if manifest.is_file():
        row["versions"] = json.loads(manifest.read_text()).get("versions")
    return row


def card() -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no nvidia-smi"
    return subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True, check=False).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-files", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cpu-baseline", action="store_true", help="also train on this machine's CPU, to compare")
    parser.add_argument("--cpu-steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--timeout", type=int, default=240)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mf-gpu-"))
    model = make_model(args.model_files, work / "smollm2-135m-random")
    data = write_dataset(work / "data.jsonl")
    base = {"max_steps": args.steps, "batch_size": args.batch, "max_seq_length": 256, "save_steps": 100_000,
            "logging_steps": 5, "lora_r": 16, "seed": 0, "learning_rate": 5e-4}
    plan = [
        ("hf-lora-bf16-gpu", "huggingface", {"precision": "bf16"}, "auto"),
        ("hf-qlora-nf4-gpu", "huggingface", {"precision": "bf16", "strategy": "qlora"}, "auto"),
        ("unsloth-lora-bf16-gpu", "unsloth", {"precision": "bf16"}, "auto"),
        ("unsloth-qlora-nf4-gpu", "unsloth", {"precision": "bf16", "strategy": "qlora"}, "auto"),
    ]
    if args.cpu_baseline:  # natively beside a GPU, TRL 1.15 runs its Triton kernel on CPU tensors and fails (README)
        plan.append(("hf-lora-fp32-cpu", "huggingface",
                     {"precision": "fp32", "max_steps": args.cpu_steps, "logging_steps": 2}, "cpu"))
    wanted = {n for n in args.only.split(",") if n}
    report: dict[str, Any] = {"card": card(), "runs": []}
    for name, provider, extra, device_map in plan:
        if wanted and name not in wanted:
            continue
        row = run(name, provider, model, data, {**base, **extra}, device_map, work, args.timeout)
        print(json.dumps(row), flush=True)
        report["runs"].append(row)
        stderr = work / f"{name}.stderr.txt"
        if stderr.exists():
            shutil.copy2(stderr, args.out / stderr.name)
    rates = {r["name"]: r.get("steady_samples_per_s") or r.get("samples_per_s") for r in report["runs"] if r.get("ok")}
    if rates.get("hf-lora-fp32-cpu") and rates.get("hf-lora-bf16-gpu"):
        report["gpu_vs_cpu_lora"] = round(rates["hf-lora-bf16-gpu"] / rates["hf-lora-fp32-cpu"], 1)
    if rates.get("unsloth-lora-bf16-gpu") and rates.get("hf-lora-bf16-gpu"):
        report["unsloth_vs_hf_lora"] = round(rates["unsloth-lora-bf16-gpu"] / rates["hf-lora-bf16-gpu"], 2)
    (args.out / "gpu_train.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["runs"] and all(r.get("ok") for r in report["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
