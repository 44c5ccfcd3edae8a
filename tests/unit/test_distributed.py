"""The pure parts of training across processes: torchrun's command line, which world a process is in,
torchrun's failure summary read back as one phrase, and a checkpoint of several ranks judged whole."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.backends.slurm import SlurmOptions, write_script
from orchestrator.cli import cli
from orchestrator.plan import JobPlan
from providers.errors import ConfigurationError
from providers.runtime.checkpoints import checkpoint_problem
from providers.runtime.distributed import rendezvous_failure, requested, root_cause, torchrun_command, world

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
    (["load", "--model", "m", "--nproc", "2"], "--nproc and --nodes go with the train action"),
    (["train", "--model", "m", "--nodes", "2"], "--nodes needs a cluster (--backend slurm or kubernetes)"),
    (["validate", "--model", "m", "--nodes", "2", "--backend", "slurm"], "--nproc and --nodes go with the train action"),
    (["train", "--model", "m", "--nproc", "0"], "0 is not in the range 1<=x<=256"),
])
def test_nproc_is_checked_when_the_line_is_parsed(args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, ["run", "-p", "huggingface", *args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_each_node_learns_its_rank_and_the_rendezvous_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"distributed": {"nproc_per_node": 1, "nnodes": 2, "rendezvous_timeout": 20}}
    with pytest.raises(ConfigurationError, match="was not told its node rank"):
        requested(spec)
    for name, value in {"MF_NODE_RANK": "1", "MF_RDZV_HEAD": "10.0.0.1", "MF_RDZV_PORT": "20042",
                        "MF_LOCAL_ADDR": "10.0.0.2", "MF_NODES": "gpu1,gpu2", "MF_RDZV_ID": "42"}.items():
        monkeypatch.setenv(name, value)
    dist = requested(spec)
    assert dist is not None and dist["node_rank"] == "1" and dist["nodes"] == "gpu1,gpu2"
    cmd = torchrun_command(dist, "/job/spec.json")
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "10.0.0.1:20042" and cmd[cmd.index("--rdzv-id") + 1] == "42"
    assert cmd[cmd.index("--rdzv-conf") + 1] == "is_host=false,join_timeout=20"


def test_a_rendezvous_that_times_out_names_the_nodes_that_never_started(tmp_path: Path) -> None:
    dist = {"nnodes": 3, "node_rank": "0", "head": "10.0.0.1", "port": "20042", "nodes": "n1,n2,n3",
            "rendezvous_timeout": 20}
    (tmp_path / "n1").touch()
    assert rendezvous_failure(dist, str(tmp_path)) == ("the rendezvous at 10.0.0.1:20042 timed out after 20 s: "
                                                       "nodes n2, n3 never started their container")
    (tmp_path / "n3").touch()
    assert rendezvous_failure(dist, str(tmp_path)).endswith("node n2 never started its container")
    (tmp_path / "n2").touch()  # every container started: one of them could not reach the head
    assert rendezvous_failure(dist, str(tmp_path)).endswith("not all 3 nodes joined (this is node 0)")


def test_the_multi_node_batch_script_is_valid_bash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What sbatch runs: one srun task per node, each node's container on the host's network and told its
    rank; `bash -n` checks both scripts' syntax."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("MF_SLURM_BIN", str(bin_dir))
    spec = json.dumps({"options": {"distributed": {"nproc_per_node": 2, "nnodes": 2}}})
    plan = JobPlan(image="modelforge/huggingface:cpu-abc", command=["/job/spec.json"], spec_json=spec, mounts=[],
                   environment={}, user="1000:1000", network="host")
    script = write_script(plan, tmp_path, SlurmOptions())
    text, node = script.read_text(), (tmp_path / "node.sh").read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=1" in text
    assert f"{bin_dir}/srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1" in text
    assert "--network host" in node and '--env MF_NODE_RANK="$SLURM_NODEID"' in node
    assert node.index("MF_RDZV_ID") < node.index("modelforge/huggingface:cpu-abc")
    for path in (script, tmp_path / "node.sh"):
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True, check=False).returncode == 0
