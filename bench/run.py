"""`make bench`: what the container costs against native, image sizes and build times, in one run.

Every comparison runs both sides in the same run, alternating, with repetitions and medians. The
native side is the same code on the same packages: for gguf, the image's own site-packages (the
very llama.cpp build) copied out and run by the host's Python; for huggingface, a venv made from
the image's lock and wheels. Prints a markdown table and writes bench-results/bench.json.
Benchmarks are not tests: a figure that misses its target is reported as such.

usage: python bench/run.py [--reps 5] [--cold] [--out bench-results/bench.json]

This is the one runner; the parts live by area, each with its rows of the table:
generation.py (`mf run` overhead, CLI start, large vocabulary, gguf tokens/s, cuda image on CPU),
training.py (LoRA steps/s, model load), busy.py (jobs beside busy processes), registry.py (push, verify, first
run on an empty engine), cluster.py (Slurm), provider_kit.py (new provider to passing check), egress.py (the egress proxy),
image_builds.py (sizes, rebuilds, SBOM scan, cold builds); common.py what they share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/ itself: the parts are imported as the package bench (bench.generation,
# ...) from the repository root instead, so that none of them stands in for a top-level module of that name.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    busy,
    cluster,
    egress,
    generation,
    history,
    image_builds,
    provider_kit,
    registry,
    serve,
    training,
)
from orchestrator import engine, images  # noqa: E402

#: `--only PART`: the key of its result in the report, and how to measure it
PARTS: dict[str, tuple[str, Callable[[argparse.Namespace], Any]]] = {
    "gguf-cuda": ("gguf_cuda_on_cpu", lambda args: generation.bench_gguf_cuda_on_cpu(args.reps)),
    "images": ("images", lambda args: image_builds.bench_images(args.cold)),
    "strategies": ("strategies", lambda args: training.bench_strategies(max(3, args.reps // 2),
                                                                         args.checkpoint.resolve())),
    "busy": ("busy", lambda args: busy.bench_busy(max(2, args.reps // 2), args.checkpoint.resolve(),
                                                  slurm=os.geteuid() == 0 and shutil.which("slurmctld") is not None)),
    "history": ("history", lambda args: history.bench_history(args.reps, args.checkpoint.resolve())),
    "serve": ("serve", lambda args: serve.bench_serve(max(3, args.reps // 2), args.checkpoint.resolve())),
    "distributed": ("distributed", lambda args: training.bench_distributed(max(3, args.reps // 2),
                                                                           args.checkpoint.resolve())),
    "provider-kit": ("provider_kit", lambda args: provider_kit.bench_provider_kit(args.checkpoint.resolve())),
    "egress": ("egress", lambda args: egress.bench_egress(args.reps)),
}


def table(report: dict[str, Any]) -> str:
    lines = ["| measure | container | native / baseline | ratio or figure | target | |", "|---|---|---|---|---|---|"]
    if "overhead" in report:
        lines += generation.rows(report["overhead"], report["large_vocab"], report["gguf_generation"])
        lines += training.rows(report["huggingface"])
        tc = report.get("travel")
        if tc:
            lines += registry.rows(tc)
            lines += cluster.rows(tc["slurm"])
    if "strategies" in report:
        lines += training.strategy_rows(report["strategies"])
    if "busy" in report:
        lines += busy.rows(report["busy"])
    if "serve" in report:
        lines += serve.rows(report["serve"])
    if "history" in report:
        lines += history.rows(report["history"])
    if "distributed" in report:
        lines += training.distributed_rows(report["distributed"])
    if "provider_kit" in report:
        lines += provider_kit.rows(report["provider_kit"])
    if "egress" in report:
        lines += egress.rows(report["egress"])
    cc = report.get("gguf_cuda_on_cpu")
    if cc:
        lines += generation.cuda_on_cpu_rows(cc)
    if "images" in report:
        lines += image_builds.rows(report["images"])
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also time no-cache builds (minutes)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the SmolLM2 Hugging Face checkpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench.json")
    parser.add_argument("--only", choices=list(PARTS),
                        help="measure one part only (its rows of the table; bench.json is not overwritten)")
    args = parser.parse_args()
    if args.only:
        key, measure = PARTS[args.only]
        part: dict[str, Any] = {key: measure(args)}
        print(json.dumps(part, indent=2))
        print(table(part))
        return 0
    gguf_tag = images.ensure(images.image_spec("gguf", "cpu"), lambda line: print(line, file=sys.stderr))
    images.ensure(images.image_spec("huggingface", "cpu"), lambda line: print(line, file=sys.stderr))
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
                   f"Docker Engine {engine.engine_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "reps": args.reps,
    }
    print("overhead ...", file=sys.stderr)
    report["overhead"] = generation.bench_overhead(args.reps, gguf_tag)
    print("large-vocabulary gguf ...", file=sys.stderr)
    report["large_vocab"] = generation.bench_large_vocab(args.reps, gguf_tag)
    print("gguf generation ...", file=sys.stderr)
    report["gguf_generation"] = generation.bench_gguf_generation(args.reps, gguf_tag)
    print("huggingface train and load ...", file=sys.stderr)
    report["huggingface"] = training.bench_huggingface(max(3, args.reps // 2), args.checkpoint.resolve())
    print("LoRA, QLoRA and DPO ...", file=sys.stderr)
    report["strategies"] = training.bench_strategies(max(3, args.reps // 2), args.checkpoint.resolve())
    print("busy machines ...", file=sys.stderr)
    report["busy"] = busy.bench_busy(max(2, args.reps // 2), args.checkpoint.resolve(),
                                     slurm=os.geteuid() == 0 and shutil.which("slurmctld") is not None)
    print("run history ...", file=sys.stderr)
    report["history"] = history.bench_history(args.reps, args.checkpoint.resolve())
    print("mf serve ...", file=sys.stderr)
    report["serve"] = serve.bench_serve(max(3, args.reps // 2), args.checkpoint.resolve())
    print("new provider to passing check ...", file=sys.stderr)
    report["provider_kit"] = provider_kit.bench_provider_kit(args.checkpoint.resolve())
    print("egress proxy ...", file=sys.stderr)
    report["egress"] = egress.bench_egress(args.reps)
    if os.getuid() == 0:
        print("registry, empty engine, Slurm ...", file=sys.stderr)
        report["travel"] = registry.bench_registry(args.reps)
        report["travel"]["slurm"] = cluster.bench_slurm(args.reps)
    print("gguf cuda image on this CPU ...", file=sys.stderr)
    report["gguf_cuda_on_cpu"] = generation.bench_gguf_cuda_on_cpu(args.reps)
    print("images ...", file=sys.stderr)
    report["images"] = image_builds.bench_images(args.cold)
    report["table"] = table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"Measured on {report['machine']}, {report['date']}, medians of {args.reps} runs.\n")
    print(report["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
