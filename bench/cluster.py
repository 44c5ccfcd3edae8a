"""Clusters: a real one-node Slurm cluster, its overhead over the docker backend for gguf validate, split
(sbatch, scheduling, the job, event streaming). Needs root (`make bench` as root)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import GGUF, alternate, median, part_row, status, timed

SLURM_OVERHEAD_TARGET_S = 2.0


def bench_slurm(reps: int) -> dict[str, Any]:
    """gguf validate through Slurm against the docker backend, alternating; the Slurm side's split from
    the `mf-timings` line that MF_TIMINGS=1 has `mf run` print."""
    from tests.docker.slurm_fixtures import one_node_slurm

    mf = [sys.executable, "-m", "orchestrator"]
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        work = Path(tmp)
        with one_node_slurm(work / "slurm") as conf:
            env = {**os.environ, "SLURM_CONF": str(conf), "MF_SLURM_DIR": str(work / "slurm-jobs"), "MF_TIMINGS": "1"}
            splits: list[dict[str, float]] = []

            def on_slurm() -> float:
                seconds, proc = timed([*mf, "run", "--backend", "slurm", "--provider", "gguf", "validate", "--model",
                                       str(GGUF), "--json"], env)
                line = next((x for x in proc.stderr.splitlines() if x.startswith("mf-timings ")), None)
                if proc.returncode != 0 or line is None:
                    raise SystemExit(f"slurm run failed: {proc.stderr[-400:]}")
                splits.append(json.loads(line.removeprefix("mf-timings ")))
                return seconds

            runs = alternate(reps, {
                "docker": lambda: timed([*mf, "run", "--provider", "gguf", "validate", "--model", str(GGUF), "--json"],
                                        env)[0],
                "slurm": on_slurm,
            })
    return {"runs": runs, "overhead_s": median(runs["slurm"]) - median(runs["docker"]),
            "split_s": {k: median([s[k] for s in splits]) for k in splits[0]}}


def rows(sl: dict[str, Any]) -> list[str]:
    lines = [f"| gguf validate through Slurm (s) | {median(sl['runs']['slurm']):.2f} | "
             f"{median(sl['runs']['docker']):.2f} (docker backend) | +{sl['overhead_s']:.2f} s | "
             f"<= +{SLURM_OVERHEAD_TARGET_S} s | {status(sl['overhead_s'], SLURM_OVERHEAD_TARGET_S, False)} |"]
    for name, seconds in sl["split_s"].items():
        lines.append(part_row(name.replace("_", " "), seconds))
    return lines
