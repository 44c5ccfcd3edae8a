"""Images fit to publish: they run safely without mf's hardening flags (no setuid or setgid program, no
package manager, no compiler where the runtime needs none), their layers carry no caches or secrets,
and each has an SBOM, made from the image, that lists exactly the locked versions."""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator import images, recipes

from .conftest import mf

#: (fixture, provider, flavour, size budget in MB, whether its runtime needs a C compiler)
IMAGES = [
    ("gguf_image", "gguf", "cpu", 230, False),  # 214 MB once llama.cpp is in it once (267 before)
    ("gguf_cuda_image", "gguf", "cuda", 2500, False),  # skipped where the image is not built (see its fixture)
    ("hf_image", "huggingface", "cpu", 1300, False),
    # triton (in Unsloth's stack) compiles small C stubs when a kernel first runs: gcc stays there.
    ("unsloth_image", "unsloth", "cuda", 9000, True),
    ("custom_image", "custom", "cpu", 1300, False),
]
PACKAGE_MANAGERS = ("apt", "apt-get", "apt-cache", "apt-key", "dpkg", "dpkg-deb", "dpkg-query", "pip", "pip3")
COMPILERS = ("gcc", "cc", "g++", "c++", "x86_64-linux-gnu-gcc-12")
#: what must never be in a layer: wheels, pip and apt caches, VCS data, credentials, build leftovers
FORBIDDEN = re.compile(
    r"(\.whl$|(^|/)\.git(/|$)|(^|/)\.cache/pip(/|$)|^root/\.cache/.|(^|/)pip-[a-z]+-[a-z0-9_]+/|"
    r"^var/cache/apt/.|^var/lib/apt/lists/.|(^|/)\.netrc$|(^|/)\.git-credentials$|(^|/)\.pypirc$|"
    r"(^|/)\.docker/config\.json$|(^|/)huggingface/token$|^tmp/.|^home/mf/\.cache/)"
)


@pytest.fixture(scope="session")
def custom_image(plugin_site: Any, hf_image: str) -> Iterator[str]:
    """The test plugin's image (a lock-only plugin on the shared Dockerfile and the project's base)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(plugin_site))
    mp.setenv("MODELFORGE_LOAD_PLUGINS", "modelforge-custom-provider")
    try:
        built = mf("images", "build", "custom", timeout=1200)
        assert built.code == 0, built.stderr
        yield built.stdout.split()[0]
    finally:
        mp.undo()


def _params() -> list[Any]:
    return [pytest.param(*case, id=f"{case[1]}-{case[2]}") for case in IMAGES]


def _sh(client: Any, image: str, script: str) -> str:
    """A shell in the image as root, with none of mf's restrictions: what another runtime would get."""
    out = client.containers.run(image, entrypoint=["/bin/sh", "-c", script], user="0", network_mode="none",
                                remove=True)
    return out.decode().strip()


@pytest.mark.parametrize(("fixture", "provider", "flavour", "budget_mb", "needs_compiler"), _params())
def test_no_setuid_programs_package_manager_or_needless_compiler(
        request: pytest.FixtureRequest, docker_client: Any, fixture: str, provider: str, flavour: str,
        budget_mb: int, needs_compiler: bool) -> None:
    image = request.getfixturevalue(fixture)
    assert _sh(docker_client, image, "find / -xdev -perm /6000 -type f") == ""
    found = _sh(docker_client, image, " ; ".join(f"command -v {p} || true" for p in PACKAGE_MANAGERS))
    assert found == "", f"package managers in {image}: {found}"
    # dpkg's database stays for scanners, without the removed package manager's own entries
    status = _sh(docker_client, image, "cat /var/lib/dpkg/status")
    packages = set(re.findall(r"^Package: (\S+)$", status, re.M))
    assert "libc6" in packages and "python3.11" in packages
    assert not packages & {"apt", "dpkg", "libapt-pkg6.0"}
    compilers = _sh(docker_client, image, " ; ".join(f"command -v {c} || true" for c in COMPILERS))
    assert bool(compilers) is needs_compiler, compilers
    size_mb = docker_client.images.get(image).attrs["Size"] / 1e6
    assert size_mb <= budget_mb, f"{image} is {size_mb:.0f} MB, over its {budget_mb} MB budget"


