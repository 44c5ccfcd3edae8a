"""The output folder's lock and the hand-back records, with real processes and real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import runstate
from providers.errors import ConfigurationError

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from orchestrator.runstate import OutputLock
    lock = OutputLock(Path(sys.argv[1])).acquire({"provider": "huggingface", "action": "train"})
    lock.update(job="job-container-1")
    print("locked", flush=True)
    time.sleep(600)
""")


def _holder(folder: Path) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_held_folder_is_refused_naming_its_holder(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        with pytest.raises(ConfigurationError) as info:
            runstate.OutputLock(tmp_path).acquire({"provider": "gguf", "action": "load"})
        assert info.value.message.startswith(f"{tmp_path} is in use by another run (huggingface train in container "
                                             f"job-container-1, mf pid {holder.pid} on ")
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = runstate.OutputLock(tmp_path).acquire({"provider": "gguf", "action": "load"})
    try:
        assert lock.recovered is not None and lock.recovered["pid"] == holder.pid
        assert json.loads((tmp_path / runstate.LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (tmp_path / runstate.LOCK_NAME).exists()


def test_a_released_lock_can_be_taken_again_at_once(tmp_path: Path) -> None:
    first = runstate.OutputLock(tmp_path).acquire({"provider": "gguf", "action": "load"})
    first.release()
    second = runstate.OutputLock(tmp_path).acquire({"provider": "gguf", "action": "load"})
    assert second.recovered is None
    second.release()


@pytest.mark.skipif(os.getuid() != 0, reason="handing files to another user needs root")
def test_the_folder_of_a_killed_mf_is_handed_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "state.json").write_text("{}")
    runstate.hand_back(out, 1000, 1000)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    records = tmp_path / "cache" / "modelforge" / "runs"
    records.mkdir(parents=True)
    (records / "x.json").write_text(json.dumps({"folder": str(out), "uid": 0, "gid": 0, "pid": dead.pid,
                                                "host": os.uname().nodename}))
    assert runstate.recover_abandoned_outputs() == [str(out)]
    assert all(p.stat().st_uid == 0 for p in [out, *out.rglob("*")])
    assert list(records.iterdir()) == []


def test_a_detached_jobs_record_holds_the_folder_while_its_backend_says_it_runs(tmp_path: Path) -> None:
    first = runstate.OutputLock(tmp_path).acquire({"provider": "gguf", "action": "load", "backend": "docker"})
    first.keep(job="docker-mf-gguf-load-1a2b3c4d", detached=True)  # mf returns; the job goes on
    asked: list[str] = []

    def running(record: dict) -> bool:
        asked.append(record["job"])
        return True

    with pytest.raises(ConfigurationError) as info:
        runstate.OutputLock(tmp_path).acquire({"provider": "gguf", "action": "load"}, still_running=running)
    assert asked == ["docker-mf-gguf-load-1a2b3c4d"]
    assert info.value.message.startswith(f"{tmp_path} is in use by the detached job docker-mf-gguf-load-1a2b3c4d "
                                         "(gguf load in container mf-gguf-load-1a2b3c4d, mf pid ")
    assert "mf jobs cancel docker-mf-gguf-load-1a2b3c4d" in info.value.hint
    # once the job has ended, the folder is free, and that is no abandoned run to report
    second = runstate.OutputLock(tmp_path).acquire({"provider": "gguf", "action": "load"}, still_running=lambda r: False)
    assert second.recovered is None
    second.release()
    assert not (tmp_path / runstate.LOCK_NAME).exists()


@pytest.mark.skipif(os.getuid() != 0, reason="handing files to another user needs root")
def test_a_detached_jobs_folder_is_handed_back_only_once_it_has_ended(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()
    runstate.hand_back(out, 1000, 1000)
    with runstate.handback_record(out, 0, 0) as record:
        record.keep(job="slurm-42")
    returned = subprocess.Popen([sys.executable, "-c", "pass"])  # its mf has returned
    returned.wait()
    record.data["pid"] = returned.pid
    record.path.write_text(json.dumps(record.data))
    assert runstate.recover_abandoned_outputs(still_running=lambda r: r["job"] == "slurm-42") == []
    assert out.stat().st_uid == 1000 and record.path.exists()
    assert runstate.recover_abandoned_outputs(still_running=lambda r: False) == [str(out)]
    assert out.stat().st_uid == 0 and not record.path.exists()
