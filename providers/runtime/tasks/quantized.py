"""QLoRA and 8-bit LoRA: the base model's linear layers loaded through bitsandbytes (4-bit nf4/fp4 or
8-bit), frozen, and prepared for k-bit training; only the LoRA adapter trains. bitsandbytes runs on the
CPU too (its ``libbitsandbytes_cpu`` kernels need AVX2; without them it falls back to plain torch)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

#: the compute dtype of 4-bit layers for each training precision
COMPUTE_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def bnb_config(quant: str, precision: str, double_quant: bool) -> dict[str, Any]:
    """The ``quantization_config`` (BitsAndBytesConfig's fields) for ``quant`` (nf4, fp4, int8)."""
    if quant == "int8":
        return {"load_in_8bit": True}
    return {"load_in_4bit": True, "bnb_4bit_quant_type": quant, "bnb_4bit_use_double_quant": double_quant,
            "bnb_4bit_compute_dtype": COMPUTE_DTYPE[precision]}


def describe(quant: str) -> str:
    return "8-bit (LLM.int8)" if quant == "int8" else f"4-bit {quant}"


def quantized_layers(model: Any) -> dict[str, int]:
    """How many of the model's layers bitsandbytes holds, by class (Linear4bit, Linear8bitLt)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        name = type(module).__name__
        if name in ("Linear4bit", "Linear8bitLt"):
            counts[name] = counts.get(name, 0) + 1
    return counts


def cpu_backend_note() -> str | None:
    """On the CPU: a note when bitsandbytes could not load its native CPU library (no AVX2) and
    runs on plain torch instead; None when the library is there (or a GPU does the work)."""
    import torch

    if torch.cuda.is_available():
        return None
    try:
        from bitsandbytes import cextension

        lib = getattr(cextension, "lib", None)
        native = lib is not None and "Mock" not in type(lib).__name__ and "ErrorHandler" not in type(lib).__name__
    except Exception:  # noqa: BLE001 - any failure to import the native part means the torch fallback
        native = False
    if native:
        return None
    return ("bitsandbytes' native CPU library did not load (it needs AVX2 and FMA): quantized layers run on "
            "plain torch, correct but slower")


@contextlib.contextmanager
def frugal_loading() -> Iterator[None]:
    """Quantizing while loading reads each weight as a float32 tensor and frees it once quantized. glibc keeps
    those freed blocks for reuse, fragmented, so a 4-bit load of SmolLM2-135M peaked at ~780 MB of anonymous
    memory where the model holds ~160 MB (measured), above the float32 model's own load. Within this block
    large allocations are mmap'd (64 KiB up) and go back to the kernel when freed: the peak fell to ~370 MB.
    Afterwards the threshold is 32 MiB (glibc's dynamic maximum, so training allocates from the heap as
    before) and the heap is trimmed. Outside glibc this does nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    try:
        yield
    finally:
        mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        trim(0)


def own_storage(model: Any) -> int:
    """Copy the parameters a quantized model still reads from the safetensors file (embeddings, norms: the
    layers bitsandbytes does not quantize) into memory of their own, and return the bytes copied. safetensors
    maps the whole file once; while any tensor views that mapping, every page of the file the load touched
    stays resident, so a 4-bit model kept the float32 file's ~540 MB in its working set (measured on
    SmolLM2-135M). Once nothing views it, the mapping goes."""
    import torch

    copied = 0
    with torch.no_grad():  # named_parameters() yields a tied weight once; its one object serves both modules
        for tensor in [*(p for _, p in model.named_parameters()), *(b for _, b in model.named_buffers())]:
            if type(tensor).__name__ in ("Params4bit", "Int8Params") or tensor.device.type != "cpu":
                continue  # bitsandbytes' own storage, already a copy
            tensor.data = tensor.data.clone()
            copied += tensor.numel() * tensor.element_size()
    return copied
