"""What travels to a GPU machine that has no Docker (a Python with a CUDA torch, nothing to download from),
for scripts/gpu-check.sh there: the providers' code is the checkout itself; this adds, under OUT (.gpu/):

- ``llama.tar.xz``: llama-cpp-python with the CUDA backend, copied out of an image of the gguf cuda recipe
  (its runtime image, or the builder stage of a build for one architecture: the four-architecture backend is
  110 MB and a GPU machine here takes 64 MiB in all);
- ``site.tar.xz``: the Python packages the training providers need beyond such a machine's torch and
  transformers, at the unsloth lock's versions (that lock's transformers and huggingface-hub are the ones
  such machines carry), as wheels for its Python, unpacked and stripped of what a CUDA 13 Linux machine
  never loads;
- ``model-files/``: SmolLM2-135M's config and tokenizer (no weights: the checks draw them at random);
- ``convert/``: llama.cpp's converter, as `mf export` uses it.

    python scripts/gpu_bundle.py [--arch 90-real | --llama-image TAG] [--python 3.12] [--out .gpu]

``--arch 90-real`` (the default; Hopper: H100, H200) builds the recipe's builder stage for that one
architecture (CMake's syntax; 80-real for an A100, 89-real for an L4), once: about 25 min on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: the unsloth image's packages that a GPU machine's PyTorch image (torch, transformers, accelerate, peft's
#: deps, numpy, pandas, pyarrow...) does not have, plus llama-cpp-python's diskcache and gguf (the gguf
#: provider reads headers with it)
PACKAGES = ("annotated-types", "bitsandbytes", "cut-cross-entropy", "datasets", "diffusers", "dill",
            "docstring-parser", "hf-transfer", "importlib-metadata", "lazy-importer", "msgspec", "multiprocess",
            "nest-asyncio", "peft", "pydantic", "pydantic-core", "structlog", "trl", "typeguard",
            "typing-inspection", "tyro", "tzdata", "unsloth", "unsloth-zoo")
EXTRA = {"diskcache": ROOT / "images" / "gguf" / "requirements.cpu.txt",
         "gguf": ROOT / "images" / "gguf" / "requirements.cpu.txt"}
SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"


def pinned(lock: Path, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==([^ \\\n]+)", lock.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{name} is not pinned in {lock}")
    return f"{name}=={match.group(1)}"


def site(out: Path, python: str) -> None:
    lock = ROOT / "images" / "unsloth" / "requirements.cuda.txt"
    wanted = [pinned(lock, name) for name in PACKAGES] + [pinned(path, name) for name, path in EXTRA.items()]
    with tempfile.TemporaryDirectory(prefix="mf-gpu-site-") as tmp:
        target = Path(tmp) / "site"
        platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                                 "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
                                                 "manylinux2014_x86_64")]
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                        "--only-binary=:all:", "--python-version", python, "--implementation", "cp", *platforms,
                        "--target", str(target), *wanted], check=True)
        # what a CUDA 13 Linux machine never loads: Unsloth Studio's web app, other CUDA/ROCm/XPU builds
        shutil.rmtree(target / "studio", ignore_errors=True)
        shutil.rmtree(target / "bin", ignore_errors=True)
        for lib in (target / "bitsandbytes").glob("libbitsandbytes_*.so"):
            if not lib.name.endswith(("_cuda130.so", "_cpu.so")):
                lib.unlink()
        # the providers register through modelforge's entry points: its metadata, without installing it
        shutil.copytree(ROOT / "modelforge.egg-info", target / "modelforge.egg-info")
        with tarfile.open(out / "site.tar.xz", "w:xz") as tar:
            tar.add(target, arcname=".")
    print(f"{out / 'site.tar.xz'}: {(out / 'site.tar.xz').stat().st_size / 2**20:.1f} MiB ({len(wanted)} packages)")


def llama_builder(arch: str) -> str:
    """The gguf cuda recipe's builder stage compiled for ``arch`` alone (kept on the engine under a tag
    that names the recipe's hash and the architecture)."""
    from orchestrator import engine, images

    spec = images.image_spec("gguf", "cuda")
    tag = f"{spec.builder_tag}-sm{arch.replace(';', '_')}"
    if engine.image_exists(tag):
        return tag
    buildargs = {**images.build_args(spec, print), "CUDA_ARCHITECTURES": arch}
    with tempfile.TemporaryDirectory(prefix="mf-context-") as tmp:
        context = Path(tmp) / "context.tar"
        images.write_context(spec, images.stage_wheelhouse(spec, print), context)
        with context.open("rb") as fh:
            engine.build_image(fh, tag, buildargs=buildargs, target="builder", labels=spec.builder_labels(),
                               on_line=print)
    return tag


def llama(out: Path, image: str) -> None:
    """``llama.tar.xz``: llama_cpp/ of ``image``, without the links into the image's CUDA wheels (the
    machine's CUDA 13 torch brings those libraries; gguf_gpu_check.py loads them first)."""
    from orchestrator import engine

    container = engine.client().containers.create(image, entrypoint=["true"])
    try:
        stream, _ = container.get_archive(f"{SITE_PACKAGES}/llama_cpp")
        data = b"".join(stream)
    finally:
        container.remove(force=True)
    with tempfile.TemporaryDirectory(prefix="mf-gpu-llama-") as tmp:
        target = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            # tar filters came with Python 3.11.4; Debian 12's python3 is 3.11.2
            tar.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # noqa: S202
        for path in (target / "llama_cpp" / "lib").iterdir():
            if path.is_symlink() and not path.exists():
                path.unlink()
        with tarfile.open(out / "llama.tar.xz", "w:xz") as tar:
            tar.add(target / "llama_cpp", arcname="llama_cpp")
    print(f"{out / 'llama.tar.xz'} from {image}: {(out / 'llama.tar.xz').stat().st_size / 2**20:.1f} MiB")


def model_files(out: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_hf_checkpoint import CHECKPOINT

    if not (CHECKPOINT / "config.json").is_file():
        raise SystemExit(f"{CHECKPOINT} is missing: run `python scripts/make_hf_checkpoint.py` first")
    target = out / "model-files"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for item in CHECKPOINT.iterdir():
        if item.is_file() and not item.name.endswith(".safetensors"):
            shutil.copy2(item, target / item.name)


def converter(out: Path) -> None:
    from orchestrator.export import converter_dir

    source, info = converter_dir(print)
    shutil.rmtree(out / "convert", ignore_errors=True)
    shutil.copytree(source, out / "convert")
    print(f"{out / 'convert'}: llama.cpp's converter from llama-cpp-python {info['llama_cpp_python']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-image", help="an image (or builder stage) of images/gguf/Dockerfile.cuda")
    parser.add_argument("--arch", default="90-real", help="without --llama-image: the CUDA architecture to build")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    llama(args.out, args.llama_image or llama_builder(args.arch))
    site(args.out, args.python)
    model_files(args.out)
    converter(args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"{args.out}: {total / 2**20:.1f} MiB in all (a GPU machine here takes 64 MiB with the checkout)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
