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


#: the strategies measured side by side, on the same SmolLM2 checkpoint, batch and steps
STRATEGIES = ("sft", "qlora", "dpo")


def bench_strategies(reps: int, checkpoint: Path, steps: int = 12) -> dict[str, Any]:
    """LoRA, QLoRA (4-bit nf4 base through bitsandbytes' CPU kernels) and DPO: steps/s in the container
    against native (the image's lock in a venv), and the job's peak memory: the container's cgroup peak
    (page cache included) and the process's peak RSS on both sides."""
    python = native_python(images.image_spec("huggingface", "cpu"))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for strategy in STRATEGIES:
            data, config, train = write_inputs(work, steps, strategy)
            rates: dict[str, list[float]] = {"native": [], "container": []}
            rss: dict[str, list[int]] = {"native": [], "container": []}
            anon: dict[str, list[int]] = {"native": [], "container": []}
            working: dict[str, list[int]] = {"native": [], "container": []}
            cgroup: list[int] = []
            for rep in range(reps):  # alternate, so drift on the machine hits both sides alike
                for side in ("native", "container"):
                    run = work / f"{strategy}-{side}-{rep}"
                    result = (run_native(python, checkpoint, data, train, run) if side == "native"
                              else run_container(checkpoint, data, config, run))
                    if result.get("event") != "result":
                        raise SystemExit(f"{strategy} {side} run failed: {result}")
                    rates[side].append(result["steps"] / result["train_runtime"])
                    rss[side].append(int(result["peak_rss_bytes"]))
                    anon[side].append(int(result["peak_anon_bytes"]))
                    working[side].append(int(result["train_peak_rss_bytes"]))
                    if side == "container":
                        cgroup.append(int(result["cgroup_memory_peak_bytes"]))
            out[strategy] = {"steps_per_second": rates, "ratio": median(rates["container"]) / median(rates["native"]),
                             "peak_rss_bytes": rss, "peak_anon_bytes": anon, "train_peak_rss_bytes": working,
                             "cgroup_memory_peak_bytes": cgroup}
    for key in ("train_peak_rss_bytes", "peak_anon_bytes", "peak_rss_bytes"):
        out[f"qlora_to_lora_{key}"] = median(out["qlora"][key]["container"]) / median(out["sft"][key]["container"])
    out["qlora_to_lora_cgroup_memory_peak_bytes"] = median(out["qlora"]["cgroup_memory_peak_bytes"]) / median(
        out["sft"]["cgroup_memory_peak_bytes"])
    return out


def strategy_rows(st: dict[str, Any]) -> list[str]:
    names = {"sft": "LoRA", "qlora": "QLoRA (4-bit nf4)", "dpo": "DPO (LoRA)"}
    lines = []
    for strategy in STRATEGIES:
        r = st[strategy]
        lines.append(f"| {names[strategy]} training, SmolLM2 (steps/s) | {median(r['steps_per_second']['container']):.3f} | "
                     f"{median(r['steps_per_second']['native']):.3f} | {r['ratio']:.3f} | >= 0.95 | "
                     f"{status(r['ratio'], 0.95, True)} |")
    def mib(strategy: str, key: str) -> float:
        values = st[strategy][key]
        return median(values["container"] if isinstance(values, dict) else values) / 2**20

    memory = [("train_peak_rss_bytes", "working set while training (VmRSS)", True),
              ("peak_anon_bytes", "peak anonymous memory", False),
              ("peak_rss_bytes", "peak RSS, loading included", False),
              ("cgroup_memory_peak_bytes", "container cgroup peak", False)]
    for key, what, targeted in memory:
        ratio = st[f"qlora_to_lora_{key}"]
        lines.append(f"| QLoRA / LoRA {what} (MiB) | {mib('qlora', key):.0f} | {mib('sft', key):.0f} | {ratio:.3f} | "
                     + (f"< 1 | {status(ratio, 1.0, False)} |" if targeted else "figure | |"))
    return lines


#: in the huggingface image: the launch alone, torchrun's standalone rendezvous and a gloo process group of
#: two ranks meeting at a barrier, against the same interpreter importing torch.distributed (what any run pays)
_LAUNCH = r"""
import json, statistics, subprocess, sys, time
WORKER = "import torch.distributed as d; d.init_process_group('gloo'); d.barrier(); d.destroy_process_group()"
open("/tmp/worker.py", "w").write(WORKER)
plain = [sys.executable, "-c", "import torch.distributed"]
launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr", "127.0.0.1",
          "--nproc-per-node", "2", "--max-restarts", "0", "--monitor-interval", "0.5", "/tmp/worker.py"]
runs = {"plain": [], "torchrun": []}
for _ in range(int(sys.argv[1])):
    for name, cmd in (("plain", plain), ("torchrun", launch)):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        runs[name].append(time.perf_counter() - started)
print(json.dumps(runs))
"""


def bench_distributed(reps: int, checkpoint: Path, steps: int = 12) -> dict[str, Any]:
    """`--nproc 2` against one process on the same machine (samples/s, the same per-rank batch), and what
    the launch itself costs inside the container (torchrun + c10d rendezvous + a gloo group of 2)."""
    import json

    from orchestrator import engine

    tag = images.ensure(images.image_spec("huggingface", "cpu"), print)
    out_raw = engine.client().containers.run(  # the container's own /tmp, a tmpfs
        tag, entrypoint=["python", "-c", _LAUNCH, str(reps)], network_mode="none", remove=True,
        environment={"HOME": "/tmp"}, tmpfs={"/tmp": "size=64m"})  # noqa: S108
    launch = json.loads(out_raw.decode().strip().splitlines()[-1])
    rates: dict[str, list[float]] = {"1": [], "2": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, config, train = write_inputs(work, steps)
        for rep in range(max(2, reps // 2)):
            for nproc in ("1", "2"):
                res = last_json(timed([sys.executable, "-m", "orchestrator", "run", "--provider", "huggingface",
                                       "train", "--model", str(checkpoint), "--dataset", str(data), "--config",
                                       str(config), "--output", str(work / f"run-{nproc}-{rep}"), "--json",
                                       "--nproc", nproc], dict(os.environ))[1])
                if res.get("event") != "result":
                    raise SystemExit(f"--nproc {nproc} run failed: {res}")
                rates[nproc].append(res["steps"] * train["batch_size"] * res["world_size"] / res["train_runtime"])
    overhead = median(launch["torchrun"]) - median(launch["plain"])
    return {"launch_s": launch, "launch_overhead_s": overhead, "samples_per_second": rates,
            "ratio": median(rates["2"]) / median(rates["1"]), "steps": steps, "batch_per_rank": train["batch_size"]}


def distributed_rows(d: dict[str, Any]) -> list[str]:
    return [
        f"| LoRA training, 2 ranks (--nproc 2) vs 1 process, SmolLM2 (samples/s) | {median(d['samples_per_second']['2']):.2f} | "
        f"{median(d['samples_per_second']['1']):.2f} | {d['ratio']:.2f} | >= 1.5 | {status(d['ratio'], 1.5, True)} |",
        f"| torchrun launch + rendezvous + gloo group of 2, in the container (s) | {median(d['launch_s']['torchrun']):.2f} | "
        f"{median(d['launch_s']['plain']):.2f} | +{d['launch_overhead_s']:.2f} s | <= 3 s | "
        f"{status(d['launch_overhead_s'], 3.0, False)} |",
    ]
