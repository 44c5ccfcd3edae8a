"""Detached jobs on the docker backend (`mf run --detach`), as on the cluster backends: the job goes on
after `mf` returns, `mf jobs list|logs|cancel` see it, and its output folder stays locked while it runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.backends.docker import jobs_root
from providers.contract import EXIT_CODES

from .conftest import job_containers, mf


def _detach(*args: str) -> str:
    started = time.monotonic()
    res = mf("run", "--detach", "--json", *args)
    assert res.code == 0, res.stderr
    outcome = json.loads(res.stdout.strip().splitlines()[-1])
    assert outcome["backend"] == "docker" and outcome["detached"] is True, outcome
    assert outcome["job"].startswith("docker-mf-gguf-"), outcome
    print(f"mf run --detach returned in {time.monotonic() - started:.2f} s")
    return str(outcome["job"])


def test_a_detached_job_is_listed_followed_to_its_result_and_removed(gguf_image: str, demo_model: Path,
                                                                      tmp_path: Path, docker_client: Any) -> None:
    out = tmp_path / "out"
    job = _detach("--provider", "gguf", "load", "--model", str(demo_model), "--prompt", "The capital of France is",
                  "--output", str(out))
    name = job.removeprefix("docker-")
    [container] = job_containers(docker_client)
    assert container.name == name
    assert "org.modelforge.owner-pid" not in container.labels  # no mf owns it: the orphan reaper leaves it
    assert (jobs_root() / name / "spec.json").is_file()

    rows = json.loads(mf("jobs", "list", "--json").stdout)
    [row] = [r for r in rows if r["id"] == job]
    assert row["backend"] == "docker" and row["provider"] == "gguf" and row["action"] == "load"
    assert row["state"] in ("RUNNING", "COMPLETED"), row

    followed = mf("jobs", "logs", job, "--follow", "--json")
    assert followed.code == 0, followed.stderr
    result = followed.last
    assert result["event"] == "result" and "Paris" in result["text"], result
    assert json.loads((out / "result.json").read_text())["text"] == result["text"]
    again = mf("jobs", "logs", job, "--json")  # a finished job's events stay readable until it is removed
    assert again.code == 0 and again.last == result
    assert [r["state"] for r in json.loads(mf("jobs", "list", "--json").stdout) if r["id"] == job] == ["COMPLETED"]

    cancelled = mf("jobs", "cancel", job)
    assert cancelled.code == 0 and f"{job} cancelled" in cancelled.stdout, cancelled.stderr
    assert job_containers(docker_client) == []
    assert not (jobs_root() / name).exists()
    gone = mf("jobs", "logs", job)
    assert gone.code == EXIT_CODES["configuration"] and gone.stderr.strip().startswith(f"Error: No record of {job}")


def test_the_output_folder_stays_locked_while_a_detached_job_runs(gguf_image: str, demo_model: Path,
                                                                  tmp_path: Path, docker_client: Any) -> None:
    out = tmp_path / "out"
    story = ("--provider", "gguf", "load", "--model", str(demo_model), "--prompt", "Once upon a time",
             "--max-new-tokens", "4000", "--temperature", "0", "--output", str(out))
    job = _detach(*story)
    second = mf("run", "--json", *story)
    assert second.code == EXIT_CODES["configuration"], second.stderr
    [error] = [e for e in second.events if e["event"] == "error"]
    assert error["message"].startswith(f"{out} is in use by the detached job {job} (gguf load in container "), error
    assert f"mf jobs cancel {job}" in error["hint"]
    assert [c.name for c in job_containers(docker_client)] == [job.removeprefix("docker-")]  # the second never started

    started = time.monotonic()
    assert mf("jobs", "cancel", job).code == 0
    print(f"mf jobs cancel took {time.monotonic() - started:.2f} s")
    assert job_containers(docker_client) == []
    third = mf("run", "--json", "--provider", "gguf", "load", "--model", str(demo_model), "--prompt", "Hi",
               "--max-new-tokens", "4", "--output", str(out))
    assert third.code == 0, third.stderr
    assert not [e for e in third.events if e["event"] == "log" and "took over" in e.get("message", "")]
    assert not (out / ".mf-run.lock").exists()
    if os.getuid() == 0:  # the job user's files went back to root once the detached job had ended
        assert {p.stat().st_uid for p in [out, *out.rglob("*")]} == {0}
