"""QLoRA and 8-bit LoRA: the base model's linear layers loaded through bitsandbytes (4-bit nf4/fp4 or
8-bit), frozen, and prepared for k-bit training; only the LoRA adapter trains. bitsandbytes runs on the
CPU too (its ``libbitsandbytes_cpu`` kernels need AVX2; without them it falls back to plain torch)."""

from __future__ import annotations

from typing import Any

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
