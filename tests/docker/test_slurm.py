"""The Slurm backend on a real one-node Slurm cluster started here: the same jobs, events, errors and
outputs as on the docker backend, cancelled cleanly, detached and followed."""

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

from providers.contract import EXIT_CODES

from .conftest import mf, sigint_as_at_a_terminal, until_step
from .slurm_fixtures import slurm_cluster  # noqa: F401 - the fixture
from .test_huggingface_image import write_config, write_dataset

PROMPT = "The capital of France is"


@pytest.fixture
def slurm(slurm_cluster: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:  # noqa: F811
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster))
    monkeypatch.setenv("MF_SLURM_DIR", str(tmp_path / "slurm-jobs"))
    return slurm_cluster


def _squeue() -> str:
    return subprocess.run(["/usr/bin/squeue", "--noheader"], capture_output=True, text=True, check=True,
                          env=os.environ.copy()).stdout.strip()


def _slurm_containers(client: Any) -> list[Any]:
    return [c for c in client.containers.list(all=True) if c.name.startswith("mf-slurm-")]


def _scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["/usr/bin/scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True,
                         check=True, env=os.environ.copy()).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def test_validate_and_load_run_the_same_through_slurm(slurm: Path, gguf_image: str, demo_model: Path) -> None:
    local = mf("run", "-p", "gguf", "validate", "--model", str(demo_model), "--json")
    started = time.monotonic()
    remote = mf("run", "--backend", "slurm", "-p", "gguf", "validate", "--model", str(demo_model), "--json")
    slurm_s = time.monotonic() - started
    assert remote.code == 0, remote.stderr
    assert remote.last == local.last
    assert [e["event"] for e in remote.events] == [e["event"] for e in local.events]
    res = mf("run", "--backend", "slurm", "-p", "gguf", "load", "--model", str(demo_model), "--prompt", PROMPT,
             "--json")
    assert res.code == 0, res.stderr
    assert "Paris" in res.last["text"]
    print(f"gguf validate through Slurm: {slurm_s:.2f} s")


def test_a_failing_job_fails_the_same_way(slurm: Path, gguf_image: str, truncated_gguf: Path) -> None:
    local = mf("run", "-p", "gguf", "validate", "--model", str(truncated_gguf))
    remote = mf("run", "--backend", "slurm", "-p", "gguf", "validate", "--model", str(truncated_gguf))
    assert remote.code == local.code == EXIT_CODES["model_access"]
    errors = [[line for line in r.stderr.splitlines() if line.startswith("Error:")] for r in (local, remote)]
    assert errors[0] == errors[1] and len(errors[0]) == 1
    assert "Traceback" not in remote.stderr


