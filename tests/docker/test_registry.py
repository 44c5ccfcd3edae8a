"""Images that travel, through a real registry (Debian's docker-registry on loopback): push, a signed
release manifest, pull by digest into an empty engine, verify, bundles, and each way it can go wrong."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator import recipes, signing
from orchestrator import registry as reg

from .conftest import mf, sigint_as_at_a_terminal
from .registry_fixtures import Registry

GGUF = "modelforge/gguf"


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return signing.generate(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def release(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry: Registry,
            keys: tuple[Path, Path]) -> str:
    """A registry path of this test's own, a signing key, the public key trusted, config and cache isolated."""
    where = f"{registry.address}/t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MF_REGISTRY", where)
    monkeypatch.setenv("MF_SIGNING_KEY", str(keys[0]))
    monkeypatch.setenv("MF_TRUSTED_KEYS", str(keys[1]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MF_REQUIRE_SIGNED", raising=False)
    return where


def _error(res: Any) -> str:
    lines = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def _push(name: str = "gguf") -> dict[str, Any]:
    res = mf("images", "push", name, timeout=900)
    assert res.code == 0, res.stderr
    reference = res.stdout.split()[0]
    return {"reference": reference.split("@")[0], "digest": reference.split("@")[1]}


def test_push_then_an_empty_engine_pulls_by_digest_and_runs(gguf_image: str, release: str, fresh_engine: str,
                                                            demo_model: Path, docker_client: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pushed = _push()
    assert pushed["reference"] == f"{release}/{gguf_image}" and pushed["digest"].startswith("sha256:")
    local_id = docker_client.images.get(gguf_image).id

    monkeypatch.setenv("DOCKER_HOST", fresh_engine)
    other = docker.DockerClient(base_url=fresh_engine)
    assert other.images.list() == []
    started = time.monotonic()
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model), "--json", timeout=600)
    first_run = time.monotonic() - started
    assert res.code == 0, res.stderr
    assert res.last["parameters"] == 134_515_008
    assert other.images.get(gguf_image).id == local_id  # the very bytes that were pushed
    assert other.images.get(gguf_image).labels["org.modelforge.provider"] == "gguf"

    started = time.monotonic()
    verified = mf("images", "verify", "--all", "--json")
    verify_s = time.monotonic() - started
    assert verified.code == 0, verified.stderr
    rows = {r["provider"] + "-" + r["flavour"]: r for r in json.loads(verified.stdout)}
    assert rows["gguf-cpu"]["status"] == "verified"
    assert rows["huggingface-cpu"]["status"] == "unlisted"

    # only signed images may run: the pulled one is in the verified manifest
    monkeypatch.setenv("MF_REQUIRE_SIGNED", "1")
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model), "--json")
    assert res.code == 0, res.stderr
    print(f"first run on an empty engine, pull included: {first_run:.1f} s; verify --all: {verify_s:.2f} s")


def test_a_local_build_is_refused_when_only_signed_images_may_run(gguf_image: str, release: str, demo_model: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_REQUIRE_SIGNED", "1")
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model))
    assert res.code == 7
    assert "is not in any verified, signed release manifest, and MF_REQUIRE_SIGNED is set" in _error(res)
    _push()
    pulled = mf("images", "pull", "gguf")  # verifies the release and records it
    assert pulled.code == 0, pulled.stderr
    assert "verified" in pulled.stdout
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model))
    assert res.code == 0, res.stderr


