"""The gguf cuda image's llama.cpp on a real GPU, run natively (GPU machines here have no Docker):
`make gpu-bundle` takes llama_cpp/ out of the image (.gpu/llama.tar.xz); MF_GGUF_CUDA_SITE names the folder it unpacks to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_every_layer_runs_on_the_gpu_and_it_is_faster(demo_model: Path) -> None:
    site = os.environ.get("MF_GGUF_CUDA_SITE")
    smi = shutil.which("nvidia-smi")
    if not site or smi is None or subprocess.run([smi, "-L"], capture_output=True, check=False).returncode != 0:
        pytest.skip("needs an NVIDIA GPU and MF_GGUF_CUDA_SITE (llama_cpp/ from the gguf cuda image: make gpu-bundle)")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gguf_gpu_check.py"), "--site", site,
                          "--model", str(demo_model)], capture_output=True, text=True, check=False, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    gpu = report["gpu"]
    assert gpu["device"] == "cuda" and "Paris" in gpu["text"]
    assert gpu["backend"]["layers_offloaded"] == gpu["backend"]["layers"] == 31
    assert any(d["type"] == "gpu" for d in gpu["backend"]["devices"])
    print(json.dumps(report, indent=2))
