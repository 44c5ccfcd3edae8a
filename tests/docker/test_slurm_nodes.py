"""Training on two Slurm nodes (`mf run --backend slurm ... train --nodes 2`): a real cluster of two slurmd
daemons on this host, one container per node on the host's network, torchrun's c10d rendezvous between
them, gloo on the CPU. The proof that the nodes train one model: the adapter is the one a single rank
trains with 2 accumulation steps (see test_distributed.py), which two nodes training alone could not give."""

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
from .slurm_fixtures import two_node_slurm_cluster  # noqa: F401 - the fixture
from .test_distributed import _config, _train, assert_trained_alike, one_rank_accumulating  # noqa: F401
from .test_huggingface_image import write_dataset


@pytest.fixture
def slurm2(two_node_slurm_cluster: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:  # noqa: F811
    monkeypatch.setenv("SLURM_CONF", str(two_node_slurm_cluster))
    monkeypatch.setenv("MF_SLURM_DIR", str(tmp_path / "slurm-jobs"))
    return two_node_slurm_cluster


def _leftovers(client: Any) -> tuple[str, list[str]]:
    queue = subprocess.run(["/usr/bin/squeue", "--noheader"], capture_output=True, text=True, check=True,
                           env=os.environ.copy()).stdout.strip()
    return queue, [c.name for c in client.containers.list(all=True) if c.name.startswith("mf-slurm-")]


def test_two_nodes_train_the_same_adapter_as_one_rank_accumulating(slurm2: Path, smollm2_hf: Path, tmp_path: Path,
                                                                    docker_client: Any, hf_image: str,
                                                                    one_rank_accumulating: Any) -> None:  # noqa: F811
    one, one_out, data = one_rank_accumulating
    started = time.monotonic()
    nodes = _train(smollm2_hf, data, tmp_path / "nodes", _config(tmp_path / "nodes.json"), "--backend", "slurm",
                   "--nodes", "2")
    took = time.monotonic() - started
    assert (nodes.last["world_size"], nodes.last["ranks_per_node"], nodes.last["nodes"]) == (2, 1, 2)
    stages = {e["name"]: e["message"] for e in nodes.events if e["event"] == "stage"}
    assert stages["distributed"].startswith("2 ranks (1 per node, 2 nodes), gloo"), stages
    manifest = json.loads((tmp_path / "nodes" / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "ranks_per_node": 1, "nodes": 2}
    losses, check = assert_trained_alike(nodes, one, tmp_path / "nodes", one_out, hf_image, docker_client)
    [script] = (tmp_path / "nodes").glob("slurm-*.sbatch")
    text = script.read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=1" in text and "--kill-on-bad-exit=1" in text
    assert _leftovers(docker_client) == ("", [])
    print(f"2 Slurm nodes: {took:.1f} s; losses {losses[0]} vs one rank {losses[1]}; "
          f"adapter diff {check['diff']:.2e} of {check['scale']:.2e}")


def test_a_node_that_never_starts_fails_the_rendezvous_naming_it(slurm2: Path, smollm2_hf: Path, tmp_path: Path,
                                                                  docker_client: Any, hf_image: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Node mf2's `docker run` hangs (an image pull that never ends): the first node's rendezvous gives up
    after MF_RDZV_TIMEOUT, the job fails in one line naming mf2, and nothing is left running."""
    docker = subprocess.run(["sh", "-c", "command -v docker"], capture_output=True, text=True,
                            check=True).stdout.strip()
    wrapper = tmp_path / "docker"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = run ] && [ "${{SLURM_NODEID:-0}}" = 1 ]; then exec sleep 600; fi\n'
                       f'exec {docker} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("MF_DOCKER", str(wrapper))
    monkeypatch.setenv("MF_RDZV_TIMEOUT", "20")
    data = write_dataset(tmp_path / "data.jsonl", n=16)
    started = time.monotonic()
    res = mf("run", "--backend", "slurm", "-p", "huggingface", "train", "--model", str(smollm2_hf), "--dataset",
             str(data), "--output", str(tmp_path / "run"), "--config", str(_config(tmp_path / "job.json")),
             "--nodes", "2", "--json", timeout=300)
    took = time.monotonic() - started
    assert res.code == EXIT_CODES["container"], res.stderr
    error = res.events[-1]
    assert error["event"] == "error", res.events
    assert "the rendezvous at 127.0.0.1:" in error["message"], error
    assert "timed out after 20 s: node mf2 never started its container" in error["message"], error
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "adapter").exists()
    deadline = time.monotonic() + 60  # srun ends the hung node's task once the first node's has failed
    while _leftovers(docker_client) != ("", []) and time.monotonic() < deadline:
        time.sleep(1)
    assert _leftovers(docker_client) == ("", [])
    print(f"a node that never started: the job failed in {took:.1f} s (rendezvous timeout 20 s)")


def test_ctrl_c_stops_every_nodes_container_with_one_checkpoint(slurm2: Path, smollm2_hf: Path, tmp_path: Path,
                                                                 docker_client: Any) -> None:
    """Ctrl-C on mf: scancel reaches each node's script, each stops its container with the job's grace, the
    ranks on both nodes agree on a step and save one checkpoint holding both ranks' state; nothing is left."""
    data = write_dataset(tmp_path / "data.jsonl", n=64)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--backend", "slurm", "-p", "huggingface", "train", "--model",
         str(smollm2_hf), "--dataset", str(data), "--output", str(out), "--config",
         str(_config(tmp_path / "job.json", max_steps=200)), "--nodes", "2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        preexec_fn=sigint_as_at_a_terminal)
    until_step(proc, 2)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_CODES["interrupted"], err
    assert "was cancelled and its container removed" in json.loads(rest.splitlines()[-1])["message"]
    assert _leftovers(docker_client) == ("", [])
    [checkpoint] = (out / "checkpoints").glob("checkpoint-*")
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert not (out / "adapter").exists()
