"""The export action's steps, each run in the image whose stack it needs (mf export drives them):

- ``merge`` (huggingface image): the base model plus the LoRA adapter, merged with peft's
  ``merge_and_unload`` (rsLoRA and DoRA scaling included), saved with the tokenizer and its chat template.
- ``convert`` (huggingface image): llama.cpp's ``convert_hf_to_gguf.py`` with the ``gguf-py`` of the
  same llama.cpp commit as the gguf image's runtime, mounted read-only at ``CONVERTER_DIR``.
- ``quantize`` (gguf image): llama.cpp's quantizer (``llama_model_quantize``), several types from one
  f16 file, then each output validated and described with the gguf provider.

Every file is written under the job's output folder (mf's work folder), never into the final place.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, ModelAccessError, ProviderError

CONVERTER_DIR = Path("/opt/llama-convert")
#: what convert_hf_to_gguf.py writes: f16 always (every quantized type is made from it), f32 on request
CONVERTER_TYPE = "f16"
CONVERTER_TYPES = ("f16", "f32")
#: types llama.cpp's quantizer makes from the f16 GGUF (each is llama_cpp.LLAMA_FTYPE_MOSTLY_<TYPE>)
QUANTIZER_TYPES = ("q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k",
                   "q5_0", "q5_1", "q4_0", "q4_1")
EXPORT_TYPES = (*CONVERTER_TYPES, *QUANTIZER_TYPES)


def run_export(provider: Any, job: Any, events: Any) -> dict[str, Any]:
    options = dict(job.options.get("export") or {})
    step = options.get("step")
    if not job.output_dir:
        raise ConfigurationError("An export step needs an output folder.")
    work = Path(job.output_dir)
    if step == "merge_convert":
        merged = merge(provider, job, Path(options["adapter"]) if options.get("adapter") else None, work, events)
        outputs = [o for outtype in options.get("outtypes", [CONVERTER_TYPE]) for o in convert(merged, work, outtype, events)]
        return {"step": step, "outputs": outputs}
    if step == "quantize":
        return {"step": step, "outputs": quantize(provider, Path(job.model), work, list(options["types"]), events)}
    raise ConfigurationError(f"Unknown export step {step!r}.")


def merge(provider: Any, job: Any, adapter: Path | None, work: Path, events: Any) -> Path:
    """Load the base, apply the adapter, merge it into the weights, save model and tokenizer to work/merged."""
    events.stage("merge", f"{job.model} + {adapter}" if adapter else f"{job.model} (no adapter)")
    started = time.perf_counter()
    model = provider.load_model(job.model, job.model_class, device_map="cpu", dtype="float32")
    tokenizer = provider.load_tokenizer(job.model)  # the base's, with its chat template
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        except OSError as exc:
            raise ModelAccessError(f"Cannot read the adapter {adapter}: {exc}".split("\n")[0][:240],
                                   "Check that its files are readable (chmod a+r).") from None
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ProviderError(f"The adapter {adapter.name} does not fit the base model: "
                                f"{str(exc).splitlines()[0][:200]}",
                                "Export with the base model the adapter was trained on (--model).") from None
    merged = work / "merged"
    model.save_pretrained(str(merged), safe_serialization=True)
    tokenizer.save_pretrained(str(merged))
    events.metric("merge_seconds", time.perf_counter() - started)
    return merged


def _short_converter_error(stderr: str) -> str:
    # the converter logs through `logging` ("ERROR:hf-to-gguf:..."): keep the message
    lines = [re.sub(r"^(ERROR|WARNING|INFO|CRITICAL):[\w.-]+:", "", line.strip()) for line in stderr.strip().splitlines()
             if line.strip()]
    for line in reversed(lines):
        if re.match(r"^(\w+Error|NotImplementedError|KeyError|ValueError)\b", line) or "not supported" in line:
            return line[:240]
    return (lines[-1] if lines else "no output")[:240]


def convert(merged: Path, work: Path, outtype: str, events: Any) -> list[dict[str, Any]]:
    """convert_hf_to_gguf.py on the merged model, as a child process (its own imports, its own gguf-py)."""
    script = CONVERTER_DIR / "convert_hf_to_gguf.py"
    if not script.exists():
        raise ConfigurationError(f"llama.cpp's converter is not mounted at {CONVERTER_DIR}.", "Run the export with mf export.")
    target = work / f"model-{outtype}.gguf"
    events.stage("convert", f"convert_hf_to_gguf.py --outtype {outtype}")
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{CONVERTER_DIR / 'gguf-py'}{os.pathsep}{CONVERTER_DIR}",
           "NO_LOCAL_GGUF": ""}
    proc = subprocess.run(  # noqa: S603 - the pinned converter, our own arguments
        [sys.executable, str(script), str(merged), "--outfile", str(target), "--outtype", outtype],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0 or not target.exists():
        sys.stderr.write(proc.stderr[-4000:])
        reason = _short_converter_error(proc.stderr)
        hint = ("llama.cpp cannot convert this architecture; export to a Hugging Face folder instead, or use a "
                "model llama.cpp supports." if "not supported" in reason.lower()
                else "Rerun with MF_DEBUG=1 to see the converter's output.")
        raise ProviderError(f"llama.cpp's converter failed: {reason}", hint)
    seconds = time.perf_counter() - started
    events.metric("convert_seconds", seconds)
    return [{"type": outtype, "file": target.name, "bytes": target.stat().st_size, "seconds": round(seconds, 2)}]


def quantize(provider: Any, source: Path, work: Path, types: list[str], events: Any) -> list[dict[str, Any]]:
    """Each requested k-quant (or legacy quant) from the f16 file, then every output validated and described."""
    import llama_cpp

    outputs: list[dict[str, Any]] = []
    for qtype in types:
        ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}", None)
        if ftype is None:
            raise ConfigurationError(f"This llama.cpp build has no quantization type {qtype!r}.")
        target = work / f"model-{qtype}.gguf"
        events.stage("quantize", f"{source.name} -> {target.name}")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = len(os.sched_getaffinity(0))
        started = time.perf_counter()
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
        if code != 0 or not target.exists():
            raise ProviderError(f"llama.cpp's quantizer failed for {qtype} (code {code}).",
                                "Rerun with MF_DEBUG=1 to see llama.cpp's log.")
        outputs.append({"type": qtype, "file": target.name, "bytes": target.stat().st_size,
                        "seconds": round(time.perf_counter() - started, 2)})
    described = []
    for path in sorted(work.glob("model-*.gguf")):  # the quantized files, the f16 and any other converter output
        try:
            provider.validate_model_access(str(path), "AutoModelForCausalLM")
        except ModelAccessError as exc:
            raise ProviderError(f"The exported {path.name} does not validate: {exc.message}") from None
        described.append({"file": path.name, **provider.describe_model(str(path), "AutoModelForCausalLM")})
    made = {o["file"] for o in outputs}
    return [{**o, **next((d for d in described if d["file"] == o["file"]), {})} for o in outputs] + [
        d for d in described if d["file"] not in made]
