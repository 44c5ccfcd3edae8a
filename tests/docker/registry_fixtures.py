"""Real services for the registry tests: Debian's docker-registry (the CNCF distribution registry) on
loopback with a free port, with and without htpasswd auth, and a second, empty Docker engine (its own
data root and socket) to show what a fresh machine does."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REGISTRY_BIN = Path("/usr/bin/docker-registry")
DOCKERD_BIN = Path("/usr/sbin/dockerd")


@dataclass
class Registry:
    address: str  # 127.0.0.1:PORT
    user: str | None = None
    password: str | None = None

    def docker_config(self, folder: Path, password: str | None = None) -> Path:
        """A docker config folder (DOCKER_CONFIG) holding credentials for this registry, as `docker login` writes."""
        folder.mkdir(parents=True, exist_ok=True)
        auth = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        (folder / "config.json").write_text(json.dumps({"auths": {self.address: {"auth": auth}}}))
        return folder


def start_registry(folder: Path, htpasswd: str | None = None) -> tuple[subprocess.Popen, str]:
    if not REGISTRY_BIN.exists():
        pytest.fail("docker-registry is not installed: run `make services` (or `make test`, which does)")
    folder.mkdir(parents=True, exist_ok=True)
    config = [
        "version: 0.1", "log:", "  level: info", "storage:", "  filesystem:", f"    rootdirectory: {folder}/data",
        "  delete:", "    enabled: true", "http:", "  addr: 127.0.0.1:0",
    ]
    if htpasswd:
        (folder / "htpasswd").write_text(htpasswd + "\n")
        config += ["auth:", "  htpasswd:", "    realm: modelforge-tests", f"    path: {folder}/htpasswd"]
    (folder / "config.yml").write_text("\n".join(config) + "\n")
    log = (folder / "log").open("w")
    proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(folder / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", (folder / "log").read_text())
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"docker-registry did not start: {(folder / 'log').read_text()[-500:]}")


def stop_registry(proc: subprocess.Popen, address: str) -> None:
    """Stop a test registry and drop the engine's tags and digest references that name it: its port dies
    with it, and a tag left behind would keep a superseded image's layers on disk through every later run."""
    from orchestrator import engine

    proc.terminate()
    proc.wait(timeout=10)
    client = engine.client()
    for image in client.images.list():
        for tag in image.tags + image.attrs.get("RepoDigests", []):  # pulled by digest: name@sha256:...
            if tag.startswith(f"{address}/"):
                with contextlib.suppress(Exception):  # in use by a container still running: a test's failure
                    client.images.remove(tag)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    proc, address = start_registry(tmp_path_factory.mktemp("registry"))
    yield Registry(address)
    stop_registry(proc, address)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    import bcrypt

    user, password = "ci-bot", "s3cret-for-tests"
    line = f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"
    proc, address = start_registry(tmp_path_factory.mktemp("auth-registry"), htpasswd=line)
    yield Registry(address, user, password)
    stop_registry(proc, address)


@pytest.fixture
def fresh_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second Docker engine with nothing in it (its own data root); yields its DOCKER_HOST."""
    if os.getuid() != 0 or not DOCKERD_BIN.exists():
        pytest.skip("a second engine needs root and dockerd")
    with second_engine(Path(tmp_path_factory.mktemp("engine", numbered=True))) as host:
        yield host


@contextlib.contextmanager
def second_engine(root: Path) -> Iterator[str]:
    """dockerd on its own data root, socket and bridge under ``root``. Its own bridge, not --bridge=none:
    a daemon started with none deletes the host's docker0, which the main engine's networked jobs need."""
    import docker

    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    bridge = f"mfbr{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)  # a leftover of a killed run
    proc: subprocess.Popen | None = None
    try:
        subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "10.255.253.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        log = (root / "log").open("w")
        proc = subprocess.Popen(
            [str(DOCKERD_BIN), "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "pid"), "--host", f"unix://{sock}", f"--bridge={bridge}", "--iptables=false",
             "--ip-masq=false"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                docker.DockerClient(base_url=f"unix://{sock}").ping()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the second engine did not start: {(root / 'log').read_text()[-500:]}") from None
                time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