def test_a_release_signed_by_an_unknown_key_is_refused(gguf_image: str, release: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _push()
    _, other_public = signing.generate(tmp_path / "other")
    monkeypatch.setenv("MF_TRUSTED_KEYS", str(other_public))
    res = mf("images", "pull", "gguf")
    assert res.code == 7
    assert "is signed by an unknown key" in _error(res) and "mf images trust" in _error(res)


def test_a_changed_manifest_fails_its_signature(gguf_image: str, release: str, keys: tuple[Path, Path]) -> None:
    _push()
    signed = signing.sign(reg.fetch_release(release, verify=False), signing.load_private(str(keys[0])))
    signed["manifest"]["images"][0]["digest"] = "sha256:" + "0" * 64  # changed after it was signed
    reg._push_release(signed, release, lambda event: None, lambda line: None)
    res = mf("images", "pull", "gguf")
    assert res.code == 7
    assert "has an invalid signature" in _error(res) and "it was changed after it was signed" in _error(res)


def test_an_image_missing_from_the_release_is_refused(gguf_image: str, hf_image: str, release: str) -> None:
    _push()
    res = mf("images", "pull", "huggingface", "--flavour", "cpu")
    assert res.code == 7
    assert "huggingface (cpu) is not in the signed release manifest of" in _error(res)


def test_a_tag_moved_to_other_bytes_is_refused(gguf_image: str, release: str, docker_client: Any) -> None:
    pushed = _push()
    repository, tag = pushed["reference"].rsplit(":", 1)
    docker_client.images.get(recipes.BASE_RUNTIME.tag).tag(repository, tag)  # someone pushes other bytes over it
    try:
        for _ in docker_client.api.push(repository, tag=tag, stream=True, decode=True):
            pass
    finally:
        docker_client.images.remove(pushed["reference"])
    res = mf("images", "pull", "gguf")
    assert res.code == 7
    line = _error(res)
    assert "in the registry now points at" in line and "refusing to pull different bytes" in line


def test_an_unreachable_registry_is_one_line(gguf_image: str, release: str) -> None:
    res = mf("images", "pull", "gguf", "--registry", "127.0.0.1:9/team")
    assert res.code == 7
    assert "Cannot reach the registry 127.0.0.1:9/team" in _error(res)


def test_a_registry_that_needs_a_login(gguf_image: str, release: str, auth_registry: Registry,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = f"{auth_registry.address}/team"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-login"))
    res = mf("images", "push", "gguf", "--registry", where)
    assert res.code == 7
    assert f"it needs a login, or the credentials are wrong. Run `docker login {auth_registry.address}`" in _error(res)
    monkeypatch.setenv("DOCKER_CONFIG", str(auth_registry.docker_config(tmp_path / "wrong", password="nope")))
    res = mf("images", "push", "gguf", "--registry", where)
    assert res.code == 7 and "needs a login, or the credentials are wrong" in _error(res)
    monkeypatch.setenv("DOCKER_CONFIG", str(auth_registry.docker_config(tmp_path / "right")))
    res = mf("images", "push", "gguf", "--registry", where, timeout=900)
    assert res.code == 0, res.stderr
    res = mf("images", "verify", "gguf", "--registry", where)
    assert res.code == 0 and "verified" in res.stdout, res.stderr


def test_a_bundle_moves_images_with_their_signed_manifest(gguf_image: str, release: str, fresh_engine: str,
                                                          demo_model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle.tar"
    res = mf("images", "save", "gguf", "--output", str(bundle), timeout=600)
    assert res.code == 0, res.stderr
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        assert "manifest.signed.json" in names and "images/gguf-cpu.tar" in names

    monkeypatch.setenv("DOCKER_HOST", fresh_engine)
    other = docker.DockerClient(base_url=fresh_engine)
    # a tampered bundle: one byte of the image archive changed
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(bundle) as src, tarfile.open(tampered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "images/gguf-cpu.tar":
                inner = tarfile.open(fileobj=io.BytesIO(data))
                config_name = json.loads(inner.extractfile("manifest.json").read())[0]["Config"]  # type: ignore[union-attr]
                offset = inner.getmember(config_name).offset_data
                data = data[:offset] + (b"[" if data[offset:offset + 1] != b"[" else b"{") + data[offset + 1:]
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    res = mf("images", "load", str(tampered), timeout=600)
    assert res.code == 7
    assert "the bundle was changed" in _error(res) or "is truncated or damaged" in _error(res)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    res = mf("images", "load", str(truncated), timeout=600)
    assert res.code == 7
    assert "truncated.tar is truncated or damaged" in _error(res) and "nothing was loaded" in _error(res)
    assert other.images.list() == []

    res = mf("images", "load", str(bundle), timeout=600)
    assert res.code == 0, res.stderr
    assert f"{gguf_image}  verified and loaded" in res.stdout
    monkeypatch.setenv("MF_REQUIRE_SIGNED", "1")  # a loaded bundle's images count as signed
    monkeypatch.delenv("MF_REGISTRY")
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model), "--json")
    assert res.code == 0, res.stderr


def test_ctrl_c_during_a_pull_leaves_no_tag_and_the_next_pull_finishes(hf_image: str, release: str,
                                                                       fresh_engine: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _push("huggingface")
    monkeypatch.setenv("DOCKER_HOST", fresh_engine)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "images", "pull", "huggingface", "--flavour", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                            preexec_fn=sigint_as_at_a_terminal)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("pulling "):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    other = docker.DockerClient(base_url=fresh_engine)
    assert proc.returncode == 130, err
    assert "Stopped the pull of" in err and "nothing was tagged" in err
    assert not [t for img in other.images.list() for t in img.tags if t.startswith("modelforge/huggingface")]
    started = time.monotonic()
    res = mf("images", "pull", "huggingface", "--flavour", "cpu", timeout=600)
    assert res.code == 0, res.stderr
    assert other.images.get(hf_image).id
    print(f"resumed pull of the huggingface image: {time.monotonic() - started:.1f} s")
