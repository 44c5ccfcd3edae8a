"""Day-to-day operation against the real engine: image status and pruning, doctor, out-of-memory
jobs, orphaned containers of a killed `mf`, and concurrent runs on one HF cache."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import engine, images
from providers.contract import EXIT_CODES

from .conftest import job_containers, mf


def _builder_label(build_hash: str) -> str:
    return f"LABEL org.modelforge.kind=builder org.modelforge.build-hash={build_hash}"


def test_images_shows_status_and_prune_drops_only_superseded(gguf_image: str, docker_client: Any) -> None:
    old_tag = "modelforge/gguf:cpu-000000000000"
    # an earlier build of the same provider and flavour: another image, with the project's labels
    docker_client.images.build(fileobj=io.BytesIO(f"FROM {gguf_image}\nLABEL org.modelforge.content-hash=old\n".encode()),
                               tag=old_tag, network_mode="none", rm=True)
    rows = {(r["provider"], r["flavour"]): r for r in json.loads(mf("images", "--json").stdout)}
    row = rows[("gguf", "cpu")]
    assert row["status"] == "built" and row["tag"] == gguf_image and row["size_mb"] > 0
    assert old_tag in row["superseded"]
    # a builder stage of a superseded recipe goes; the current recipe's stays
    spec = images.image_spec("gguf", "cpu")
    old_builder = "modelforge/gguf-builder:cpu-000000000000"
    plugin_image = "modelforge/someplugin:cpu-000000000000"  # a plugin's image, the plugin not loaded here
    made = {plugin_image: "LABEL org.modelforge.provider=someplugin", old_builder: _builder_label("000000000000")}
    if not engine.image_exists(spec.builder_tag):  # a stand-in where the real builder stage was not built
        made[spec.builder_tag] = _builder_label(spec.build_hash)
    for tag, instruction in made.items():
        docker_client.images.build(fileobj=io.BytesIO(f"FROM {gguf_image}\n{instruction}\n".encode()), tag=tag,
                                   network_mode="none", rm=True)
    try:
        pruned = mf("images", "prune")
        assert pruned.code == 0, pruned.stderr
        tags = {t for img in docker_client.images.list(name="modelforge/gguf") for t in img.tags}
        assert old_tag not in tags and gguf_image in tags
        assert not engine.image_exists(old_builder) and engine.image_exists(spec.builder_tag)
        rows = {(r["provider"], r["flavour"]): r for r in json.loads(mf("images", "--json").stdout)}
        assert rows[("gguf", "cpu")]["builder"] == "kept"
        assert f"removed {old_builder}" in pruned.stdout + pruned.stderr
        assert "kept" not in pruned.stdout + pruned.stderr  # each image once, though all carry the base's label
        # an image of a provider not installed here (a plugin not loaded) is left alone
        assert engine.image_exists(plugin_image)
        assert f"left {plugin_image}: provider someplugin is not installed here" in pruned.stderr
    finally:  # the stand-ins made here (never the real builder stage)
        for tag in made:
            if engine.image_exists(tag):
                docker_client.images.remove(tag, force=True)


def test_doctor_checks_the_engine(gguf_image: str) -> None:
    res = mf("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    assert checks["docker engine"]["status"] == "ok" and "version" in checks["docker engine"]["detail"]
    assert checks["nvidia runtime"]["status"] in {"ok", "warn"}
    assert {"disk for images", "/dev/shm", "hf cache", "hf token"} <= set(checks)
    assert res.code == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


def test_an_out_of_memory_job_is_reported_as_such(smollm2_hf: Path) -> None:
    res = mf("run", "--provider", "huggingface", "load", "--model", str(smollm2_hf), "--memory", "150m")
    assert res.code == EXIT_CODES["out_of_memory"], res.stderr
    assert "ran out of memory" in res.stderr and "Traceback" not in res.stderr


def test_the_next_mf_call_removes_the_container_of_a_killed_mf(gguf_image: str, demo_model: Path,
                                                               docker_client: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--provider", "gguf", "load", "--model", str(demo_model),
         "--prompt", "Once upon a time", "--max-new-tokens", "4000", "--temperature", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(c.status == "running" for c in job_containers(docker_client)):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    orphans = job_containers(docker_client)
    assert [c.labels["org.modelforge.owner-pid"] for c in orphans] == [str(proc.pid)]
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model))
    assert res.code == 0, res.stderr
    assert f"removed the orphaned job container {orphans[0].name}" in res.stderr
    assert job_containers(docker_client) == []


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_two_runs_at_once_share_one_cache_without_harm(gguf_image: str, demo_model: Path) -> None:
    hf_home = Path(os.environ["HF_HOME"])
    repo = hf_home / "hub" / "models--org--shared-model"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    shutil.copyfile(demo_model, repo / "snapshots" / commit / "m.gguf")
    before = _tree_digest(hf_home)
    cmd = [sys.executable, "-m", "orchestrator", "run", "--provider", "gguf", "validate", "--model",
           "org/shared-model:m.gguf", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["parameters"] == 134_515_008
    assert _tree_digest(hf_home) == before


NONROOT_UID = 4242


@pytest.fixture(scope="session")
def nonroot_mf() -> Iterator[Path]:
    """`mf` installed for an unprivileged user (uid 4242, in the docker group) with the system Python."""
    if os.getuid() != 0:
        pytest.skip("creating the unprivileged user needs root")
    if subprocess.run(["id", "-u", "mftest"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--uid", str(NONROOT_UID), "--user-group", "--no-create-home", "mftest"], check=True)
    subprocess.run(["usermod", "-aG", "docker", "mftest"], check=True)
    # pytest's own temp folders are private to root: this one must be reachable by the user
    venv = Path(tempfile.mkdtemp(prefix="mf-nonroot-venv-"))
    venv.chmod(0o755)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    # mf runs from a checkout (it reads images/ and providers/ there): a readable copy of one
    repo, src = Path(__file__).resolve().parents[2], venv / "src"
    for part in ("orchestrator", "providers", "ModelForge", "images", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (repo / part).is_dir() else shutil.copyfile
        copy(repo / part, src / part, **({"symlinks": True} if copy is shutil.copytree else {}))
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-e", str(src)],
                   check=True)
    for path in [venv, *venv.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
    yield venv / "bin" / "mf"
    shutil.rmtree(venv, ignore_errors=True)


def test_files_a_job_writes_belong_to_the_invoking_user(gguf_image: str, demo_model: Path,
                                                        nonroot_mf: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="mf-nonroot-home-"))
    model = home / demo_model.name
    shutil.copyfile(demo_model, model)
    model.chmod(0o644)
    os.chown(home, NONROOT_UID, NONROOT_UID)
    out = home / "out"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "MODELFORGE_LOAD_PLUGINS": "",
           "MF_SESSION": os.environ["MF_SESSION"]}
    try:
        proc = subprocess.run(["setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}", "--init-groups",
                               str(nonroot_mf), "run", "--provider", "gguf", "validate", "--model", str(model),
                               "--output", str(out), "--json"], capture_output=True, text=True, env=env, timeout=300)
        _check_owned_by_user(proc, home, out)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _check_owned_by_user(proc: subprocess.CompletedProcess, home: Path, out: Path) -> None:
    assert proc.returncode == 0, proc.stderr
    result = out / "result.json"
    assert json.loads(result.read_text())["parameters"] == 134_515_008
    assert (out.stat().st_uid, result.stat().st_uid, result.stat().st_gid) == (NONROOT_UID,) * 3
    hf_cache = home / ".cache" / "huggingface"
    assert hf_cache.is_dir() and hf_cache.stat().st_uid == NONROOT_UID
