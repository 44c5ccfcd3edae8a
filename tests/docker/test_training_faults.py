"""Training runs that survive contention and faults, on the real SmolLM2 checkpoint in the real image:
one run per output folder, a killed `mf` whose job stops itself and whose lock is recovered, resume past
a damaged checkpoint, and a full disk refused up front or survived mid-save."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from providers.contract import EXIT_CODES

from .conftest import JOB_LABEL, SESSION_LABEL, job_containers, mf, until_step
from .test_huggingface_image import write_config, write_dataset

GRACE_TRAIN_S = 120


def _train_args(model: Path, data: Path, out: Path, config: Path) -> list[str]:
    return ["run", "--provider", "huggingface", "train", "--model", str(model), "--dataset", str(data),
            "--output", str(out), "--config", str(config), "--json"]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checkpoints(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))


def test_a_second_run_into_the_same_folder_is_refused(smollm2_hf: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data.jsonl")
    out = tmp_path / "run"
    first = _start(_train_args(smollm2_hf, data, out, write_config(tmp_path / "a.json", max_steps=12, save_steps=6)))
    until_step(first, 1)
    started = time.monotonic()
    second = mf(*_train_args(smollm2_hf, data, out, write_config(tmp_path / "b.json", max_steps=3, lora_r=2)))
    refused_in = time.monotonic() - started
    assert second.code == EXIT_CODES["configuration"], second.stderr
    [line] = [e for e in second.events if e["event"] == "error"]
    assert f"{out} is in use by another run (huggingface train in container " in line["message"]
    assert f", mf pid {first.pid} on " in line["message"]
    assert "pick another --output folder" in line["hint"]
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["max_steps"] == 12 and manifest["config"]["lora_r"] == 4  # the first run's
    assert manifest["adapter_files"]["adapter_model.safetensors"] == _sha256(out / "adapter" / "adapter_model.safetensors")
    assert _checkpoints(out) == [6, 12]
    assert not (out / ".mf-run.lock").exists()
    print(f"second run refused in {refused_in:.2f} s")


def test_a_killed_mf_stops_its_job_and_the_next_run_recovers(smollm2_hf: Path, tmp_path: Path,
                                                             docker_client: Any) -> None:
    data = write_dataset(tmp_path / "data.jsonl", n=80)
    out = tmp_path / "run"
    args = _train_args(smollm2_hf, data, out, write_config(tmp_path / "job.json", max_steps=40, save_steps=50))
    proc = _start(args)
    until_step(proc, 3)
    [container] = job_containers(docker_client)
    killed_at = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the job sees its input close, saves a checkpoint and exits by itself, well within its grace period
    container.wait(timeout=GRACE_TRAIN_S)
    stopped_in = time.monotonic() - killed_at
    container.reload()
    assert container.attrs["State"]["ExitCode"] == EXIT_CODES["interrupted"]
    saved = _checkpoints(out)
    assert saved and 3 <= saved[-1] < 40, saved
    assert (out / ".mf-run.lock").exists()  # left by the killed mf; the kernel released its flock
    if os.getuid() == 0:
        assert (out / "checkpoints").stat().st_uid == 1000  # still the job user's until an mf hands it back

    res = mf(*args, "--resume", timeout=900)
    assert res.code == 0, res.stderr
    warnings = [e["message"] for e in res.events if e["event"] == "log" and e["level"] == "warning"]
    assert any("removed the orphaned job container" in w for w in warnings), warnings
    assert any(f"from a run that ended without releasing it (mf pid {proc.pid} on " in w for w in warnings), warnings
    if os.getuid() == 0:
        assert any(f"handed {out} back to its owner" in w for w in warnings), warnings
        assert all(p.stat().st_uid == 0 for p in [out, *out.rglob("*")])
    assert res.last["resumed_from"] == f"checkpoint-{saved[-1]}" and res.last["steps"] == 40
    assert job_containers(docker_client) == []
    print(f"killed mf: the job stopped itself {stopped_in:.1f} s later with checkpoint-{saved[-1]}")


def test_resume_skips_a_truncated_newest_checkpoint(smollm2_hf: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data.jsonl")
    out = tmp_path / "run"
    res = mf(*_train_args(smollm2_hf, data, out, write_config(tmp_path / "a.json", max_steps=6, save_steps=2)),
             timeout=900)
    assert res.code == 0, res.stderr
    assert _checkpoints(out) == [2, 4, 6]
    # as a crash or a full disk during the last save leaves it: no adapter, no manifest, a cut-off file
    (out / "manifest.json").unlink()
    for f in (out / "adapter").iterdir():
        f.unlink()
    (out / "adapter").rmdir()
    weights = out / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors"
    with weights.open("r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)

    res = mf(*_train_args(smollm2_hf, data, out, write_config(tmp_path / "b.json", max_steps=8, save_steps=2)),
             "--resume", timeout=900)
    assert res.code == 0, res.stderr
    stage = next(e for e in res.events if e["event"] == "stage" and e["name"] == "train")
    assert stage["message"].startswith("resuming from checkpoint-4 (skipped checkpoint-6: adapter_model.safetensors "
                                       "is truncated")
    assert res.last["resumed_from"] == "checkpoint-4" and res.last["steps"] == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_from"] == "checkpoint-4"
    assert manifest["skipped_checkpoints"][0].startswith("checkpoint-6: adapter_model.safetensors is truncated")


def test_a_full_output_filesystem_is_refused_before_any_container(smollm2_hf: Path, tmp_path: Path, small_fs: Any,
                                                                   docker_client: Any) -> None:
    fs = small_fs("2m")
    data = write_dataset(tmp_path / "data.jsonl")
    since = time.time() - 1
    res = mf(*_train_args(smollm2_hf, data, fs / "run", write_config(tmp_path / "job.json")))
    until = time.time() + 1
    assert res.code == EXIT_CODES["configuration"], res.stderr
    [error] = [e for e in res.events if e["event"] == "error"]
    assert error["message"].startswith(f"Not enough space for the run in {fs / 'run'}: it needs about ")
    assert "checkpoint(s) of" in error["message"] and "MB are free" in error["message"]
    assert not (fs / "run").exists()
    created = list(docker_client.events(since=since, until=until, decode=True,
                                        filters={"label": [JOB_LABEL, SESSION_LABEL], "event": "create"}))
    assert created == []


def test_a_disk_that_fills_mid_run_leaves_a_resumable_folder(smollm2_hf: Path, tmp_path: Path,
                                                             small_fs: Any) -> None:
    fs = small_fs("400m")
    data = write_dataset(tmp_path / "data.jsonl", n=80)
    out = fs / "run"
    args = _train_args(smollm2_hf, data, out, write_config(tmp_path / "job.json", max_steps=40, save_steps=4))
    proc = _start(args)
    until_step(proc, 5)  # checkpoint-4 is whole by now
    filler = fs / "filler"
    with filler.open("wb") as fh:  # another process fills the disk
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
        except OSError:
            pass
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "No space left" in stdout + stderr
    assert not (out / "manifest.json").exists() and not (out / "adapter").exists()
    whole = _checkpoints(out)
    assert whole and whole[0] == 4  # every checkpoint under its final name is whole; a cut-off save is not there
    filler.unlink()

    res = mf(*args, "--resume", timeout=900)
    assert res.code == 0, res.stderr
    assert res.last["resumed_from"] == f"checkpoint-{whole[-1]}" and res.last["steps"] == 40
