"""The run history at scale: `mf runs` and the web page's runs table with 1,000 recorded runs (a throwaway
history: MF_RUNS_DB), against `mf --help` (the CLI's own start) measured in the same run."""

from __future__ import annotations

import http.cookiejar
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import ROOT, median, status

LIST_TARGET = 0.3
PAGE_TARGET = 0.5
RUNS = 1000


def _fill(db: Path) -> None:
    os.environ["MF_RUNS_DB"] = str(db)
    from orchestrator import runs

    with runs.connect(db) as conn:
        now = time.time()
        conn.executemany(
            "INSERT INTO runs (id, kind, provider, model, dataset, output, backend, job, detached, status, started, "
            "ended, host, mf_pid, config, result) VALUES (?, ?, ?, ?, ?, ?, 'docker', ?, 0, ?, ?, ?, 'bench', 1, ?, ?)",
            [(f"{i:08x}", ("train", "export", "serve")[i % 3], "huggingface", f"/models/m{i}", "/data/d.jsonl",
              f"/runs/run{i}", f"docker-mf-{i}", ("finished", "failed", "interrupted")[i % 3], now - i * 60,
              now - i * 60 + 30, json.dumps({"train": {"max_steps": 10}}),
              json.dumps({"train_loss": 1.5 + i / 1000, "eval_loss": 1.7})) for i in range(RUNS)])


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=ROOT)  # noqa: S603
    return time.perf_counter() - started


def bench_history(reps: int, checkpoint: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "runs.sqlite"
        _fill(db)
        env = {**os.environ, "MF_RUNS_DB": str(db)}
        mf = [sys.executable, "-m", "orchestrator"]
        help_s, list_s = [], []
        for _ in range(reps):
            help_s.append(_timed([*mf, "--help"], env))
            list_s.append(_timed([*mf, "runs"], env))
        proc = subprocess.Popen([*mf, "ui", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,  # noqa: S603
                                text=True, env=env, cwd=ROOT)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split(" at ", 1)[1].strip()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            opener.open(url, timeout=30).read()
            page_s = []
            for _ in range(reps):
                started = time.perf_counter()
                body = opener.open(url.split("?", 1)[0], timeout=30).read()
                page_s.append(time.perf_counter() - started)
            rows = body.count(b"<tr data-run=")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = {"runs": RUNS, "help_s": median(help_s), "list_s": median(list_s), "page_s": median(page_s),
           "page_rows": rows}
    if checkpoint is not None:
        out["live"] = bench_live(checkpoint)
    return out


def rows(r: dict[str, Any]) -> list[str]:
    return [
        f"| `mf runs` with {r['runs']:,} runs (s) | {r['list_s']:.3f} | {r['help_s']:.3f} (`mf --help`) "
        f"| +{r['list_s'] - r['help_s']:.3f} s | <= {LIST_TARGET} | {status(r['list_s'], LIST_TARGET, False)} |",
        f"| `mf ui` runs page with {r['page_rows']:,} rows, request to last byte (s) | {r['page_s']:.3f} | | "
        f"| <= {PAGE_TARGET} | {status(r['page_s'], PAGE_TARGET, False)} |",
    ] + (live_rows(r["live"]) if "live" in r else [])


LIVE_TARGET = 0.5


def bench_live(checkpoint: Path) -> dict[str, Any]:
    """How long a training job's events take to reach the run's page (its server-sent events): each event's
    arrival against the time the Docker engine stamped on the line when the job wrote it."""
    import datetime

    import docker

    from bench.train_step import write_inputs

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        work.chmod(0o755)
        env = {**os.environ, "MF_RUNS_DB": str(work / "runs.sqlite")}
        dataset, config, _ = write_inputs(work, steps=20)
        mf = [sys.executable, "-m", "orchestrator"]
        ui = subprocess.Popen([*mf, "ui", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,  # noqa: S603
                              text=True, env=env, cwd=ROOT)
        job = ""
        try:
            assert ui.stdout is not None
            url = ui.stdout.readline().split(" at ", 1)[1].strip()
            base = url.split("/runs", 1)[0]
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            opener.open(url, timeout=30).read()
            res = subprocess.run([*mf, "run", "-p", "huggingface", "train", "--model", str(checkpoint), "--dataset",  # noqa: S603
                                  str(dataset), "--output", str(work / "run"), "--config", str(config), "--detach",
                                  "--json"], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
            job = json.loads(res.stdout.splitlines()[-1])["job"]
            run_id = json.loads(subprocess.run([*mf, "runs", "--json"], capture_output=True, text=True, env=env,  # noqa: S603
                                               check=True, cwd=ROOT).stdout)[0]["id"]
            connected = time.time()
            arrivals: list[tuple[str, float]] = []
            with opener.open(f"{base}/runs/{run_id}/events", timeout=600) as stream:
                for raw in stream:
                    line = raw.decode().strip()
                    if line.startswith("data: {") and '"event"' in line:
                        arrivals.append((line[6:], time.time()))
            container = docker.from_env().containers.get(job.removeprefix("docker-"))
            stamped = {}
            for raw in container.logs(stdout=True, stderr=False, timestamps=True).decode().splitlines():
                stamp, _, text = raw.partition(" ")
                when = datetime.datetime.fromisoformat(stamp[:26] + "+00:00").timestamp()
                stamped[text.strip()] = when
            delays = [arrived - stamped[text] for text, arrived in arrivals
                      if text in stamped and stamped[text] > connected + 0.2]
        finally:
            if job:
                subprocess.run([*mf, "jobs", "cancel", job], capture_output=True, env=env, cwd=ROOT, check=False)  # noqa: S603
            ui.terminate()
            ui.wait(timeout=30)
    return {"events": len(delays), "median_s": median(delays), "max_s": max(delays)}


def live_rows(r: dict[str, Any]) -> list[str]:
    return [f"| `mf ui`: a training job's events to the run's page (median / max of {r['events']}) (s) "
            f"| {r['median_s']:.3f} / {r['max_s']:.3f} | | | <= {LIVE_TARGET} | {status(r['max_s'], LIVE_TARGET, False)} |"]
