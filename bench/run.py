"""`make bench`: what the container costs against native, image sizes and build times, in one run.

Every comparison runs both sides in the same run, alternating, with repetitions and medians. The
native side is the same code on the same packages: for gguf, the image's own site-packages (the
very llama.cpp build) copied out and run by the host's Python; for huggingface, a venv made from
the image's lock and wheels. Prints a markdown table and writes bench-results/bench.json.
Benchmarks are not tests: a figure that misses its target is reported as such.

usage: python bench/run.py [--reps 5] [--cold] [--out bench-results/bench.json]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_step import native_python, run_container, run_native, write_inputs  # noqa: E402

from orchestrator import engine, images, label, recipes  # noqa: E402

GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Once upon a time, in a small village by the sea,"
SIZE_TARGETS_MB = {("gguf", "cpu"): 300, ("gguf", "cuda"): 2500, ("huggingface", "cpu"): 1300, ("unsloth", "cuda"): 9000}
REBUILD_TARGET_S = 20.0
VALIDATE_TARGET_S = 1.0  # `mf run --provider gguf validate`, image present (goal 0.8 s)
WORK_TARGET_S = 0.15  # in-process validate + describe
CLI_START_TARGET_S = 0.15
#: cold builds: what keeps a fresh CI run (every image from nothing) inside its budget
COLD_BUILD_TARGETS_S = {"gguf": 600, "huggingface": 300}
LARGE_VOCAB = 152_064  # Qwen2's vocabulary size
FIRST_RUN_TARGET_S = 60.0
VERIFY_TARGET_S = 2.0
SLURM_OVERHEAD_TARGET_S = 2.0
DOCKER = shutil.which("docker") or "/usr/bin/docker"


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


# -- 1. overhead of `mf run --provider gguf validate` ------------------------------------------
def bench_overhead(reps: int, gguf_tag: str) -> dict[str, Any]:
    mf = [sys.executable, "-m", "orchestrator"]
    native_code = (
        "import time; t=time.perf_counter()\n"
        "from providers.gguf import GGUFProvider\n"
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
        "import time; t=time.perf_counter()\nfrom providers.gguf import GGUFProvider\n"
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


# -- 2. gguf generation tokens/s -------------------------------------------------------------
def bench_gguf_generation(reps: int, gguf_tag: str) -> dict[str, Any]:
    site = image_site_packages(gguf_tag)
    code = (
        "import json\nfrom providers.gguf import GGUFProvider\n"
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


# -- 3. huggingface LoRA training and model load ----------------------------------------------
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
        "import json\nfrom providers.huggingface import HuggingFaceProvider\nimport time\n"
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


# -- 4. images that travel and clusters: a registry, an empty engine, a Slurm cluster ----------------
def bench_travel_and_clusters(reps: int, gguf_tag: str) -> dict[str, Any]:
    """A real registry and an empty second engine (the first run on a fresh machine, pull included), and
    a real one-node Slurm cluster (its overhead over the docker backend for gguf validate, split)."""
    sys.path.insert(0, str(ROOT))
    from orchestrator import signing
    from tests.docker.registry_fixtures import second_engine, start_registry, stop_registry
    from tests.docker.slurm_fixtures import one_node_slurm

    out: dict[str, Any] = {}
    mf = [sys.executable, "-m", "orchestrator"]
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        work = Path(tmp)
        registry_proc, address = start_registry(work / "registry")
        try:
            private, public = signing.generate(work / "keys")
            env = {**os.environ, "MF_REGISTRY": f"{address}/bench", "MF_SIGNING_KEY": str(private),
                   "MF_TRUSTED_KEYS": str(public), "XDG_CONFIG_HOME": str(work / "config"),
                   "XDG_CACHE_HOME": str(work / "cache")}
            pushed = {}
            for name in ("gguf", "huggingface"):
                seconds, proc = timed([*mf, "images", "push", name, "--flavour", "cpu"], env)
                if proc.returncode != 0:
                    raise SystemExit(f"push failed: {proc.stderr[-400:]}")
                pushed[name] = seconds
            out["push_s"] = pushed
            verify = [timed([*mf, "images", "verify", "--all"], env)[0] for _ in range(reps)]
            out["verify_all_s"] = median(verify)
            first_runs, pulls = [], {"huggingface": []}
            for rep in range(max(1, reps // 2)):
                with second_engine(work / f"engine-{rep}") as host:
                    fresh = {**env, "DOCKER_HOST": host}
                    seconds, proc = timed([*mf, "run", "--provider", "gguf", "validate", "--model", str(GGUF), "--json"],
                                          fresh)
                    if proc.returncode != 0:
                        raise SystemExit(f"first run failed: {proc.stderr[-400:]}")
                    first_runs.append(seconds)
                    pulls["huggingface"].append(timed([*mf, "images", "pull", "huggingface", "--flavour", "cpu"],
                                                      fresh)[0])
            out["first_run_empty_engine_s"] = median(first_runs)
            out["pull_s"] = {name: median(v) for name, v in pulls.items()}
        finally:
            stop_registry(registry_proc, address)
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
        out["slurm"] = {"runs": runs, "overhead_s": median(runs["slurm"]) - median(runs["docker"]),
                        "split_s": {k: median([s[k] for s in splits]) for k in splits[0]}}
    return out


# -- 5. images: sizes, cold builds, rebuild after a one-line change ------------------------------
def rebuild_after_a_change(spec: images.ImageSpec, kept_builder: bool) -> float:
    """Seconds from a one-line change in providers/ to its image built (context written and sent included,
    the SBOM scan not): with the builder stage taken from its kept image (what `mf` does), or replayed
    from the layer cache with the wheels in the context (what a plain multi-stage build does)."""
    quiet: Callable[[str], None] = lambda line: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "providers"
        shutil.copytree(recipes.PROVIDERS_SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
        with (src / "log.py").open("a") as fh:
            fh.write(f"# bench {time.time()} {kept_builder}\n")
        original, recipes.PROVIDERS_SRC = recipes.PROVIDERS_SRC, src
        try:
            changed = images.image_spec(spec.provider, spec.flavour)
            args = images.build_args(changed, quiet)
            wheels = None if kept_builder else images.stage_wheelhouse(changed, quiet)
            started = time.perf_counter()
            context = Path(tmp) / "context.tar"
            if kept_builder:
                images.write_image_context(changed, context, quiet)
            else:
                images.write_context(changed, wheels, context)
            with context.open("rb") as fh:
                engine.build_image(fh, changed.tag, buildargs=args, labels=changed.labels(), on_line=quiet)
            seconds = time.perf_counter() - started
            engine.client().images.remove(changed.tag, force=True)
            return seconds
        finally:
            recipes.PROVIDERS_SRC = original


def bench_images(cold: bool) -> dict[str, Any]:
    rows = []
    for (provider, flavour), target in SIZE_TARGETS_MB.items():
        try:
            spec = images.image_spec(provider, flavour)
        except Exception as exc:
            rows.append({"image": f"{provider} {flavour}", "size_mb": None, "target_mb": target, "note": str(exc)})
            continue
        attrs = engine.image_attrs(spec.tag)
        note = ""
        if attrs is None:  # an earlier build of the same recipe differs in the code layer only
            earlier = engine.client().images.list(filters={"label": [f"{label('kind')}=image",
                                                                     f"{label('provider')}={provider}",
                                                                     f"{label('flavour')}={flavour}"]})
            if earlier:
                attrs, note = max((img.attrs for img in earlier), key=lambda a: a["Created"]), "(latest earlier build)"
        rows.append({"image": f"{provider} {flavour}", "tag": spec.tag, "target_mb": target,
                     "size_mb": round(attrs["Size"] / 1e6) if attrs else None,
                     "note": note if attrs else "not built"})
    result: dict[str, Any] = {"sizes": rows, "rebuild_s": {}, "rebuild_ways_s": {}, "sbom_s": {},
                              "cold_build_s": {}}
    for provider, flavour in (("gguf", "cpu"), ("huggingface", "cpu"), ("unsloth", "cuda"), ("gguf", "cuda")):
        spec = images.image_spec(provider, flavour)
        if flavour == "cuda" and provider == "gguf" and not (engine.image_exists(spec.tag) or images.build_cached(spec)):
            continue  # never compile the CUDA kernels here: `make image-gguf FLAVOUR=cuda` does
        images.ensure(spec, lambda line: None)
        images.ensure_builder(spec, lambda line: None)
        name = f"{provider} {flavour}"
        ways = alternate(2, {"kept builder": functools.partial(rebuild_after_a_change, spec, kept_builder=True),
                             "stage replayed": functools.partial(rebuild_after_a_change, spec, kept_builder=False)})
        result["rebuild_ways_s"][name] = ways
        result["rebuild_s"][name] = median(ways["kept builder"])
        if images.syft_path() is not None:
            started = time.perf_counter()
            images.write_sbom(spec, lambda line: None)
            result["sbom_s"][name] = time.perf_counter() - started
        if cold and flavour == "cpu":
            started = time.perf_counter()
            tag = f"modelforge-bench/{provider}:cold"
            wheels = images.stage_wheelhouse(spec, lambda line: None)
            with tempfile.TemporaryDirectory() as tmp:
                context = Path(tmp) / "context.tar"
                images.write_context(spec, wheels, context)
                args = {"BASE": recipes.BASE_RUNTIME.tag, "BASE_BUILD": recipes.BASE_BUILD.tag, "FLAVOUR": "cpu"}
                with context.open("rb") as fh:
                    engine.build_image(fh, tag, buildargs=args, labels={}, on_line=lambda line: None, nocache=True)
            result["cold_build_s"][provider] = time.perf_counter() - started
            engine.client().images.remove(tag, force=True)
    return result


def status(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "**misses**"


def table(report: dict[str, Any]) -> str:
    lines = ["| measure | container | native / baseline | ratio or figure | target | |", "|---|---|---|---|---|---|"]
    if "overhead" in report:
        lines += _table_runs(report)
    cc = report.get("gguf_cuda_on_cpu")
    if cc:
        lines.append(f"| gguf generation on this CPU, cuda image ({cc['cpu_backend']}) vs cpu image (tokens/s) | "
                     f"{median(cc['runs']['cuda image']):.1f} | {median(cc['runs']['cpu image']):.1f} | "
                     f"{cc['ratio']:.3f} | >= {cc['target']} | {status(cc['ratio'], cc['target'], True)} |")
    if "images" in report:
        lines += _table_images(report["images"])
    return "\n".join(lines)


def _table_runs(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    ov = report["overhead"]
    med = ov["median"]
    lines.append(f"| `mf run --provider gguf validate` wall time (s) | {med['mf run validate']:.2f} | "
                 f"{med['native validate (python -c)']:.2f} | +{ov['overhead_s']:.2f} s | <= {VALIDATE_TARGET_S} | "
                 f"{status(med['mf run validate'], VALIDATE_TARGET_S, False)} |")
    for name, seconds in ov["breakdown_s"].items():
        lines.append(f"| &nbsp;&nbsp;of which: {name} | {seconds:.2f} s | | | (part of the row above) | |")
    lines.append(f"| in-process validate + describe (s) | {ov['work_s']:.3f} | | | <= {WORK_TARGET_S} | "
                 f"{status(ov['work_s'], WORK_TARGET_S, False)} |")
    lines.append(f"| bare `docker run IMAGE true` (s) | {med['docker run IMAGE true']:.2f} | | | "
                 "the floor (reference) | |")
    for name in ("mf --help", "mf providers (CLI start)"):
        lines.append(f"| `{name}` (s) | {med[name]:.2f} | | | <= {CLI_START_TARGET_S} | "
                     f"{status(med[name], CLI_START_TARGET_S, False)} |")
    lines.append(f"| `mf providers` with the engine's answers (s) | {med['mf providers']:.2f} | | | "
                 "(CLI start above + engine queries) | |")
    lv = report["large_vocab"]["median"]
    lines.append(f"| validate + describe, {LARGE_VOCAB:,}-token GGUF, in-process (s) | "
                 f"{lv['provider (in-process)']:.3f} | {lv['gguf.GGUFReader (in-process)']:.2f} (GGUFReader) | "
                 f"{lv['gguf.GGUFReader (in-process)'] / lv['provider (in-process)']:.0f}x faster | <= {WORK_TARGET_S} | "
                 f"{status(lv['provider (in-process)'], WORK_TARGET_S, False)} |")
    lines.append(f"| `mf run` validate, {LARGE_VOCAB:,}-token GGUF (s) | {lv['mf run validate']:.2f} | | | "
                 f"<= {VALIDATE_TARGET_S} | {status(lv['mf run validate'], VALIDATE_TARGET_S, False)} |")
    gen = report["gguf_generation"]
    lines.append(f"| gguf generation (tokens/s, 128 new) | {median(gen['runs']['container']):.1f} | "
                 f"{median(gen['runs']['native']):.1f} | {gen['ratio']:.3f} | >= {gen['target']} | "
                 f"{status(gen['ratio'], gen['target'], True)} |")
    hf = report["huggingface"]
    lines.append(f"| LoRA training (steps/s) | {median(hf['train_steps_per_second']['container']):.3f} | "
                 f"{median(hf['train_steps_per_second']['native']):.3f} | {hf['train_ratio']:.3f} | "
                 f">= {hf['train_target']} | {status(hf['train_ratio'], hf['train_target'], True)} |")
    lines.append(f"| model load (s) | {median(hf['load_seconds']['container']):.2f} | "
                 f"{median(hf['load_seconds']['native']):.2f} | {hf['load_ratio']:.3f} | <= {hf['load_target']} | "
                 f"{status(hf['load_ratio'], hf['load_target'], False)} |")
    tc = report.get("travel")
    if tc:
        lines.append(f"| first `mf run` gguf validate on an empty engine, registry set (pull included, s) | "
                     f"{tc['first_run_empty_engine_s']:.1f} | ~700 (building it) | | <= {FIRST_RUN_TARGET_S} | "
                     f"{status(tc['first_run_empty_engine_s'], FIRST_RUN_TARGET_S, False)} |")
        for name, seconds in tc["pull_s"].items():
            lines.append(f"| pull + verify: {name} cpu into an empty engine (s) | {seconds:.1f} | | | "
                         f"(reported) | |")
        for name, seconds in tc["push_s"].items():
            lines.append(f"| push + sign: {name} cpu (s) | {seconds:.1f} | | | (reported) | |")
        lines.append(f"| `mf images verify --all` (s) | {tc['verify_all_s']:.2f} | | | <= {VERIFY_TARGET_S} | "
                     f"{status(tc['verify_all_s'], VERIFY_TARGET_S, False)} |")
        sl = tc["slurm"]
        lines.append(f"| gguf validate through Slurm (s) | {median(sl['runs']['slurm']):.2f} | "
                     f"{median(sl['runs']['docker']):.2f} (docker backend) | +{sl['overhead_s']:.2f} s | "
                     f"<= +{SLURM_OVERHEAD_TARGET_S} s | {status(sl['overhead_s'], SLURM_OVERHEAD_TARGET_S, False)} |")
        for name, seconds in sl["split_s"].items():
            lines.append(f"| &nbsp;&nbsp;of which: {name.replace('_', ' ')} | {seconds:.2f} s | | | "
                         "(part of the row above) | |")
    return lines


def _table_images(im: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for row in im["sizes"]:
        size = row["size_mb"]
        verdict = f"{status(size, row['target_mb'], False)} {row['note']}".strip() if size else row["note"]
        lines.append(f"| image size: {row['image']} (MB) | {size if size is not None else '-'} | | | "
                     f"<= {row['target_mb']} | {verdict} |")
    for provider, seconds in im["rebuild_s"].items():
        ways = im.get("rebuild_ways_s", {}).get(provider)
        replayed = f"{median(ways['stage replayed']):.1f}" if ways else ""
        ratio = f"{seconds / median(ways['stage replayed']):.2f}" if ways else ""
        lines.append(f"| rebuild after a one-line change: {provider}, kept builder vs stage replayed (s) | "
                     f"{seconds:.1f} | {replayed} | {ratio} | <= {REBUILD_TARGET_S:g} | "
                     f"{status(seconds, REBUILD_TARGET_S, False)} |")
    for provider, seconds in im.get("sbom_s", {}).items():
        lines.append(f"| SBOM scan after that rebuild: {provider} (s) | {seconds:.1f} | | | | |")
    for provider, seconds in im["cold_build_s"].items():
        target = COLD_BUILD_TARGETS_S[provider]
        lines.append(f"| cold build (no cache, wheels staged): {provider} (s) | {seconds:.0f} | | | <= {target} | "
                     f"{status(seconds, target, False)} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also time no-cache builds (minutes)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the SmolLM2 Hugging Face checkpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench.json")
    parser.add_argument("--only", choices=["gguf-cuda", "images"],
                        help="measure one part only (its rows of the table; bench.json is not overwritten)")
    args = parser.parse_args()
    if args.only:
        part: dict[str, Any] = {}
        if args.only == "gguf-cuda":
            part["gguf_cuda_on_cpu"] = bench_gguf_cuda_on_cpu(args.reps)
        else:
            part["images"] = bench_images(args.cold)
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
    report["overhead"] = bench_overhead(args.reps, gguf_tag)
    print("large-vocabulary gguf ...", file=sys.stderr)
    report["large_vocab"] = bench_large_vocab(args.reps, gguf_tag)
    print("gguf generation ...", file=sys.stderr)
    report["gguf_generation"] = bench_gguf_generation(args.reps, gguf_tag)
    print("huggingface train and load ...", file=sys.stderr)
    report["huggingface"] = bench_huggingface(max(3, args.reps // 2), args.checkpoint.resolve())
    if os.getuid() == 0:
        print("registry, empty engine, Slurm ...", file=sys.stderr)
        report["travel"] = bench_travel_and_clusters(args.reps, gguf_tag)
    print("gguf cuda image on this CPU ...", file=sys.stderr)
    report["gguf_cuda_on_cpu"] = bench_gguf_cuda_on_cpu(args.reps)
    print("images ...", file=sys.stderr)
    report["images"] = bench_images(args.cold)
    report["table"] = table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"Measured on {report['machine']}, {report['date']}, medians of {args.reps} runs.\n")
    print(report["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
