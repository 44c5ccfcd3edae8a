"""The Docker tier: a real engine, the images built from this repo's recipes, real jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import engine, images

pytestmark = pytest.mark.docker
JOB_LABEL = "org.modelforge.kind=job"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/docker/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    return engine.client()


@pytest.fixture(scope="session")
def gguf_image(docker_client: Any) -> str:
    """The gguf cpu image, built once per session through the same path `mf` uses."""
    spec = images.image_spec("gguf", "cpu")
    return spec.ensure(lambda line: print(line, file=sys.stderr))


#: Labels this test session's job containers (MF_SESSION), so runs sharing an engine keep apart.
SESSION = f"pytest-{os.getpid()}"
SESSION_LABEL = f"org.modelforge.session={SESSION}"


@pytest.fixture(autouse=True)
def _session_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_SESSION", SESSION)


def job_containers(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": [JOB_LABEL, SESSION_LABEL]})


@pytest.fixture(autouse=True)
def no_leftover_containers(docker_client: Any):
    yield
    left = job_containers(docker_client)
    for c in left:
        c.remove(force=True)
    assert not left, f"job containers left behind: {[c.name for c in left]}"


@dataclass
class MfResult:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]


def mf(*args: str, timeout: float = 300) -> MfResult:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return MfResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def hf_image(docker_client: Any) -> str:
    """The huggingface cpu image, built once per session through the same path `mf` uses."""
    return images.image_spec("huggingface", "cpu").ensure(lambda line: print(line, file=sys.stderr))


def _checkpoint_maker() -> Any:
    import importlib.util

    path = images.PROJECT_ROOT / "scripts" / "make_hf_checkpoint.py"
    spec = importlib.util.spec_from_file_location("make_hf_checkpoint", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smollm2_hf(hf_image: str, docker_client: Any, demo_model: Path) -> Path:
    """The real SmolLM2-135M as a Hugging Face checkpoint (made once by scripts/make_hf_checkpoint.py)."""
    return Path(_checkpoint_maker().ensure_hf_checkpoint(docker_client, hf_image, demo_model))
