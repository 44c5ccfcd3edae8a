"""The pure parts of training across processes: torchrun's command line, which world a process is in,
torchrun's failure summary read back as one phrase, and a checkpoint of several ranks judged whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from providers.runtime.checkpoints import checkpoint_problem
from providers.runtime.distributed import requested, root_cause, torchrun_command, world

SUMMARY = """
============================================================
providers.runtime FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-30_15:50:15
  host      : b1076c89772f
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 15)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-30_15:50:14
  host      : b1076c89772f
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 16)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 16
============================================================
""".splitlines()


def test_the_root_cause_names_the_rank_that_failed_first() -> None:
    assert root_cause(SUMMARY) == ("rank 1 (local_rank: 1) on b1076c89772f exited with -9 "
                                   "(Signal 9 (SIGKILL) received by PID 16)")
    assert root_cause(["no summary here"]) is None


def test_one_node_is_standalone_on_loopback_and_several_meet_at_the_head() -> None:
    one = torchrun_command({"nproc_per_node": 2, "nnodes": 1}, "/job/spec.json")
    assert one[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in one
    assert one[one.index("--local-addr") + 1] == "127.0.0.1"
    assert one[one.index("--nproc-per-node") + 1] == "2" and one[one.index("--max-restarts") + 1] == "0"
    assert one[-3:] == ["-m", "providers.runtime", "/job/spec.json"]
    two = torchrun_command({"nproc_per_node": 4, "nnodes": 2, "node_rank": 1, "head": "node1", "port": 29411,
                            "job_id": "slurm-42", "local_addr": "10.0.0.2"}, "/job/spec.json")
    assert "--standalone" not in two
    assert two[two.index("--rdzv-endpoint") + 1] == "node1:29411"
    assert two[two.index("--rdzv-conf") + 1].startswith("is_host=false,")
    assert two[two.index("--local-addr") + 1] == "10.0.0.2" and two[two.index("--node-rank") + 1] == "1"


def test_a_world_of_one_unless_torchrun_set_one_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not world().distributed and world().is_main
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert world().describe() == {"world_size": 4, "ranks_per_node": 2, "nodes": 2}
    assert not world().is_main
    assert requested({"distributed": {"nproc_per_node": 1, "nnodes": 1}}) is None
    assert requested({"distributed": {"nproc_per_node": 2}}) == {"nproc_per_node": 2}


def test_a_checkpoint_missing_a_ranks_state_is_not_whole(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (folder / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    for rank in (0, 2):
        (folder / f"rng_state_{rank}.pth").write_bytes(b"")
    assert checkpoint_problem(folder) == "rng_state_1.pth is missing (ranks [0, 2] saved theirs)"
    (folder / "rng_state_1.pth").write_bytes(b"")
    assert checkpoint_problem(folder) is None


@pytest.mark.parametrize("args, message", [
    (["load", "--model", "m", "--nproc", "2"], "--nproc goes with the train action"),
    (["train", "--model", "m", "--nproc", "2", "--backend", "slurm"], "slurm runs one process per job for now"),
    (["train", "--model", "m", "--nproc", "0"], "0 is not in the range 1<=x<=256"),
])
def test_nproc_is_checked_when_the_line_is_parsed(args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, ["run", "-p", "huggingface", *args])
    assert res.exit_code == 2 and message in res.output, res.output
