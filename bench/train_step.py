"""LoRA training speed of the huggingface provider: inside its cpu image (`mf run`) against the same
code and the same locked packages run natively on the host. Prints a markdown table and writes JSON.

usage: python bench/train_step.py --model CHECKPOINT [--reps 3] [--steps 20] [--out bench-results/train_step.json]
The native side runs in a venv made from the image's own lock and staged wheels (.cache/bench/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import images  # noqa: E402


def native_python(spec: images.ImageSpec) -> Path:
    venv = ROOT / ".cache" / "bench" / f"venv-{spec.provider}-{spec.flavour}-{spec.lock_hash}"
    python = venv / "bin" / "python"
    if not python.exists():
        wheels = images.stage_wheelhouse(spec, print)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
                        "--require-hashes", "-r", str(spec.lock)], check=True)
    return python


def write_inputs(work: Path, steps: int, strategy: str = "sft") -> tuple[Path, Path, dict]:
    """A dataset for ``strategy`` (preference pairs for dpo), its train config, and the config file."""
    data = work / f"data-{strategy}.jsonl"
    with data.open("w") as fh:
        for i in range(64):
            prompt = f"Question {i}: the capital of France is"
            record = ({"prompt": prompt, "chosen": " Paris.", "rejected": " Rome."} if strategy == "dpo"
                      else {"prompt": prompt, "completion": " Paris."})
            fh.write(json.dumps(record) + "\n")
    train = {"max_steps": steps, "batch_size": 2, "max_seq_length": 64, "save_steps": 100_000, "logging_steps": 1,
             "lora_r": 8, "seed": 0, "strategy": strategy}
    config = work / f"job-{strategy}.json"
    config.write_text(json.dumps({"train": train}))
    return data, config, train


def run_native(python: Path, model: Path, data: Path, train: dict, out: Path) -> dict:
    out.mkdir()
    spec = {"provider": "huggingface", "action": "train", "model": str(model), "output_dir": str(out),
            "device_map": "cpu", "options": {"dataset": str(data), "train": train}}
    spec_file = out.parent / f"{out.name}.spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MODELFORGE_LOAD_PLUGINS": ""}
    proc = subprocess.run([str(python), "-m", "providers.runtime", str(spec_file)], capture_output=True, text=True,
                          env=env, check=False)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_container(model: Path, data: Path, config: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--provider", "huggingface", "train",
                           "--model", str(model), "--dataset", str(data), "--config", str(config),
                           "--output", str(out), "--json", "--flavour", "cpu"],
                          capture_output=True, text=True, check=False)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "train_step.json")
    args = parser.parse_args()
    spec = images.image_spec("huggingface", "cpu")
    images.ensure(spec, print)
    python = native_python(spec)
    rates: dict[str, list[float]] = {"container": [], "native": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, config, train = write_inputs(work, args.steps)
        for rep in range(args.reps):  # alternate, so drift on the machine hits both sides alike
            for side in ("native", "container"):
                out = work / f"{side}-{rep}"
                result = (run_native(python, args.model.resolve(), data, train, out) if side == "native"
                          else run_container(args.model.resolve(), data, config, out))
                if result.get("event") != "result":
                    raise SystemExit(f"{side} run failed: {result}")
                rates[side].append(result["steps"] / result["train_runtime"])
    med = {side: statistics.median(v) for side, v in rates.items()}
    ratio = med["container"] / med["native"]
    report = {"steps": args.steps, "reps": args.reps, "steps_per_second": rates, "median": med,
              "ratio_container_to_native": ratio, "target": 0.95, "image": spec.tag}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"| side | steps/s (median of {args.reps}) | runs |")
    print("|---|---|---|")
    for side in ("native", "container"):
        print(f"| {side} | {med[side]:.3f} | {', '.join(f'{r:.3f}' for r in rates[side])} |")
    print(f"\ncontainer / native = {ratio:.3f} (target >= 0.95, i.e. within 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
