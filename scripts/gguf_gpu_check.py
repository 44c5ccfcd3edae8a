"""Run the gguf provider natively on a GPU machine (no Docker there) with the llama-cpp-python build
taken out of the gguf cuda image, and print what a user would ask: the card, the layers offloaded,
tokens/s on the GPU against the CPU on the same machine, and the answer.

    python scripts/gguf_gpu_check.py --site BUNDLE/site-packages --model SmolLM2-135M-Instruct.Q4_1.gguf

BUNDLE comes from `make gpu-bundle` (llama_cpp/ of the image, through `--bundle OUT` below, run where
the image is). The CUDA 13 runtime and cuBLAS are
loaded from the first nvidia/cu13/lib on sys.path (the bundle's, or a CUDA 13 torch's), since the
image's RUNPATH (/opt/venv/...) does not exist outside it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"


def preload_cuda_libraries() -> str | None:
    for entry in map(Path, sys.path):
        lib = entry / "nvidia" / "cu13" / "lib"
        if (lib / "libcudart.so.13").exists():
            for name in ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13"):
                ctypes.CDLL(str(lib / name), mode=ctypes.RTLD_GLOBAL)
            return str(lib)
    return None


def bundle(out: Path) -> int:
    """Copy llama_cpp/ out of the gguf cuda image into OUT/site-packages (what travels to a GPU machine)."""
    import io
    import tarfile

    sys.path.insert(0, str(ROOT))
    from orchestrator import engine, images

    tag = images.image_spec("gguf", "cuda").tag
    if not engine.image_exists(tag):
        print(f"{tag} is not built: run `make image-gguf FLAVOUR=cuda` first.", file=sys.stderr)
        return 2
    container = engine.client().containers.create(tag, entrypoint=["true"])
    try:
        stream, _ = container.get_archive("/opt/venv/lib/python3.11/site-packages/llama_cpp")
        site = out / "site-packages"
        site.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            # tar filters came with Python 3.11.4; Debian 12's python3 is 3.11.2
            tar.extractall(site, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # noqa: S202
    finally:
        container.remove(force=True)
    size = sum(p.stat().st_size for p in (site / "llama_cpp").rglob("*") if p.is_file())
    print(f"{site}/llama_cpp from {tag}: {size / 2**20:.0f} MiB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="only copy llama_cpp/ out of the image into this folder")
    parser.add_argument("--site", type=Path, help="folder holding llama_cpp/ from the cuda image")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if args.bundle:
        return bundle(args.bundle)
    if not args.site or not args.model:
        parser.error("--site and --model are needed (or --bundle OUT)")
    sys.path[:0] = [str(args.site), str(ROOT)]
    cuda_lib = preload_cuda_libraries()
    from providers.builtin.gguf import GGUFProvider

    provider = GGUFProvider()
    tokenizer = provider.load_tokenizer(str(args.model))
    runs = {}
    for device_map in ("auto", "cpu"):
        model = provider.load_model(str(args.model), "AutoModelForCausalLM", device_map=device_map)
        provider.generate(model, tokenizer, PROMPT, max_new_tokens=8, temperature=0)  # warm-up
        out = provider.generate(model, tokenizer, PROMPT, max_new_tokens=args.tokens, temperature=0)
        runs[device_map] = {"device": provider.device_of(model), "backend": provider.backend_of(model),
                            "tokens_per_second": out["tokens_per_second"], "text": out["text"][:80]}
        del model
    card = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True, check=False).stdout.strip()
    gpu, cpu = runs["auto"], runs["cpu"]
    print(json.dumps({
        "card": card, "cuda_libraries": cuda_lib, "gpu": gpu, "cpu": cpu,
        "gpu_vs_cpu": round(gpu["tokens_per_second"] / cpu["tokens_per_second"], 2),
    }, indent=2))
    return 0 if gpu["device"] == "cuda" and "Paris" in gpu["text"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
