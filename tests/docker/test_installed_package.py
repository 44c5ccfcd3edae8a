"""`mf` as a package: the wheel, installed into a new venv in an empty folder with no checkout on the
path, lists the same content tags as the checkout and runs a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from orchestrator import images

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_works_outside_the_checkout(gguf_image: str, demo_model: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "--wheel-dir", str(dist), str(ROOT)], check=True, cwd=tmp_path)
    [wheel] = dist.glob("modelforge-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)],
                   check=True)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin"

    def mf(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "mf"), *args], capture_output=True, text=True, cwd=empty, env=env,
                              timeout=600)

    res = mf("--help")
    assert res.returncode == 0 and "Load, validate and fine-tune" in res.stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import orchestrator, modelforge_images as m; "
                            "print(orchestrator.__file__); print(list(m.__path__)[0])"],
                           capture_output=True, text=True, cwd=empty, env=env, check=True).stdout.split()
    assert all(str(venv) in w for w in where), where  # nothing comes from the checkout

    res = mf("providers", "--json")
    assert res.returncode == 0, res.stderr
    tags = {row["name"]: row["image"] for row in json.loads(res.stdout)}
    assert tags["gguf"] == images.image_spec("gguf", "cpu").tag == gguf_image
    assert tags["huggingface"] == images.image_spec("huggingface", "cpu").tag
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["parameters"] == 134_515_008
