"""The training providers on a real GPU, run natively (GPU machines here have no Docker): the huggingface
and unsloth providers' train action, LoRA and QLoRA, through scripts/gpu_train_check.py with what
`make gpu-bundle` puts in .gpu/ (MF_GPU_BUNDLE points at it there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_lora_and_qlora_train_on_the_gpu_with_both_providers(tmp_path: Path) -> None:
    bundle = Path(os.environ.get("MF_GPU_BUNDLE", ROOT / ".gpu"))
    smi = shutil.which("nvidia-smi")
    if smi is None or subprocess.run([smi, "-L"], capture_output=True, check=False).returncode != 0:
        pytest.skip("needs an NVIDIA GPU")
    if not (bundle / "site.tar.xz").is_file():
        pytest.skip(f"needs {bundle}/site.tar.xz and model-files/ (make gpu-bundle; MF_GPU_BUNDLE)")
    site = tmp_path / "site"
    with tarfile.open(bundle / "site.tar.xz") as tar:
        tar.extractall(site, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # noqa: S202
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_train_check.py"), "--model-files",
                          str(bundle / "model-files"), "--out", str(tmp_path / "out")], capture_output=True,
                         text=True, env=env, check=False, timeout=1500)
    report = json.loads((tmp_path / "out" / "gpu_train.json").read_text())
    print(json.dumps(report, indent=2))
    runs = {r["name"]: r for r in report["runs"]}
    assert out.returncode == 0, [r for r in report["runs"] if not r.get("ok")]
    for name in ("hf-lora-bf16-gpu", "hf-qlora-nf4-gpu", "unsloth-lora-bf16-gpu", "unsloth-qlora-nf4-gpu"):
        run = runs[name]
        assert run["gpu_peak_allocated_mib"] > 0, run  # it trained on the GPU
        assert run["last_loss"] < run["first_loss"], run  # and learned
    assert runs["hf-qlora-nf4-gpu"]["quantized_layers"] > 0
    assert runs["hf-qlora-nf4-gpu"]["gpu_peak_allocated_mib"] < runs["hf-lora-bf16-gpu"]["gpu_peak_allocated_mib"]
