"""Training and model load: huggingface LoRA steps/s and model load in the cpu image (`mf run`) against
the same code run natively, in a venv made from the image's lock and wheels (bench/train_step.py)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT, alternate, last_json, median, status, timed
from bench.train_step import native_python, run_container, run_native, write_inputs
from orchestrator import images


def bench_huggingface(reps: int, checkpoint: Path) -> dict[str, Any]:
    spec = images.image_spec("huggingface", "cpu")
    python = native_python(spec)
    steps: dict[str, list[float]] = {"native": [], "container": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, config, train = write_inputs(work, 20)
        for rep in range(reps):
            for side in ("native", "container"):
                out = work / f"{side}-{rep}"
                result = (run_native(python, checkpoint, data, train, out) if side == "native"
                          else run_container(checkpoint, data, config, out))
                steps[side].append(result["steps"] / result["train_runtime"])
    load_code = (
        "import json\nfrom providers.builtin.huggingface import HuggingFaceProvider\nimport time\n"
        # as the load action does: validate first (it imports transformers), then time the load itself
        f"p=HuggingFaceProvider(); p.validate_model_access({str(checkpoint)!r}, 'AutoModelForCausalLM')\n"
        "t=time.perf_counter()\n"
        f"m=p.load_model({str(checkpoint)!r}, 'AutoModelForCausalLM', device_map='cpu')\n"
        f"p.load_tokenizer({str(checkpoint)!r}); print(json.dumps({{'load_seconds': time.perf_counter()-t}}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    loads = alternate(reps, {
        "native": lambda: float(last_json(timed([str(python), "-c", load_code], env)[1])["load_seconds"]),
        "container": lambda: float(last_json(timed([sys.executable, "-m", "orchestrator", "run", "--provider",
                                                    "huggingface", "load", "--model", str(checkpoint), "--json",
                                                    "--flavour", "cpu"])[1])["load_seconds"]),
    })
    return {
        "train_steps_per_second": steps,
        "train_ratio": median(steps["container"]) / median(steps["native"]), "train_target": 0.95,
        "load_seconds": loads,
        "load_ratio": median(loads["container"]) / median(loads["native"]), "load_target": 1.05,
    }


def rows(hf: dict[str, Any]) -> list[str]:
    return [
        f"| LoRA training (steps/s) | {median(hf['train_steps_per_second']['container']):.3f} | "
        f"{median(hf['train_steps_per_second']['native']):.3f} | {hf['train_ratio']:.3f} | "
        f">= {hf['train_target']} | {status(hf['train_ratio'], hf['train_target'], True)} |",
        f"| model load (s) | {median(hf['load_seconds']['container']):.2f} | "
        f"{median(hf['load_seconds']['native']):.2f} | {hf['load_ratio']:.3f} | <= {hf['load_target']} | "
        f"{status(hf['load_ratio'], hf['load_target'], False)} |",
    ]
