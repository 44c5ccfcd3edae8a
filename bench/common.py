"""What every part of the bench shares: the repository, the model, timing a command, medians, alternating
runs, and the verdict and sub-row of the table."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or os.environ.copy(), check=False)
    return time.perf_counter() - started, proc


def last_json(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"command failed ({proc.returncode}): {proc.stderr.strip()[-500:]}") from None


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def alternate(reps: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each side once per repetition, in turn, so drift on the machine hits all sides alike."""
    out: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(reps):
        for name, fn in sides.items():
            out[name].append(fn())
    return out


def status(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "**misses**"


def part_row(name: str, seconds: float) -> str:
    """A table row for one part of the row above it (a breakdown or a split)."""
    return f"| &nbsp;&nbsp;of which: {name} | {seconds:.2f} s | | | (part of the row above) | |"
