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


def job_containers(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": JOB_LABEL})


@pytest.fixture(autouse=True)
def no_leftover_containers(docker_client: Any):
    for c in job_containers(docker_client):  # from an earlier, killed run
        c.remove(force=True)
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


HF_CHECKPOINT = images.PROJECT_ROOT / ".cache" / "test-models" / "smollm2-135m-hf"

_CONVERT = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
name = "SmolLM2-135M-Instruct.Q4_1.gguf"
model = AutoModelForCausalLM.from_pretrained("/models", gguf_file=name, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained("/models", gguf_file=name)
# transformers 5.23 marks a GGUF-loaded model as quantized and refuses to save it; its weights are
# already dequantized float32 tensors, so drop the marker and save them as safetensors.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained("/out/model", safe_serialization=True)
tokenizer.save_pretrained("/out/model")
"""


@pytest.fixture(scope="session")
def smollm2_hf(hf_image: str, docker_client: Any, demo_model: Any) -> Any:
    """The real SmolLM2-135M as a Hugging Face checkpoint: the GGUF dequantized by transformers
    and saved with save_pretrained, made once in the huggingface image and cached in .cache/."""
    if (HF_CHECKPOINT / "config.json").is_file() and (HF_CHECKPOINT / "model.safetensors").is_file():
        return HF_CHECKPOINT
    import shutil
    import tempfile

    HF_CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=HF_CHECKPOINT.parent, prefix=".convert-"))
    work.chmod(0o777)
    try:
        docker_client.containers.run(
            hf_image, entrypoint=["python", "-c", _CONVERT], network_mode="none", remove=True,
            user=f"{os.getuid()}:{os.getgid()}" if os.getuid() else "1000:1000",
            environment={"HOME": "/tmp", "HF_HUB_OFFLINE": "1"},
            volumes={str(demo_model.parent): {"bind": "/models", "mode": "ro"}, str(work): {"bind": "/out", "mode": "rw"}},
        )
        for path in [work, *work.rglob("*")]:
            os.lchown(path, os.getuid(), os.getgid())
            path.chmod(0o755 if path.is_dir() else 0o644)
        (work / "model").rename(HF_CHECKPOINT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return HF_CHECKPOINT
