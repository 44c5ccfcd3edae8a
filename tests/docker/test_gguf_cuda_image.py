"""The gguf provider's cuda image, checked without a GPU: what its CUDA backend links against, which GPU
architectures its kernels were compiled for, and that the same image answers on a CPU-only host.

These need the image (see the gguf_cuda_image fixture: `make image-gguf FLAVOUR=cuda` builds it); the
run on a GPU is tests/gpu/test_gguf_cuda_native.py.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sysconfig
import tarfile
from pathlib import Path
from typing import Any

import pytest

from orchestrator import label

from .conftest import mf

pytestmark = pytest.mark.cuda_image

SITE = "/opt/venv/lib/python3.11/site-packages"
CUDA_BACKEND = f"{SITE}/llama_cpp/lib/libggml-cuda.so"
#: CMake's CUDA_ARCHITECTURES default in images/gguf/Dockerfile.cuda: SASS for each, PTX for the newest
ARCHITECTURES = {"sm_80", "sm_86", "sm_89", "sm_90"}


def _in_image(image: str, docker_client: Any, *command: str) -> str:
    out = docker_client.containers.run(image, list(command), entrypoint=[], remove=True, network_disabled=True,
                                       stdout=True, stderr=True)
    return str(out.decode())


def test_the_cuda_backend_needs_nothing_from_outside_but_the_driver(gguf_cuda_image: str, docker_client: Any) -> None:
    listing = _in_image(gguf_cuda_image, docker_client, "ldd", CUDA_BACKEND)
    resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", listing, flags=re.M))
    missing = sorted(name for name, where in resolved.items() if where == "not")
    # the driver's, which the NVIDIA container runtime mounts: named, so the backend loads on a GPU host
    assert missing == ["libcuda.so.1"], listing
    cuda = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13")
    for lib in (*cuda, "libggml-base.so.0"):
        assert resolved.get(lib, "").startswith(f"{SITE}/llama_cpp/lib/"), listing  # found through $ORIGIN
    real = json.loads(_in_image(gguf_cuda_image, docker_client, "/opt/venv/bin/python", "-c", (
        f"import os, json; print(json.dumps([os.path.realpath('{SITE}/llama_cpp/lib/' + n) for n in {list(cuda)}]))")))
    assert all(path.startswith(f"{SITE}/nvidia/cu13/lib/") for path in real), real  # the wheels' own files


def test_the_runtime_has_no_compiler_headers_or_stub(gguf_cuda_image: str, docker_client: Any) -> None:
    # the toolkit and the build's leftovers: compilers, headers, static and link-time libraries, the
    # driver stub, CMake's package files, the build tools
    found = _in_image(gguf_cuda_image, docker_client, "/opt/venv/bin/python", "-c", (
        "import pathlib, json; root = pathlib.Path('/opt/venv');"
        "print(json.dumps(sorted(str(p) for p in root.rglob('*') if p.name in "
        "('nvcc', 'ptxas', 'cicc', 'nvlink', 'cuda_runtime.h', 'cublas_v2.h', 'llama.h', 'ggml.h', 'libcuda.so', "
        "'libcudart.so', 'libcublas.so', 'ggml-config.cmake', 'ninja', 'cmake') "
        "or (p.suffix == '.a' and 'nvidia' in p.parts))))"))
    assert json.loads(found) == []
    libs = json.loads(_in_image(gguf_cuda_image, docker_client, "/opt/venv/bin/python", "-c", (
        f"import os, json; print(json.dumps(sorted(os.listdir('{SITE}/llama_cpp/lib'))))")))
    variants = [lib for lib in libs if lib.startswith("libggml-cpu-")]
    assert "libggml-cuda.so" in libs and {"libggml-cpu-x64.so", "libggml-cpu-haswell.so"} <= set(variants), libs


def test_the_kernels_cover_the_four_architectures(gguf_cuda_image: str, docker_client: Any, tmp_path: Path) -> None:
    """Listed with NVIDIA's cuobjdump (the dev extra's nvidia-cuda-cuobjdump) from the library in the image."""
    cuobjdump = Path(sysconfig.get_path("purelib")) / "nvidia" / "cu13" / "bin" / "cuobjdump"
    assert cuobjdump.is_file(), "install the dev extra (nvidia-cuda-cuobjdump): make venv"
    container = docker_client.containers.create(gguf_cuda_image, entrypoint=["true"])
    try:
        stream, _ = container.get_archive(CUDA_BACKEND)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("libggml-cuda.so")
            assert member is not None
            library = tmp_path / "libggml-cuda.so"
            library.write_bytes(member.read())
    finally:
        container.remove(force=True)
    elf = subprocess.run([str(cuobjdump), "--list-elf", str(library)], capture_output=True, text=True, check=True)
    ptx = subprocess.run([str(cuobjdump), "--list-ptx", str(library)], capture_output=True, text=True, check=True)
    sass = set(re.findall(r"\.(sm_\d+)\.cubin", elf.stdout))
    assert sass == ARCHITECTURES, elf.stdout[-2000:]
    assert set(re.findall(r"\.(sm_\d+)\.ptx", ptx.stdout)) == {"sm_90"}, ptx.stdout[-2000:]
    # every kernel file was compiled for every architecture, not just some of them
    per_arch = {arch: elf.stdout.count(f".{arch}.cubin") for arch in ARCHITECTURES}
    assert len(set(per_arch.values())) == 1 and per_arch["sm_80"] > 100, per_arch


def test_the_same_image_answers_on_a_host_without_a_gpu(gguf_cuda_image: str, demo_model: Path) -> None:
    res = mf("run", "--provider", "gguf", "--flavour", "cuda", "load", "--model", str(demo_model),
             "--prompt", "The capital of France is", "--max-new-tokens", "8", "--json")
    assert res.code == 0, res.stderr
    result = res.last
    assert result["image"] == gguf_cuda_image
    assert "Paris" in result["text"]
    assert result["device"] == "cpu"
    backend = result["backend"]
    assert [d["type"] for d in backend["devices"]] == ["cpu"]  # the CUDA backend did not load: no driver
    assert backend["layers_offloaded"] == 0 and backend["layers"] == 31  # 30 blocks and the output layer
    # the CPU backend built for this host's instruction set, picked at load among the variants
    assert re.fullmatch(r"libggml-cpu-[a-z0-9_]+\.so", backend["cpu_backend"] or ""), backend


def test_the_image_states_its_driver_floor(gguf_cuda_image: str, docker_client: Any) -> None:
    labels = docker_client.images.get(gguf_cuda_image).labels
    assert labels[label("driver-floor")] == "580.65.06"  # CUDA 13's, which `mf doctor` compares
    assert "llama-cpp-python==0.3.36" in labels[label("versions")]