class _StreamReader:
    """A file-like view of the engine's `docker save` stream, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _layer_files(client: Any, image: str) -> dict[str, list[str]]:
    """Each layer's file list. From the engine's own overlay2 folders when they are on this machine (a local
    engine: no copy), else from `docker save`, which stages the whole image on the engine's disk first (the
    6.6 GB unsloth image ran a CI disk full)."""
    return _overlay_layer_files(client, image) or _saved_layer_files(client, image)


def _overlay_layer_files(client: Any, image: str) -> dict[str, list[str]] | None:
    attrs = client.images.get(image).attrs
    driver = attrs.get("GraphDriver") or {}
    data = driver.get("Data") or {}
    folders = [data.get("UpperDir", "")] + [d for d in data.get("LowerDir", "").split(":") if d]
    if driver.get("Name") != "overlay2" or len(folders) != len(attrs["RootFS"]["Layers"]):
        return None
    if not all(os.access(folder, os.R_OK | os.X_OK) and os.path.isdir(folder) for folder in folders):
        return None
    layers: dict[str, list[str]] = {}
    for folder in folders:
        names = []
        for top, dirs, files in os.walk(folder):
            rel = os.path.relpath(top, folder)
            names += [name if rel == "." else f"{rel}/{name}" for name in dirs + files]
        layers[folder] = names
    return layers


def _saved_layer_files(client: Any, image: str) -> dict[str, list[str]]:
    layers: dict[str, list[str]] = {}
    with tarfile.open(fileobj=_StreamReader(client.api.get_image(image, chunk_size=1 << 20)), mode="r|") as outer:
        for member in outer:
            if not member.name.endswith("layer.tar"):
                continue
            fh = outer.extractfile(member)
            assert fh is not None
            with tarfile.open(fileobj=fh, mode="r|") as layer:
                layers[member.name] = [m.name.removeprefix("./") for m in layer]
    return layers


@pytest.mark.parametrize(("fixture", "provider", "flavour", "budget_mb", "needs_compiler"), _params())
def test_layers_carry_no_caches_or_secrets(request: pytest.FixtureRequest, docker_client: Any, fixture: str,
                                           provider: str, flavour: str, budget_mb: int,
                                           needs_compiler: bool) -> None:
    image = request.getfixturevalue(fixture)
    layers = _layer_files(docker_client, image)
    assert len(layers) >= 3

    def allowed(path: str) -> bool:
        # the compiler base (unsloth's runtime, for triton) keeps ensurepip's wheels with its toolchain
        return needs_compiler and path.startswith("usr/share/python-wheels/")

    offending = {name: hits for name, files in layers.items()
                 if (hits := [f for f in files if FORBIDDEN.search(f) and not allowed(f)])}
    assert not offending, {k: v[:5] for k, v in offending.items()}
    assert any("opt/venv/" in f for files in layers.values() for f in files)
    history = json.dumps(docker_client.images.get(image).history())
    assert not re.search(r"(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|PASSWORD|SECRET)=\S", history)
    assert not re.search(r"\bhf_[A-Za-z0-9]{20,}", history)


@pytest.mark.parametrize(("fixture", "provider", "flavour", "budget_mb", "needs_compiler"), _params())
def test_the_sbom_lists_the_locked_versions(request: pytest.FixtureRequest, fixture: str, provider: str,
                                            flavour: str, budget_mb: int, needs_compiler: bool,
                                            use_plugins: Any, tmp_path: Any) -> None:
    image = request.getfixturevalue(fixture)
    if provider == "custom":
        use_plugins("modelforge-custom-provider")
    out = tmp_path / "sbom.json"
    res = mf("images", "sbom", provider, "--flavour", flavour, "--output", str(out), timeout=900)
    assert res.code == 0, res.stderr
    sbom = json.loads(out.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["version"] == image.split(":", 1)[1]
    found: dict[str, set[str]] = {}
    for component in sbom["components"]:
        if component.get("purl", "").startswith("pkg:pypi/"):
            found.setdefault(re.sub(r"[-_.]+", "-", component["name"]).lower(), set()).add(component["version"])
    if provider == "custom":  # the plugin's recipe lives in its package; its image's labels carry the key versions
        labels = request.getfixturevalue("docker_client").images.get(image).labels
        locked = dict(pair.split("==") for pair in labels["org.modelforge.versions"].split(","))
    else:
        locked = recipes.lock_versions(images.image_spec(provider, flavour).lock)
    key = {name: locked[name] for name in ("torch", "transformers", "llama-cpp-python", "peft", "trl", "unsloth",
                                           "pydantic", "gguf") if name in locked}
    assert key, locked
    for name, version in key.items():
        assert found.get(name) == {version}, f"{name}: SBOM {found.get(name)}, lock {version}"
    # every locked package is in the SBOM at its locked version
    missing = {n: v for n, v in locked.items() if v not in found.get(n, set())}
    assert not missing, missing
    debs = {c["name"] for c in sbom["components"] if c.get("purl", "").startswith("pkg:deb/")}
    assert {"libc6", "python3.11"} <= debs
