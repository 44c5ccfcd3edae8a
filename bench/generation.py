"""Generation and the cost of the CLI: `mf run --provider gguf validate` against native (with its
breakdown), the CLI's start, a large-vocabulary GGUF, gguf tokens/s in the container against native, and the
gguf cuda image on this CPU against the cpu image.

The native side is the image's own site-packages (the very llama.cpp build) copied out and run by the host's
Python.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import GGUF, ROOT, alternate, last_json, median, part_row, status, timed
from orchestrator import engine, images

PROMPT = "Once upon a time, in a small village by the sea,"
VALIDATE_TARGET_S = 1.0  # `mf run --provider gguf validate`, image present (goal 0.8 s)
WORK_TARGET_S = 0.15  # in-process validate + describe
CLI_START_TARGET_S = 0.15
LARGE_VOCAB = 152_064  # Qwen2's vocabulary size
DOCKER = shutil.which("docker") or "/usr/bin/docker"


def image_site_packages(tag: str) -> Path:
    """The image's /opt/venv site-packages, copied to the host once per image."""
    target = ROOT / ".cache" / "bench" / f"site-{tag.replace('/', '_').replace(':', '_')}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    container = engine.client().containers.create(tag, entrypoint=["true"])
    try:
        stream, _ = container.get_archive("/opt/venv/lib/python3.11/site-packages")
        data = io.BytesIO(b"".join(stream))
    finally:
        container.remove(force=True)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=data) as tar:
        tar.extractall(tmp, filter="data")
        shutil.move(str(Path(tmp) / "site-packages"), target)
    (target / ".complete").touch()
    return target



