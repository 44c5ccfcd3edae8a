"""Images that travel: a real registry (push + sign, `mf images verify --all`) and an empty second engine
(the first run on a fresh machine, pull included). Needs root (`make bench` as root)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import GGUF, median, status, timed

FIRST_RUN_TARGET_S = 60.0
VERIFY_TARGET_S = 2.0


def bench_registry(reps: int) -> dict[str, Any]:
    """A real registry and an empty second engine (the first run on a fresh machine, pull included)."""
    from orchestrator import signing
    from tests.docker.registry_fixtures import second_engine, start_registry, stop_registry

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
            first_runs: list[float] = []
            pulls: dict[str, list[float]] = {"huggingface": []}
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
    return out


def rows(tc: dict[str, Any]) -> list[str]:
    lines = [f"| first `mf run` gguf validate on an empty engine, registry set (pull included, s) | "
             f"{tc['first_run_empty_engine_s']:.1f} | ~700 (building it) | | <= {FIRST_RUN_TARGET_S} | "
             f"{status(tc['first_run_empty_engine_s'], FIRST_RUN_TARGET_S, False)} |"]
    for name, seconds in tc["pull_s"].items():
        lines.append(f"| pull + verify: {name} cpu into an empty engine (s) | {seconds:.1f} | | | "
                     f"(reported) | |")
    for name, seconds in tc["push_s"].items():
        lines.append(f"| push + sign: {name} cpu (s) | {seconds:.1f} | | | (reported) | |")
    lines.append(f"| `mf images verify --all` (s) | {tc['verify_all_s']:.2f} | | | <= {VERIFY_TARGET_S} | "
                 f"{status(tc['verify_all_s'], VERIFY_TARGET_S, False)} |")
    return lines
