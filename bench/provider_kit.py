"""New provider to passing check: `mf providers new` -> `lock` -> `pip install` -> `check`, from an empty
folder, for both stacks, with the built-in images already built (the plugin's own image is built inside the
timed check). Each step's seconds, and the whole against the issue's 3 minutes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, status

TARGET_S = 180.0
STACKS = {"llama-cpp": ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf", "transformers": None}


def _step(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:5])} failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    return time.perf_counter() - started


def _one(stack: str, model: Path, name: str) -> dict[str, Any]:
    import docker

    with tempfile.TemporaryDirectory(prefix="mf-bench-kit-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(work / "site"), "MODELFORGE_LOAD_PLUGINS": f"mf-provider-{name}"}
        mf = [sys.executable, "-m", "orchestrator"]
        steps = {
            "new": _step([*mf, "providers", "new", name, "--stack", stack], env, work),
            "lock": _step([*mf, "providers", "lock", name], env, work),
            "pip install": _step([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                  "--no-deps", "--target", str(work / "site"), f"./mf-provider-{name}"], env, work),
            "check (image build included)": _step([*mf, "providers", "check", name, "--model", str(model)], env, work),
        }
    client = docker.from_env()
    for image in client.images.list(name=f"modelforge/{name}"):
        client.images.remove(image.id, force=True)
    return {"stack": stack, "steps": {k: round(v, 2) for k, v in steps.items()}, "total_s": round(sum(steps.values()), 2)}


def bench_provider_kit(checkpoint: Path) -> list[dict[str, Any]]:
    stamp = str(os.getpid())
    return [_one(stack, model or checkpoint, f"bench{stack.replace('-', '')}{stamp}") for stack, model in STACKS.items()]


def rows(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        split = ", ".join(f"{k} {v:.1f}" for k, v in r["steps"].items())
        out.append(f"| new provider to passing check, {r['stack']} stack (s) | {r['total_s']:.1f} | | {split} "
                   f"| <= {TARGET_S:.0f} | {status(r['total_s'], TARGET_S, False)} |")
    return out