# -- overhead of `mf run --provider gguf validate` ---------------------------------------------
def bench_overhead(reps: int, gguf_tag: str) -> dict[str, Any]:
    mf = [sys.executable, "-m", "orchestrator"]
    native_code = (
        "import time; t=time.perf_counter()\n"
        "from providers.builtin.gguf import GGUFProvider\n"
        f"p=GGUFProvider(); p.validate_model_access({str(GGUF)!r}, 'AutoModelForCausalLM')\n"
        f"p.describe_model({str(GGUF)!r}, 'AutoModelForCausalLM'); print(time.perf_counter()-t)"
    )
    site = image_site_packages(gguf_tag)
    native_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    work: list[float] = []

    def native() -> float:
        seconds, proc = timed([sys.executable, "-c", native_code], native_env)
        work.append(float(proc.stdout.strip().splitlines()[-1]))
        return seconds

    runs = alternate(reps, {
        "mf run validate": lambda: timed([*mf, "run", "--provider", "gguf", "validate", "--model", str(GGUF),
                                          "--json"])[0],
        "native validate (python -c)": native,
        "docker run IMAGE true": lambda: timed([DOCKER, "run", "--rm", "--network", "none", "--entrypoint",
                                                "true", gguf_tag])[0],
        "docker run IMAGE python -c pass": lambda: timed([DOCKER, "run", "--rm", "--network", "none",
                                                          "--entrypoint", "python", gguf_tag, "-c", "pass"])[0],
        "mf --version (CLI start)": lambda: timed([*mf, "--version"])[0],
        "mf --help": lambda: timed([*mf, "--help"])[0],
        "mf providers": lambda: timed([*mf, "providers"])[0],
        # the same command with no engine to ask: what is left is the CLI's own start (imports, registry, tags)
        "mf providers (CLI start)": lambda: timed([*mf, "providers"],
                                                  {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"})[0],
    })
    med = {name: median(values) for name, values in runs.items()}
    total = med["mf run validate"]
    parts = {
        "CLI start (python, click, imports)": med["mf --version (CLI start)"],
        "engine + container start/stop": med["docker run IMAGE true"],
        "Python start in the container": max(0.0, med["docker run IMAGE python -c pass"] - med["docker run IMAGE true"]),
        "work (validate + describe)": median(work),
    }
    parts["the rest (image check, mounts, event stream)"] = total - sum(parts.values())
    return {"runs": runs, "median": med, "overhead_s": total - med["native validate (python -c)"],
            "breakdown_s": parts, "work_s": median(work)}


def bench_large_vocab(reps: int, gguf_tag: str) -> dict[str, Any]:
    """Validate + describe of a GGUF with a 152k-token vocabulary (made with the gguf writer):
    the provider's header reader in-process and through `mf run`, against gguf.GGUFReader."""
    import numpy as np
    from gguf import GGUFReader, GGUFWriter

    path = ROOT / ".cache" / "bench" / f"vocab-{LARGE_VOCAB}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = GGUFWriter(str(path), "llama")
        writer.add_name("large-vocab")
        writer.add_context_length(4096)
        writer.add_token_list([f"token-{i}" for i in range(LARGE_VOCAB)])
        writer.add_token_scores([0.0] * LARGE_VOCAB)
        writer.add_token_merges([f"tok en-{i}" for i in range(LARGE_VOCAB)])
        for i in range(64):
            writer.add_tensor(f"blk.{i}.weight", np.zeros((64, 64), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    site = image_site_packages(gguf_tag)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    ours_code = (
        "import time; t=time.perf_counter()\nfrom providers.builtin.gguf import GGUFProvider\n"
        f"p=GGUFProvider(); p.validate_model_access({str(path)!r}, 'AutoModelForCausalLM')\n"
        f"d=p.describe_model({str(path)!r}, 'AutoModelForCausalLM'); assert d['vocab_size']=={LARGE_VOCAB}\n"
        "print(time.perf_counter()-t)"
    )

    def reference() -> float:
        started = time.perf_counter()
        reader = GGUFReader(path)
        assert len(reader.fields["tokenizer.ggml.tokens"].data) == LARGE_VOCAB
        return time.perf_counter() - started

    runs = alternate(reps, {
        "provider (in-process)": lambda: float(timed([sys.executable, "-c", ours_code], env)[1].stdout.split()[-1]),
        "gguf.GGUFReader (in-process)": reference,
        "mf run validate": lambda: timed([sys.executable, "-m", "orchestrator", "run", "--provider", "gguf",
                                          "validate", "--model", str(path), "--json"])[0],
    })
    return {"runs": runs, "median": {name: median(values) for name, values in runs.items()}}


# -- gguf generation tokens/s ---------------------------------------------------------------
def bench_gguf_generation(reps: int, gguf_tag: str) -> dict[str, Any]:
    site = image_site_packages(gguf_tag)
    code = (
        "import json\nfrom providers.builtin.gguf import GGUFProvider\n"
        f"p=GGUFProvider(); m=p.load_model({str(GGUF)!r}, 'AutoModelForCausalLM', device_map='cpu')\n"
        f"t=p.load_tokenizer({str(GGUF)!r})\n"
        f"print(json.dumps(p.generate(m, t, {PROMPT!r}, max_new_tokens=128, temperature=0.0)))"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}

    def native() -> float:
        return float(last_json(timed([sys.executable, "-c", code], env)[1])["tokens_per_second"])

    def container() -> float:
        proc = timed([sys.executable, "-m", "orchestrator", "run", "--provider", "gguf", "load", "--model", str(GGUF),
                      "--prompt", PROMPT, "--max-new-tokens", "128", "--json"])[1]
        return float(last_json(proc)["tokens_per_second"])

    runs = alternate(reps, {"native": native, "container": container})
    ratio = median(runs["container"]) / median(runs["native"])
    return {"runs": runs, "ratio": ratio, "target": 0.97}


def bench_gguf_cuda_on_cpu(reps: int) -> dict[str, Any] | None:
    """The cuda image on this CPU-only host (its CPU backend, the variant for this CPU) against the cpu
    image, both through `mf run`, alternating; None where the cuda image is not built."""
    spec = images.image_spec("gguf", "cuda")
    if not (engine.image_exists(spec.tag) or images.build_cached(spec)):
        return None
    images.ensure(spec, lambda line: print(line, file=sys.stderr))
    seen: dict[str, dict[str, Any]] = {}

    def side(flavour: str) -> Callable[[], float]:
        def run() -> float:
            proc = timed([sys.executable, "-m", "orchestrator", "run", "--provider", "gguf", "--flavour", flavour,
                          "load", "--model", str(GGUF), "--prompt", PROMPT, "--max-new-tokens", "128", "--json"])[1]
            seen[flavour] = last_json(proc)
            return float(seen[flavour]["tokens_per_second"])
        return run

    runs = alternate(reps, {"cpu image": side("cpu"), "cuda image": side("cuda")})
    return {"runs": runs, "ratio": median(runs["cuda image"]) / median(runs["cpu image"]), "target": 0.97,
            "cpu_backend": seen["cuda"].get("backend", {}).get("cpu_backend"), "device": seen["cuda"].get("device")}


# -- their rows of the table ----------------------------------------------------------------
def rows(ov: dict[str, Any], large_vocab: dict[str, Any], gen: dict[str, Any]) -> list[str]:
    """The rows of the overhead, the large-vocabulary GGUF and gguf generation, in that order."""
    lines: list[str] = []
    med = ov["median"]
    lines.append(f"| `mf run --provider gguf validate` wall time (s) | {med['mf run validate']:.2f} | "
                 f"{med['native validate (python -c)']:.2f} | +{ov['overhead_s']:.2f} s | <= {VALIDATE_TARGET_S} | "
                 f"{status(med['mf run validate'], VALIDATE_TARGET_S, False)} |")
    for name, seconds in ov["breakdown_s"].items():
        lines.append(part_row(name, seconds))
    lines.append(f"| in-process validate + describe (s) | {ov['work_s']:.3f} | | | <= {WORK_TARGET_S} | "
                 f"{status(ov['work_s'], WORK_TARGET_S, False)} |")
    lines.append(f"| bare `docker run IMAGE true` (s) | {med['docker run IMAGE true']:.2f} | | | "
                 "the floor (reference) | |")
    for name in ("mf --help", "mf providers (CLI start)"):
        lines.append(f"| `{name}` (s) | {med[name]:.2f} | | | <= {CLI_START_TARGET_S} | "
                     f"{status(med[name], CLI_START_TARGET_S, False)} |")
    lines.append(f"| `mf providers` with the engine's answers (s) | {med['mf providers']:.2f} | | | "
                 "(CLI start above + engine queries) | |")
    lv = large_vocab["median"]
    lines.append(f"| validate + describe, {LARGE_VOCAB:,}-token GGUF, in-process (s) | "
                 f"{lv['provider (in-process)']:.3f} | {lv['gguf.GGUFReader (in-process)']:.2f} (GGUFReader) | "
                 f"{lv['gguf.GGUFReader (in-process)'] / lv['provider (in-process)']:.0f}x faster | <= {WORK_TARGET_S} | "
                 f"{status(lv['provider (in-process)'], WORK_TARGET_S, False)} |")
    lines.append(f"| `mf run` validate, {LARGE_VOCAB:,}-token GGUF (s) | {lv['mf run validate']:.2f} | | | "
                 f"<= {VALIDATE_TARGET_S} | {status(lv['mf run validate'], VALIDATE_TARGET_S, False)} |")
    lines.append(f"| gguf generation (tokens/s, 128 new) | {median(gen['runs']['container']):.1f} | "
                 f"{median(gen['runs']['native']):.1f} | {gen['ratio']:.3f} | >= {gen['target']} | "
                 f"{status(gen['ratio'], gen['target'], True)} |")
    return lines


def cuda_on_cpu_rows(cc: dict[str, Any]) -> list[str]:
    return [f"| gguf generation on this CPU, cuda image ({cc['cpu_backend']}) vs cpu image (tokens/s) | "
            f"{median(cc['runs']['cuda image']):.1f} | {median(cc['runs']['cpu image']):.1f} | "
            f"{cc['ratio']:.3f} | >= {cc['target']} | {status(cc['ratio'], cc['target'], True)} |"]
