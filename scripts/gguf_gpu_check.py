"""Run the gguf provider natively on a GPU machine (no Docker there) with the llama-cpp-python build
taken out of the gguf cuda image, and print what a user would ask: the card, the layers offloaded,
tokens/s on the GPU against the CPU on the same machine, and the answer.

    python scripts/gguf_gpu_check.py --site SITE --model SmolLM2-135M-Instruct.Q4_1.gguf
    python scripts/gguf_gpu_check.py --site SITE --random-like .gpu/model-files --converter .gpu/convert

The second form is for a GPU machine the 98 MB model cannot travel to (64 MiB here): a model of the same
shape (FILES: config.json and the tokenizer) with seeded random weights, converted by llama.cpp's converter
(DIR: what `mf export` uses) and quantized to Q4_1 by this build, so the speed is the demo model's and the
text is noise (the CPU and the GPU are compared token by token instead).

SITE holds llama_cpp/ (.gpu/llama.tar.xz from `make gpu-bundle`, unpacked; scripts/gpu-check.sh runs this there). The CUDA 13
runtime and cuBLAS are loaded from the first nvidia/cu13/lib on sys.path (a CUDA 13 torch's), since the
image's RUNPATH (/opt/venv/...) does not exist outside it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
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


def random_gguf(files: Path, converter: Path) -> Path:
    """A Q4_1 GGUF of ``files``' shape with seeded random weights (see the module's docstring)."""
    import tempfile

    import llama_cpp

    sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_train_check import make_model

    work = Path(tempfile.mkdtemp(prefix="mf-gguf-"))
    hf = make_model(files, work / "hf")
    f16 = work / "model-f16.gguf"
    env = {**os.environ, "PYTHONPATH": f"{converter / 'gguf-py'}{os.pathsep}{converter}", "NO_LOCAL_GGUF": ""}
    subprocess.run([sys.executable, str(converter / "convert_hf_to_gguf.py"), str(hf), "--outfile", str(f16),
                    "--outtype", "f16"], check=True, env=env, capture_output=True)
    target = work / "model-q4_1.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(target).encode(), params) != 0:
        raise SystemExit("llama.cpp's quantizer failed")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="folder holding llama_cpp/ from the cuda image")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--random-like", type=Path, help="config.json and tokenizer of the model to imitate")
    parser.add_argument("--converter", type=Path, help="llama.cpp's convert_hf_to_gguf.py and gguf-py (with --random-like)")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if not args.site or not (args.model or (args.random_like and args.converter)):
        parser.error("--site and --model (or --random-like and --converter) are needed")
    sys.path[:0] = [str(args.site), str(ROOT)]
    cuda_lib = preload_cuda_libraries()
    import llama_cpp

    # The image's build looks for its backend modules where the image keeps them (GGML_BACKEND_DIR,
    # /opt/venv/...): here they are loaded from the package's own lib/ before llama.cpp looks.
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(lib_dir / "libggml.so"))
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path(str(lib_dir).encode())
    print(f"CUDA libraries from {cuda_lib}; llama.cpp GPU offload: {bool(llama_cpp.llama_supports_gpu_offload())}",
          file=sys.stderr)
    if args.random_like:
        args.model = random_gguf(args.random_like, args.converter)
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
    sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_train_check import card as gpu_card

    card = gpu_card()
    gpu, cpu = runs["auto"], runs["cpu"]
    print(json.dumps({
        "card": card, "cuda_libraries": cuda_lib, "model": str(args.model), "weights": "random" if args.random_like
        else "real", "gpu": gpu, "cpu": cpu,
        "gpu_vs_cpu": round(gpu["tokens_per_second"] / cpu["tokens_per_second"], 2),
        "same_text_on_both": gpu["text"] == cpu["text"],
    }, indent=2))
    answered = "Paris" in gpu["text"] if not args.random_like else bool(gpu["text"])
    return 0 if gpu["device"] == "cuda" and answered else 1


if __name__ == "__main__":
    raise SystemExit(main())