def test_training_through_slurm_writes_the_same_outputs(slurm: Path, smollm2_hf: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data.jsonl")
    out = tmp_path / "run"
    res = mf("run", "--backend", "slurm", "-p", "huggingface", "train", "--model", str(smollm2_hf), "--dataset",
             str(data), "--output", str(out), "--config", str(write_config(tmp_path / "job.json")), "--json",
             timeout=900)
    assert res.code == 0, res.stderr
    assert res.last["steps"] == 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["global_step"] == 10
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    [script] = out.glob("slurm-*.sbatch")  # kept for the user to read
    text = script.read_text()
    assert "--read-only" in text and "--cap-drop=ALL" in text and "--network none" in text and "--init" in text
    if os.getuid() == 0:
        assert all(p.stat().st_uid == 0 for p in [out, *out.rglob("*")])


def test_ctrl_c_cancels_the_slurm_job_and_leaves_nothing(slurm: Path, smollm2_hf: Path, tmp_path: Path,
                                                         docker_client: Any) -> None:
    data = write_dataset(tmp_path / "data.jsonl", n=80)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--backend", "slurm", "-p", "huggingface", "train", "--model",
         str(smollm2_hf), "--dataset", str(data), "--output", str(out), "--config",
         str(write_config(tmp_path / "job.json", max_steps=200, save_steps=500)), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        preexec_fn=sigint_as_at_a_terminal)
    until_step(proc, 2)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=200)
    gone = time.monotonic() - started
    assert proc.returncode == EXIT_CODES["interrupted"], err
    assert "was cancelled and its container removed" in json.loads(rest.splitlines()[-1])["message"]
    assert _squeue() == ""
    assert _slurm_containers(docker_client) == []
    checkpoints = list((out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "the training job saved a checkpoint when it was cancelled"
    print(f"Ctrl-C to nothing left: {gone:.1f} s, {checkpoints[0].name} saved")


def test_gpus_reach_slurm_as_a_gres_and_detach_then_follow(slurm: Path, gguf_image: str, demo_model: Path,
                                                           docker_client: Any) -> None:
    res = mf("run", "--backend", "slurm", "--detach", "--gpus", "1", "-p", "gguf", "validate", "--model",
             str(demo_model), "--json")
    assert res.code == 0, res.stderr
    job = json.loads(res.stdout.splitlines()[-1])["job"]
    info = _scontrol(job.removeprefix("slurm-"))
    assert info.get("TresPerNode") == "gres:gpu:1"
    mf("jobs", "cancel", job)  # this engine has no NVIDIA runtime: the container could not get the GPU

    res = mf("run", "--backend", "slurm", "--detach", "-p", "gguf", "validate", "--model", str(demo_model))
    assert res.code == 0, res.stderr
    job = res.stdout.split()[0]
    assert job.startswith("slurm-") and "mf jobs logs" in res.stdout
    listed = mf("jobs", "list", "--json")
    assert job in [row["id"] for row in json.loads(listed.stdout)]
    followed = mf("jobs", "logs", job, "--follow", "--json", timeout=300)
    assert followed.code == 0, followed.stderr
    assert followed.last["event"] == "result" and followed.last["parameters"] == 134_515_008
    # the run history settles a detached Slurm job from the scheduler's record of it
    runs = json.loads(mf("runs", "--all", "--json").stdout)
    [record] = [r for r in runs if r["job"] == job]
    assert record["backend"] == "slurm" and record["kind"] == "validate" and record["detached"]
    deadline = time.monotonic() + 30
    while record["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        record = next(r for r in json.loads(mf("runs", "--all", "--json").stdout) if r["job"] == job)
    assert record["status"] == "finished", record
    deadline = time.monotonic() + 30
    while _slurm_containers(docker_client) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _slurm_containers(docker_client) == []


def test_paths_outside_the_shared_roots_are_refused(slurm: Path, gguf_image: str, demo_model: Path,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_SHARED_ROOTS", str(tmp_path))
    res = mf("run", "--backend", "slurm", "-p", "gguf", "validate", "--model", str(demo_model))
    assert res.code == EXIT_CODES["configuration"]
    assert f"{demo_model.resolve()} is not under a shared root ({tmp_path})" in res.stderr
    assert _squeue() == ""


def test_a_job_that_calls_out_gets_its_egress_proxy_on_the_node(slurm: Path, gguf_image: str) -> None:
    """--online through Slurm: the batch script starts the proxy beside the job's container on the node; the job
    asks it for huggingface.co:443 (no hub is reachable here, so the attempt fails: the path is the point)."""
    res = mf("run", "--backend", "slurm", "-p", "gguf", "validate", "--model",
             "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:x.gguf", "--online", "--json", timeout=300)
    assert res.code != 0
    logs = [e["message"] for e in res.events if e["event"] == "log"]
    assert any(" CONNECT huggingface.co:443" in m and m.startswith("egress ") for m in logs), (logs, res.stderr)
    script = next((Path(os.environ["MF_SLURM_DIR"])).rglob("job.sbatch")).read_text()
    assert '--pid "container:$name"' in script and "--network none" in script
