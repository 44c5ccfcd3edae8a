"""Training across processes in one container (`mf run ... train --nproc N`): torchrun with gloo on the
CPU, the real SmolLM2 checkpoint, the real huggingface image. The proof that gradients are synchronised:
2 ranks with batch b train the same adapter as 1 rank with batch b and 2 accumulation steps (the same
samples per optimizer step), which ranks training alone could not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from providers.contract import EXIT_CODES

from .conftest import job_containers, mf, until_step
from .test_huggingface_image import write_dataset

_COMPARE = """
import json
from safetensors.numpy import load_file
a = load_file("/a/adapter/adapter_model.safetensors")
b = load_file("/b/adapter/adapter_model.safetensors")
assert a.keys() == b.keys()
lora_b = [k for k in a if "lora_B" in k]
scale = max(float(abs(b[k]).max()) for k in lora_b)
diff = max(float(abs(a[k] - b[k]).max()) for k in a)
print(json.dumps({"scale": scale, "diff": diff, "tensors": len(a)}))
"""


def _train(model: Path, data: Path, out: Path, config: Path, *flags: str) -> Any:
    res = mf("run", "--provider", "huggingface", "train", "--model", str(model), "--dataset", str(data),
             "--output", str(out), "--config", str(config), *flags, "--json", timeout=900)
    assert res.code == 0, res.stderr
    return res


def _config(path: Path, **train: Any) -> Path:
    base = {"max_steps": 4, "batch_size": 2, "save_steps": 1000, "logging_steps": 1, "max_seq_length": 64,
            "learning_rate": 1e-3, "lora_r": 4, "seed": 0, "lora_dropout": 0.0}  # dropout masks differ by rank
    path.write_text(json.dumps({"train": {**base, **train}}))
    return path


@pytest.fixture(scope="session")
def one_rank_accumulating(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory,
                          hf_image: str) -> tuple[Any, Path, Path]:
    """The reference every data-parallel run is compared with: one rank, 2 accumulation steps, on the
    dataset the comparisons use (its result, its output folder, the dataset)."""
    work = tmp_path_factory.mktemp("one-rank")
    data = write_dataset(work / "data.jsonl", n=16)
    one = _train(smollm2_hf, data, work / "one", _config(work / "one.json", gradient_accumulation=2))
    return one, work / "one", data


def test_two_ranks_train_the_same_adapter_as_one_rank_accumulating(smollm2_hf: Path, tmp_path: Path,
                                                                    docker_client: Any, hf_image: str,
                                                                    one_rank_accumulating: Any) -> None:
    one, one_out, data = one_rank_accumulating
    ddp = _train(smollm2_hf, data, tmp_path / "ddp", _config(tmp_path / "ddp.json"), "--nproc", "2")
    assert (ddp.last["world_size"], ddp.last["ranks_per_node"], ddp.last["nodes"]) == (2, 2, 1)
    assert one.last["world_size"] == 1
    stages = {e["name"]: e["message"] for e in ddp.events if e["event"] == "stage"}
    assert stages["distributed"].startswith("2 ranks (2 per node, 1 node), gloo")
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "ranks_per_node": 2, "nodes": 1}
    losses, check = assert_trained_alike(ddp, one, tmp_path / "ddp", one_out, hf_image, docker_client)
    print(f"losses ddp {losses[0]} one {losses[1]}; adapter diff {check['diff']:.2e} of {check['scale']:.2e}")


def assert_trained_alike(a: Any, b: Any, out_a: Path, out_b: Path, hf_image: str,
                         docker_client: Any) -> tuple[list[list[float]], dict[str, float]]:
    """Two runs' loss curves (4 steps) within 5% step by step, and their adapters within 5% of the update's
    scale: ranks that did not sync would each have taken 4 steps on half the samples, a difference of the
    order of the update itself."""
    losses = [[e["value"] for e in res.events if e["event"] == "metric" and e["name"] == "loss"] for res in (a, b)]
    assert len(losses[0]) == len(losses[1]) == 4, losses
    for x, y in zip(*losses, strict=True):
        assert abs(x - y) <= 0.05 * max(abs(y), 1e-3), losses
    out = docker_client.containers.run(
        hf_image, entrypoint=["python", "-c", _COMPARE], network_mode="none", remove=True,
        environment={"HOME": "/tmp"}, user=f"{os.getuid()}:{os.getgid()}",
        volumes={str(out_a): {"bind": "/a", "mode": "ro"}, str(out_b): {"bind": "/b", "mode": "ro"}})
    check = json.loads(out.decode().strip().splitlines()[-1])
    assert check["diff"] <= 0.05 * check["scale"], check
    return losses, check


def test_a_killed_rank_ends_the_job_with_its_name(smollm2_hf: Path, tmp_path: Path, docker_client: Any) -> None:
    """kill -9 of rank 1's process: torchrun stops rank 0, the job ends with one line naming rank 1, no
    container is left, and the output folder holds no half-made adapter."""
    data = write_dataset(tmp_path / "data.jsonl", n=64)
    out = tmp_path / "run"
    args = ["run", "--provider", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(data),
            "--output", str(out), "--config", str(_config(tmp_path / "job.json", max_steps=200)), "--nproc", "2",
            "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    until_step(proc, 2)
    [container] = job_containers(docker_client)
    pid = container.exec_run(["cat", "/tmp/mf-rank-1.pid"]).output.decode().strip()
    killed_at = time.monotonic()
    assert container.exec_run(["python", "-c", f"import os; os.kill({int(pid)}, 9)"]).exit_code == 0
    rest, err = proc.communicate(timeout=120)
    ended_in = time.monotonic() - killed_at
    assert proc.returncode == EXIT_CODES["container"], err
    [error] = [json.loads(line) for line in rest.splitlines() if '"error"' in line]
    assert error["message"].startswith("huggingface train: rank 1 (local_rank: 1)"), error
    assert "exited with -9" in error["message"] and "Signal 9 (SIGKILL)" in error["message"]
    assert "OOM killer" in error["hint"]
    assert ended_in < 60, ended_in
    assert not (out / "adapter").exists() and not (out / "manifest.json").exists()
    print(f"the job ended {ended_in:.1f} s after rank 1 was killed")


def test_a_stopped_two_rank_run_saves_every_rank_and_resumes(smollm2_hf: Path, tmp_path: Path,
                                                              docker_client: Any) -> None:
    """SIGTERM (docker stop; Ctrl-C's clean-up): the ranks agree on a step, save one checkpoint with both
    ranks' RNG states, and exit as interrupted; --resume on 2 ranks finishes it, and on 1 rank says the
    data order changes."""
    data = write_dataset(tmp_path / "data.jsonl", n=64)
    out = tmp_path / "run"
    args = ["run", "--provider", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(data),
            "--output", str(out), "--config", str(_config(tmp_path / "job.json", max_steps=10)), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args, "--nproc", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    until_step(proc, 2)
    [container] = job_containers(docker_client)
    container.kill(signal="SIGTERM")
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_CODES["interrupted"], err
    [error] = [json.loads(line) for line in rest.splitlines() if '"error"' in line]
    assert error["kind"] == "interrupted" and "is saved" in error["message"]
    [saved] = list((out / "checkpoints").glob("checkpoint-*"))
    assert sorted(p.name for p in saved.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]

    shutil.copytree(out, tmp_path / "copy")  # the same stopped run, to resume on one rank below

    res = mf(*args, "--resume", "--nproc", "2", timeout=900)
    assert res.code == 0, res.stderr
    assert res.last["resumed_from"] == saved.name and res.last["steps"] == 10 and res.last["world_size"] == 2

    args[args.index(str(out))] = str(tmp_path / "copy")
    res = mf(*args, "--resume", timeout=900)  # another world size: allowed, and said
    assert res.code == 0, res.stderr
    assert res.last["resumed_from"] == saved.name and res.last["world_size"] == 1
    warnings = [e["message"] for e in res.events if e["event"] == "log" and e["level"] == "warning"]
    assert f"{saved.name} was written by 2 rank(s) and resumes on 1" in " ".join(warnings)
