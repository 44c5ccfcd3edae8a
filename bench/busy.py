"""Busy machines: generation (gguf, huggingface) and LoRA training steps with 0, 1 and 2 spinning processes
beside the job, each against the same job pinned to one thread under the same load (the reference a job on a
shared machine can always get), and, idle, against the thread count fixed to every CPU (what jobs did before
they watched the load). Optionally the same through a one-node Slurm cluster with `--cpus 1`.

Every figure is the job's own (tokens/s or train steps/s from its result), so container start and model load
are left out; runs alternate within each load so that drift hits every side alike."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import GGUF, alternate, last_json, median, status, timed
from bench.train_step import write_inputs

BUSY_TARGET = 0.9  # gguf generation, busy, against one thread
TORCH_BUSY_TARGET = 0.8  # huggingface generation and training, busy, against one thread
IDLE_TARGET = 0.97  # idle, against the thread count fixed to every CPU
LOADS = (0, 1, 2)


@contextlib.contextmanager
def busy(count: int) -> Iterator[None]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _config(work: Path, name: str, threads: int | None, train: dict[str, Any] | None = None) -> Path:
    body: dict[str, Any] = {"provider_config": {"n_threads": threads} if threads else {}}
    if train:
        body["train"] = train
    path = work / f"{name}-{threads or 'auto'}.json"
    path.write_text(json.dumps(body))
    return path


def bench_busy(reps: int, checkpoint: Path, slurm: bool = False) -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0))
    mf = [sys.executable, "-m", "orchestrator", "run"]
    report: dict[str, Any] = {"cpus": cpus, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="mf-bench-busy-") as tmp:
        work = Path(tmp)
        data, _, train = write_inputs(work, steps=8)

        def generation(provider: str, model: Path, threads: int | None, extra: tuple[str, ...] = (),
                       env: dict[str, str] | None = None) -> Callable[[], float]:
            config = _config(work, provider, threads)

            def run() -> float:
                _, proc = timed([*mf, "--provider", provider, "load", "--model", str(model), "--prompt",
                                 "Once upon a time", "--max-new-tokens", "64", "--config", str(config), "--json",
                                 *extra], env)
                return float(last_json(proc)["tokens_per_second"])
            return run

        def training(threads: int | None) -> Callable[[], float]:
            config = _config(work, "train", threads, train)

            def run() -> float:
                out = Path(tempfile.mkdtemp(dir=work))
                _, proc = timed([*mf, "--provider", "huggingface", "train", "--model", str(checkpoint), "--dataset",
                                 str(data), "--config", str(config), "--output", str(out / "run"), "--json"])
                return float(last_json(proc)["train_steps_per_second"])
            return run

        cases = {
            "gguf generation (tokens/s)": lambda t: generation("gguf", GGUF, t),
            "huggingface generation (tokens/s)": lambda t: generation("huggingface", checkpoint, t),
            "huggingface LoRA training (steps/s)": training,
        }
        for name, side in cases.items():
            rows: dict[str, Any] = {}
            for load in LOADS:
                sides = {"adaptive": side(None), "one thread": side(1)}
                if load == 0:
                    sides["every CPU, fixed"] = side(cpus)  # before: under load this is the 10-300x collapse
                with busy(load):
                    runs = alternate(reps, sides)
                rows[load] = {k: median(v) for k, v in runs.items()}
                print(f"busy {name} load={load}: {rows[load]}", file=sys.stderr)
            report["rows"][name] = rows
        if slurm:
            from tests.docker.slurm_fixtures import one_node_slurm

            with one_node_slurm(work / "slurm") as conf:
                env = {**os.environ, "SLURM_CONF": str(conf), "MF_SLURM_DIR": str(work / "slurm-jobs")}
                extra = ("--backend", "slurm", "--cpus", "1")
                with busy(1):
                    runs = alternate(reps, {"adaptive": generation("gguf", GGUF, None, extra, env),
                                            "one thread": generation("gguf", GGUF, 1, extra, env)})
                report["slurm_one_cpu"] = {k: median(v) for k, v in runs.items()}
    return report


def rows(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, by_load in report["rows"].items():
        busy_target = BUSY_TARGET if name.startswith("gguf") else TORCH_BUSY_TARGET
        for load, figures in by_load.items():
            adaptive, one = figures["adaptive"], figures["one thread"]
            ratio = adaptive / one if one else float("nan")
            label = f"{name}, {'idle' if int(load) == 0 else f'{load} busy process(es)'}"
            if int(load) == 0:  # idle: the reference is every CPU (one thread is slower, as it should be)
                fixed = figures["every CPU, fixed"]
                lines.append(f"| {label}: default vs {report['cpus']} threads fixed (one thread: {one:.2f}) | "
                             f"{adaptive:.2f} | {fixed:.2f} | {adaptive / fixed:.2f}x | >= {IDLE_TARGET}x | "
                             f"{status(adaptive / fixed, IDLE_TARGET, True)} |")
                continue
            lines.append(f"| {label}: default vs one thread | {adaptive:.2f} | {one:.2f} | {ratio:.2f}x | "
                         f">= {busy_target}x | {status(ratio, busy_target, True)} |")
    sl = report.get("slurm_one_cpu")
    if sl:
        ratio = sl["adaptive"] / sl["one thread"]
        lines.append(f"| gguf generation in a Slurm job with --cpus 1, 1 busy process: default vs one thread | "
                     f"{sl['adaptive']:.2f} | {sl['one thread']:.2f} | {ratio:.2f}x | >= {BUSY_TARGET}x | "
                     f"{status(ratio, BUSY_TARGET, True)} |")
    return lines
