"""`mf runs` and the metrics a run leaves (metrics.jsonl, TensorBoard event files), from real jobs: a finished,
a failed, an interrupted (mf killed) and a running (detached) training run, and runs recorded at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import mf, sigint_as_at_a_terminal, until_step
from .test_huggingface_image import write_config, write_dataset

pytestmark = pytest.mark.docker


def _runs(*args: str) -> list[dict[str, Any]]:
    res = mf("runs", *args, "--json")
    assert res.code == 0, res.stderr
    return list(json.loads(res.stdout))


def _by_output(rows: list[dict[str, Any]], output: Path) -> dict[str, Any]:
    [row] = [r for r in rows if r["output"] == str(output.absolute())]
    return row


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    folder.chmod(0o755)
    write_dataset(folder / "data.jsonl", n=30)
    write_config(folder / "job.json", max_steps=10, eval_split=0.2, eval_steps=5)
    return folder


@pytest.fixture(scope="module")
def finished(work: Path, smollm2_hf: Path) -> Path:
    out = work / "finished"
    res = mf("run", "-p", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(work / "data.jsonl"),
             "--output", str(out), "--config", str(work / "job.json"), "--json", timeout=900)
    assert res.code == 0, res.stderr
    return out


def test_a_run_writes_metrics_jsonl_and_tensorboard_events_with_the_same_losses(finished: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == list(range(1, 11))
    assert all({"epoch", "learning_rate", "grad_norm"} <= set(r) for r in rows if "loss" in r)
    evals = {r["step"]: r["eval_loss"] for r in rows if "eval_loss" in r}
    assert sorted(evals) == [5, 10]
    events = EventAccumulator(str(finished / "logs"))
    events.Reload()
    tb_losses = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(tb_losses) == sorted(losses)
    assert all(abs(tb_losses[s] - losses[s]) < 1e-5 for s in losses), (tb_losses, losses)
    tb_evals = {e.step: e.value for e in events.Scalars("eval/loss")}
    assert all(abs(tb_evals[s] - evals[s]) < 1e-5 for s in evals)


def test_runs_lists_finished_failed_interrupted_and_running(work: Path, finished: Path, smollm2_hf: Path) -> None:
    common = ["-p", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(work / "data.jsonl"),
              "--config", str(work / "job.json")]
    failed = work / "failed"
    res = mf("run", *common, "--output", str(failed), "--memory", "150m", "--json", timeout=600)
    assert res.code != 0
    # a killed mf: its record is settled as interrupted by the next `mf runs`
    killed = work / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", *common, "--output", str(killed), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                            preexec_fn=sigint_as_at_a_terminal)
    until_step(proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    detached = work / "detached"
    res = mf("run", *common, "--output", str(detached), "--detach", "--json")
    assert res.code == 0, res.stderr
    job = json.loads(res.stdout.splitlines()[-1])["job"]
    try:
        rows = _runs()
        assert _by_output(rows, finished)["status"] == "finished"
        assert _by_output(rows, finished)["result"]["train_loss"] > 0
        assert _by_output(rows, failed)["status"] == "failed"
        assert "memory" in _by_output(rows, failed)["error"]
        assert _by_output(rows, killed)["status"] == "interrupted"
        assert _by_output(rows, detached)["status"] == "running"
        assert _by_output(rows, detached)["job"] == job
        starts = [r["started"] for r in rows]
        assert starts == sorted(starts, reverse=True)  # newest first
    finally:
        assert mf("jobs", "cancel", job).code == 0
    assert _by_output(_runs(), detached)["status"] == "interrupted"
    # what the table says, and a run's page: its curve has the 10 logged steps
    table = mf("runs")
    assert table.code == 0 and table.stdout.splitlines()[0].split()[:4] == ["ID", "KIND", "PROVIDER", "MODEL"]
    run_id = _by_output(_runs(), finished)["id"]
    show = mf("runs", "show", run_id[:5])
    assert show.code == 0, show.stderr
    assert "checkpoint-5, checkpoint-10" in show.stdout and "adapter/" in show.stdout
    chart = show.stdout.split("\n\n", 1)[1]
    grid = [line.split("|", 1)[1] for line in chart.splitlines() if "|" in line]
    columns = {i for line in grid for i, c in enumerate(line) if c in "*o"}
    assert len(columns) == 10, chart  # a mark at each of the 10 logged steps (eval's may cover loss's)
    assert chart.splitlines()[-1].split() == ["*", "loss", "o", "eval_loss"]
    same = mf("runs", "show", str(finished), "--json")
    assert json.loads(same.stdout)["id"] == run_id and len(json.loads(same.stdout)["metrics"]) >= 10


def test_two_mf_finishing_at_once_are_both_recorded(gguf_image: str, demo_model: Path) -> None:
    before = {r["id"] for r in _runs("--all")}
    procs = [subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "-p", "gguf", "validate", "--model",
                               str(demo_model), "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=os.environ.copy()) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    new = [r for r in _runs("--all") if r["id"] not in before]
    assert len(new) == 3 and {r["status"] for r in new} == {"finished"} and {r["kind"] for r in new} == {"validate"}
    assert all(r["id"] not in {x["id"] for x in _runs()} for r in new)  # validate is listed with --all only


def test_runs_json_shape_and_a_moved_output(work: Path, finished: Path) -> None:
    rows = _runs()
    row = _by_output(rows, finished)
    assert set(row) == {"id", "kind", "provider", "model", "dataset", "output", "backend", "job", "detached", "status",
                        "started", "ended", "host", "mf_pid", "config", "result", "error", "duration", "output_state"}
    assert row["kind"] == "train" and row["provider"] == "huggingface" and row["backend"] == "docker"
    assert row["output_state"] == "present" and row["duration"] > 0
    moved = work / "moved"
    finished.rename(moved)
    try:
        again = mf("runs")
        assert again.code == 0 and "moved or deleted" in again.stdout
        assert _by_output(_runs(), finished)["output_state"] == "moved or deleted"
        assert mf("runs", "show", row["id"]).code == 0
    finally:
        moved.rename(finished)


def test_runs_rm_forgets_and_deletes_after_asking(work: Path, demo_model: Path) -> None:
    out = work / "to-delete"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = mf("run", "-p", "gguf", "load", "--model", str(demo_model), "--prompt", "Hi", "--output", str(out))
    assert res.code == 0, res.stderr
    run_id = _by_output(_runs("--all"), out)["id"]
    declined = subprocess.run([sys.executable, "-m", "orchestrator", "runs", "rm", run_id, "--files"], input="n\n",
                              capture_output=True, text=True, env=os.environ.copy())
    assert declined.returncode != 0 and out.exists()
    assert mf("runs", "rm", run_id, "--files", "--yes").code == 0
    assert not out.exists()
    assert run_id not in {r["id"] for r in _runs("--all")}
    res = mf("runs", "show", run_id)
    assert res.code == 2 and res.stderr.startswith("Error: No run") and len(res.stderr.strip().splitlines()) == 1
    time.sleep(0)
