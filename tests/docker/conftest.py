"""The Docker tier: a real engine, the images built from this repo's recipes, real jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import PROJECT_ROOT, engine, images

# the registry tests' services, shared by every test module here
from .registry_fixtures import auth_registry, fresh_engine, registry  # noqa: F401

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
    return images.ensure(spec, lambda line: print(line, file=sys.stderr))


#: Labels this test session's job containers (MF_SESSION), so runs sharing an engine keep apart.
SESSION = f"pytest-{os.getpid()}"
SESSION_LABEL = f"org.modelforge.session={SESSION}"


@pytest.fixture(autouse=True)
def _session_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_SESSION", SESSION)


def job_containers(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": [JOB_LABEL, SESSION_LABEL]})


class JobWatcher:
    """Reads this session's next job container while it exists, without racing it.

    It subscribes to the engine's events before the job starts. On ``create`` the container's
    settings are read (they are fixed at creation and the container cannot be removed before it has
    run). On ``start`` the container is paused, so it cannot finish while its PID 1's
    ``/proc/PID/status`` is read from the host (the kernel's view of its uid, capabilities and
    no_new_privs), then resumed. A busy machine makes the job slower, never the read shorter.
    """

    def __init__(self, client: Any) -> None:
        import threading

        self.attrs: dict[str, Any] = {}
        self.status = ""
        self._client = client
        self._events = client.events(decode=True, filters={
            "type": "container", "event": ["create", "start"], "label": [JOB_LABEL, SESSION_LABEL]})
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        for event in self._events:
            container = self._client.containers.get(event["id"])
            if event.get("status") == "create":
                self.attrs = container.attrs
                continue
            container.pause()
            try:
                pid = self._client.api.inspect_container(event["id"])["State"]["Pid"]
                self.status = Path(f"/proc/{pid}/status").read_text()
            finally:
                container.unpause()
            return

    def close(self) -> dict[str, Any]:
        self._thread.join(timeout=60)
        self._events.close()
        assert self.attrs, "the job container was never created"
        return self.attrs


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


def sigint_as_at_a_terminal() -> None:
    """For a child that a test interrupts: SIGINT back to its default, as in a terminal. A test run started
    in the background by a non-interactive shell inherits SIGINT ignored, and Python then never turns it
    into KeyboardInterrupt; Ctrl-C at a terminal is what these tests stand for."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def until_step(proc: subprocess.Popen, step: int) -> None:
    """Read the run's events until training reaches ``step``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["current"] >= step:
            return
        assert event["event"] != "error", event
    raise AssertionError(f"the run ended before step {step}: {proc.stderr.read() if proc.stderr else ''}")


def mf(*args: str, timeout: float = 300) -> MfResult:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return MfResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def hf_image(docker_client: Any) -> str:
    """The huggingface cpu image, built once per session through the same path `mf` uses."""
    return images.ensure(images.image_spec("huggingface", "cpu"), lambda line: print(line, file=sys.stderr))


@pytest.fixture(scope="session")
def gguf_cuda_image(docker_client: Any) -> str:
    """The gguf cuda image. Compiling its CUDA kernels takes most of an hour on 2 cores, so it is built
    here only when asked (MF_BUILD_CUDA=1, which `make test CUDA=1` sets) or when the recipe's builder
    stage is on the engine (then only the project's code layers rebuild, in seconds)."""
    spec = images.image_spec("gguf", "cuda")
    if not (engine.image_exists(spec.tag) or os.environ.get("MF_BUILD_CUDA") == "1" or images.build_cached(spec)):
        pytest.skip(f"{spec.tag} is not built: `make image-gguf FLAVOUR=cuda` (or `make test CUDA=1`) builds it")
    return images.ensure(spec, lambda line: print(line, file=sys.stderr))


@pytest.fixture(scope="session")
def unsloth_image(docker_client: Any) -> str:
    """The unsloth cuda image (Unsloth's pinned stack; no GPU needed to build or inspect it)."""
    return images.ensure(images.image_spec("unsloth", "cuda"), lambda line: print(line, file=sys.stderr))


def _checkpoint_maker() -> Any:
    import importlib.util

    path = PROJECT_ROOT / "scripts" / "make_hf_checkpoint.py"
    spec = importlib.util.spec_from_file_location("make_hf_checkpoint", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smollm2_hf(hf_image: str, docker_client: Any, demo_model: Path) -> Path:
    """The real SmolLM2-135M as a Hugging Face checkpoint (made once by scripts/make_hf_checkpoint.py)."""
    return Path(_checkpoint_maker().ensure_hf_checkpoint(docker_client, hf_image, demo_model))


@pytest.fixture(scope="session")
def trained_run(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 10-step LoRA run of the real model (export and serve read it; tests that change it copy it)."""
    from .test_huggingface_image import write_config, write_dataset

    work = tmp_path_factory.mktemp("trained-run")
    work.chmod(0o755)
    out = work / "run"
    res = mf("run", "--provider", "huggingface", "train", "--model", str(smollm2_hf), "--dataset",
             str(write_dataset(work / "data.jsonl")), "--output", str(out),
             "--config", str(write_config(work / "job.json", max_steps=10, learning_rate=2e-3)), "--json", timeout=900)
    assert res.code == 0, res.stderr
    return out


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Any]:
    """A tmpfs of a chosen size (needs root, as CI has)."""
    if os.getuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mounted: list[Path] = []

    def make(size: str) -> Path:
        where = tmp_path / f"fs-{size}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
