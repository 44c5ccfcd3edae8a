"""Each provider image's contract, checked on the image itself as another system would run it (pulled
from the test registry by digest, started with testcontainers, not through mf): a job spec in, JSON-lines
events out ending with the result, the labels it is published with, and its unprivileged user.

The CI workflow (.github/workflows/images.yml) runs these per image: `make test-image PROVIDER=.. FLAVOUR=..`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator import images
from providers.contract import JobSpec

from .conftest import SESSION
from .registry_fixtures import Registry

os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"  # its reaper image cannot be pulled here; labels clean up

pytestmark = pytest.mark.contract
CONTRACT_LABEL = "org.modelforge.test-contract"

#: (provider, flavour, image fixture, model fixture, the file or folder name, what validate reports)
CASES = [
    ("gguf", "cpu", "gguf_image", "demo_model", {"architecture": "llama", "parameters": 134_515_008}),
    ("gguf", "cuda", "gguf_cuda_image", "demo_model", {"architecture": "llama", "parameters": 134_515_008}),
    ("huggingface", "cpu", "hf_image", "smollm2_hf", {"architecture": "LlamaForCausalLM", "parameters": 134_515_008}),
    ("unsloth", "cuda", "unsloth_image", "smollm2_hf", {"architecture": "LlamaForCausalLM", "parameters": 134_515_008}),
]


def _selected() -> list[Any]:
    """All cases, or the one the CI matrix job names (PROVIDER and FLAVOUR, as `make test-image` sets them)."""
    provider, flavour = os.environ.get("MF_TEST_PROVIDER"), os.environ.get("MF_TEST_FLAVOUR")
    return [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in CASES
            if (not provider or case[0] == provider) and (not flavour or case[1] == flavour)]


@pytest.fixture
def pushed(request: pytest.FixtureRequest, registry: Registry, docker_client: Any) -> Any:
    """Push an image to the test registry; return its reference by digest."""

    def push(image: str) -> str:
        repository, tag = f"{registry.address}/contract/{image}".rsplit(":", 1)
        docker_client.images.get(image).tag(repository, tag)
        digest = None
        for event in docker_client.api.push(repository, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
            digest = event.get("aux", {}).get("Digest", digest)
        assert digest
        return f"{repository}@{digest}"

    return push


@pytest.mark.parametrize(("provider", "flavour", "image_fixture", "model_fixture", "expected"), _selected())
def test_the_image_runs_a_job_from_its_spec(request: pytest.FixtureRequest, pushed: Any, tmp_path: Path,
                                            docker_client: Any, provider: str, flavour: str, image_fixture: str,
                                            model_fixture: str, expected: dict[str, Any]) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    image = request.getfixturevalue(image_fixture)
    model = Path(request.getfixturevalue(model_fixture))
    reference = pushed(image)
    job = tmp_path / "job"
    job.mkdir()
    job.chmod(0o755)
    spec = JobSpec(provider=provider, action="validate", model=f"/models/{model.name}", device_map="cpu")
    (job / "spec.json").write_text(spec.to_json())
    (job / "spec.json").chmod(0o644)

    container = (
        DockerContainer(reference)
        .with_volume_mapping(str(job), "/job", "ro")
        .with_volume_mapping(str(model), f"/models/{model.name}", "ro")
        .with_env("HF_HUB_OFFLINE", "1")
        .with_tmpfs_mount("/tmp", "size=512m")
        .with_kwargs(network_mode="none", read_only=True, cap_drop=["ALL"],
                     labels={CONTRACT_LABEL: SESSION})
        .waiting_for(LogMessageWaitStrategy(re.compile(r'"event": ?"(result|error)"')).with_startup_timeout(300))
    )
    with container:
        raw = container.get_wrapped_container()
        raw.wait(timeout=120)
        stdout, stderr = container.get_logs()
        attrs = docker_client.api.inspect_container(raw.id)
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert events[-1]["event"] == "result", stderr.decode()[-2000:]
    assert {k: events[-1][k] for k in expected} == expected
    assert events[0]["event"] == "stage"
    assert attrs["State"]["ExitCode"] == 0

    labels = docker_client.images.get(reference).labels
    spec_ = images.image_spec(provider, flavour)
    assert labels["org.modelforge.provider"] == provider and labels["org.modelforge.flavour"] == flavour
    assert labels["org.modelforge.lock-hash"] == spec_.lock_hash
    assert labels["org.modelforge.versions"] == ",".join(f"{k}=={v}" for k, v in spec_.key_versions.items())
    assert docker_client.images.get(reference).attrs["Config"]["User"] == "mf"
    assert not docker_client.containers.list(all=True, filters={"label": f"{CONTRACT_LABEL}={SESSION}"})
