"""The unsloth image (CUDA only): it builds, its environment is the lock, validate works without a
GPU, and load is refused without one, by `mf` and inside the container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator import engine, images, recipes
from providers.contract import EXIT_CODES, JobSpec

from .conftest import mf


def test_the_environment_is_exactly_the_lock(unsloth_image: str, docker_client: Any) -> None:
    # pip is not in the image (nothing installs at run time): check every requirement with packaging
    code = (
        "import json, importlib.metadata as md\n"
        "from packaging.requirements import Requirement\n"
        "norm = lambda n: n.lower().replace('_', '-').replace('.', '-')\n"
        "have = {norm(d.metadata['Name']): d.version for d in md.distributions()}\n"
        "broken = []\n"
        "for d in md.distributions():\n"
        "    for text in d.requires or []:\n"
        "        r = Requirement(text)\n"
        "        if r.marker is not None and not r.marker.evaluate({'extra': ''}):\n"
        "            continue\n"
        "        v = have.get(norm(r.name))\n"
        "        if v is None or not r.specifier.contains(v, prereleases=True):\n"
        "            broken.append(f\"{d.metadata['Name']} needs {text}, has {v}\")\n"
        "print(json.dumps({'broken': broken, 'versions': have}))"
    )
    out = docker_client.containers.run(unsloth_image, entrypoint=["python", "-c", code], network_mode="none",
                                       remove=True)
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["broken"] == []
    locked = recipes.lock_versions(images.image_spec("unsloth", "cuda").lock)
    installed = {name: version for name, version in report["versions"].items() if name in locked}
    assert installed == locked
    assert locked["unsloth"] == "2026.10.7" and locked["transformers"] == "5.17.0"


def test_validate_works_without_a_gpu(unsloth_image: str, smollm2_hf: Path) -> None:
    res = mf("run", "--provider", "unsloth", "validate", "--model", str(smollm2_hf), "--json")
    assert res.code == 0, res.stderr
    assert res.last["architecture"] == "LlamaForCausalLM" and res.last["parameters"] == 134_515_008


def test_load_without_a_gpu_is_refused_before_any_container(unsloth_image: str, smollm2_hf: Path) -> None:
    if engine.has_nvidia_runtime():
        pytest.skip("this engine has an NVIDIA runtime")
    res = mf("run", "--provider", "unsloth", "load", "--model", str(smollm2_hf))
    assert res.code == EXIT_CODES["provider"]
    assert "needs an NVIDIA GPU for load" in res.stderr and "--provider huggingface" in res.stderr


def test_load_without_a_gpu_is_refused_inside_the_container(unsloth_image: str, smollm2_hf: Path,
                                                            docker_client: Any, tmp_path: Path) -> None:
    spec = JobSpec(provider="unsloth", action="load", model="/models/m")
    (tmp_path / "spec.json").write_text(spec.to_json())
    tmp_path.chmod(0o755)  # the image's user reads the spec
    (tmp_path / "spec.json").chmod(0o644)
    container = docker_client.containers.run(
        unsloth_image, ["/job/spec.json"], detach=True, network_mode="none",
        volumes={str(smollm2_hf): {"bind": "/models/m", "mode": "ro"}, str(tmp_path): {"bind": "/job", "mode": "ro"}},
    )
    try:
        status = container.wait(timeout=300)["StatusCode"]
        events = [json.loads(line) for line in container.logs(stderr=False).decode().splitlines()]
    finally:
        container.remove(force=True)
    assert status == EXIT_CODES["provider"]
    assert events[-1]["message"] == "Unsloth needs an NVIDIA GPU; none is visible in this container."
    assert "--provider huggingface" in events[-1]["hint"]


@pytest.mark.gpu
def test_gpu_load_and_a_few_training_steps(unsloth_image: str, smollm2_hf: Path, tmp_path: Path) -> None:
    if not engine.has_nvidia_runtime():
        pytest.skip("needs an engine with the NVIDIA runtime")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": "The capital of France is", "completion": " Paris."}) + "\n"
                            for _ in range(16)))
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"train": {"max_steps": 3, "batch_size": 2, "max_seq_length": 64}}))
    res = mf("run", "--provider", "unsloth", "train", "--model", str(smollm2_hf), "--dataset", str(data),
             "--output", str(tmp_path / "run"), "--config", str(config), "--json", timeout=1200)
    assert res.code == 0, res.stderr
    assert res.last["steps"] == 3
