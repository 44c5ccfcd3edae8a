"""Hardened job containers and hash-verified builds, checked from the engine and from inside."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import PROJECT_ROOT, engine, images, recipes
from providers.errors import ImageError

from .conftest import JobWatcher

ALLOWED_TARGETS = re.compile(r"^(/models/[^/]+|/cache/huggingface|/job|/output|/data/[^/]+|/run/mf-egress|/run/secrets)$")
SECRET = "hf_modelforge_test_secret_0123456789"


def _watch_job(docker_client: Any, args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], str, Any]:
    """Run `mf` and read its job container's settings and /proc/1/status (see JobWatcher: it cannot miss)."""
    watcher = JobWatcher(docker_client)
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    attrs = watcher.close()
    return attrs, watcher.status, proc


def _field(status: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*)$", status, re.M)
    assert match, f"{name} not in /proc/1/status"
    return match.group(1).strip()


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_a_job_is_unprivileged_isolated_and_keeps_the_token_secret(gguf_image: str, demo_model: Path,
                                                                    docker_client: Any, online: bool) -> None:
    env = {**os.environ, "HF_TOKEN": SECRET}
    args = ["run", "--provider", "gguf", "load", "--model", str(demo_model), "--prompt", "Once upon a time",
            "--max-new-tokens", "200"] + (["--online"] if online else [])
    attrs, status, proc = _watch_job(docker_client, args, env)
    assert proc.returncode == 0, proc.stderr

    uid = "1000" if os.getuid() == 0 else str(os.getuid())
    assert _field(status, "Uid").split()[0] == uid != "0"
    assert _field(status, "CapEff") == "0000000000000000"
    assert _field(status, "NoNewPrivs") == "1"

    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["PidsLimit"] > 0 and host["CapDrop"] == ["ALL"]
    assert host["NetworkMode"] == "none"  # online too: the hub's hosts only, through the job's egress proxy
    assert host["Privileged"] is False
    for mount in host["Mounts"]:
        assert ALLOWED_TARGETS.match(mount["Target"]), mount
        assert "docker.sock" not in mount["Source"] and mount["Source"] not in ("/", "/etc", "/root", "/var/run")

    env_in = attrs["Config"]["Env"]
    assert not any(e.startswith("HF_TOKEN=") for e in env_in)  # never in the environment
    # only an --online job gets the token, as a file on a tmpfs (see tests/docker/test_egress.py for its content)
    assert ("HF_TOKEN_PATH=/run/secrets/HF_TOKEN" in env_in) is online
    assert any(m["Target"] == "/run/secrets" and m["Source"].startswith("/dev/shm/") for m in host["Mounts"]) is online
    outside_env = [*env_in, *attrs["Config"].get("Cmd", []), *(attrs["Config"].get("Entrypoint") or []), attrs["Path"],
                   *attrs["Args"], *attrs["Config"]["Labels"].values(), proc.stdout, proc.stderr]
    assert not any(SECRET in str(v) for v in outside_env)
    history = docker_client.images.get(gguf_image).history()
    assert SECRET not in str(history) and SECRET not in str(docker_client.images.get(gguf_image).labels)


def test_llama_cpp_renders_chat_templates_in_a_sandbox(gguf_image: str, docker_client: Any) -> None:
    out = docker_client.containers.run(
        gguf_image, entrypoint=["python", "-c", "import llama_cpp; print(llama_cpp.__version__)"],
        network_mode="none", remove=True).decode().strip()
    assert tuple(int(p) for p in out.split(".")[:3]) >= (0, 2, 72)


def test_no_provider_code_unpickles_without_weights_only() -> None:
    for path in (PROJECT_ROOT / "providers").rglob("*.py"):
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"


def _tiny_recipe(tmp_path: Path) -> Path:
    """A small real recipe (pydantic only) on the shared locked-venv Dockerfile: quick to build."""
    recipe = tmp_path / "tiny"
    recipe.mkdir()
    shutil.copyfile(recipes.LOCKED_VENV_DOCKERFILE, recipe / "Dockerfile")
    (recipe / "requirements.in").write_text("pydantic==2.14.3\n")
    # uv is a dev dependency: it lives beside the interpreter running the tests, not on PATH.
    uv = Path(sys.executable).parent / "uv"
    # --system-certs: the index is reached through the machine's CA store, as pip does (pip.conf's cert)
    subprocess.run([str(uv), "pip", "compile", "--quiet", "--system-certs", "--generate-hashes", "--python-version", "3.11",
                    "--python-platform", "x86_64-manylinux_2_28", str(recipe / "requirements.in"),
                    "-o", str(recipe / "requirements.cpu.txt")], check=True)
    return recipe


def test_a_tampered_lock_fails_the_build_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 docker_client: Any) -> None:
    recipe = _tiny_recipe(tmp_path)
    lock = recipe / "requirements.cpu.txt"
    # every hash of pydantic's files replaced: no file on the index can match any more
    head, rest = lock.read_text().split("pydantic==2.14.3", 1)
    block, tail = rest.split("\n    # via", 1)
    lock.write_text(head + "pydantic==2.14.3" + re.sub(r"[0-9a-f]{64}", "0" * 64, block) + "\n    # via" + tail)
    monkeypatch.setattr(images, "wheelhouse_root", lambda: tmp_path / "wheels")
    spec = recipes.ImageSpec("tiny", "cpu", recipe)
    with pytest.raises(ImageError) as info:
        images.build(spec, lambda line: None)
    assert "Staging the wheels of" in info.value.message and "hash" in info.value.hint
    assert not engine.image_exists(spec.tag)


def test_a_tampered_wheel_fails_the_build_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  docker_client: Any) -> None:
    recipe = _tiny_recipe(tmp_path)
    monkeypatch.setattr(images, "wheelhouse_root", lambda: tmp_path / "wheels")
    spec = recipes.ImageSpec("tiny", "cpu", recipe)
    wheels = images.stage_wheelhouse(spec, lambda line: None)
    wheel = next(wheels.glob("pydantic-*.whl"))
    with wheel.open("ab") as fh:
        fh.write(b"tampered")
    try:
        with pytest.raises(ImageError) as info:
            images.build(spec, lambda line: None)
        assert "DO NOT MATCH THE HASHES" in info.value.message
        assert not engine.image_exists(spec.tag)
    finally:
        for name in ("modelforge/tiny", "modelforge/tiny-builder"):
            for img in docker_client.images.list(name=name):
                docker_client.images.remove(img.id, force=True)
