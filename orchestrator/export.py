"""`mf export`: a fine-tune (or a base model) to GGUF, each step in the image whose stack it needs.

1. merge + convert, in the huggingface image: peft merges the LoRA adapter into the base, then llama.cpp's
   convert_hf_to_gguf.py (from the same hash-locked llama-cpp-python sdist the gguf image compiles, so one
   llama.cpp commit writes and reads the file) writes an f16 GGUF;
2. quantize + describe, in the gguf image: llama.cpp's quantizer makes each requested type from the f16,
   and the gguf provider validates and describes every output;
3. on the host: the outputs are moved into the output folder, then an Ollama Modelfile, then
   manifest.json last. Intermediates live in ``<output>/.mf-export-work`` and go in every case; the output
   folder is locked for the export's life, as for a training run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.common.gguf_header import read_header
from providers.errors import ConfigurationError, ModelAccessError
from providers.runtime.checkpoints import sha256_file
from providers.runtime.export import CONVERTER_DIR, CONVERTER_TYPE, CONVERTER_TYPES, EXPORT_TYPES, QUANTIZER_TYPES

from . import cache_dir, images, runstate
from .checks import check_job_user_can_read
from .jobs import EventSink, JobRequest, run_job

WORK_DIR = ".mf-export-work"
MANIFEST = "manifest.json"
KIND = "gguf-export"
ADAPTER_IN_JOB = "/data/adapter"
#: bits per weight of each type, for the disk-space check (upper bounds; k-quants fall back to wider types)
BITS = {"f32": 32, "f16": 16, "q8_0": 8.5, "q6_k": 6.6, "q5_k_m": 5.7, "q5_k_s": 5.5, "q5_0": 5.5,
        "q5_1": 6, "q4_k_m": 5.5, "q4_k_s": 5.5, "q4_0": 5.5, "q4_1": 6, "q3_k_l": 5.5, "q3_k_m": 5.5,
        "q3_k_s": 5.5, "q2_k": 5.5}


@dataclass
class ExportRequest:
    run: Path | None
    model: Path | None
    adapter: Path | None
    quantize: list[str]
    output: Path
    keep_intermediate: bool = False
    overwrite: bool = False
    registry: str | None = None


def parse_types(text: str) -> list[str]:
    types: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in EXPORT_TYPES:
            raise ConfigurationError(f"Unknown quantization type {name!r}.",
                                     f"Valid types: {', '.join(EXPORT_TYPES)}.")
        if name not in types:
            types.append(name)
    if not types:
        raise ConfigurationError("--quantize names no type.", f"Valid types: {', '.join(EXPORT_TYPES)}.")
    return types


def _folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def resolve_inputs(req: ExportRequest) -> tuple[Path, Path | None, dict[str, Any]]:
    """The base model folder, the adapter folder (or None), and what the export's manifest says of them."""
    source: dict[str, Any] = {}
    base, adapter = req.model, req.adapter
    if req.run is not None:
        run = req.run.expanduser()
        manifest_path = run / "manifest.json"
        if not manifest_path.is_file():
            raise ConfigurationError(f"{run} is not a finished training run (it has no manifest.json).",
                                     "Finish it first (mf run ... train --resume), or pass --model and --adapter.")
        run_manifest = json.loads(manifest_path.read_text())
        adapter = adapter or run / "adapter"
        recorded = run_manifest.get("model_source")
        if base is None:
            if not recorded:
                raise ConfigurationError(f"The run in {run} does not record its base model's folder.",
                                         "Pass the base model with --model.")
            base = Path(recorded)
        source.update(run=str(run.resolve()), run_manifest_sha256=sha256_file(manifest_path))
    if base is None:
        raise ConfigurationError("Nothing to export.", "Pass a finished run folder, or --model (and --adapter).")
    base = base.expanduser()
    if not (base / "config.json").is_file():
        missing = "is missing" if not base.exists() else "has no config.json"
        raise ModelAccessError(f"The base model {base} {missing}.",
                               "Pass the Hugging Face folder the adapter was trained on with --model.")
    if adapter is not None:
        adapter = adapter.expanduser()
        if not (adapter / "adapter_config.json").is_file():
            raise ModelAccessError(f"{adapter} is not a LoRA adapter (no adapter_config.json).",
                                   "Pass the adapter/ folder of a finished run with --adapter.")
        check_exportable_task(adapter)
        source.update(adapter=str(adapter.resolve()), adapter_sha256=_folder_hashes(adapter))
    source.update(base_model=str(base.resolve()), base_model_sha256=_folder_hashes(base))
    for folder in (base, adapter):
        if folder is not None:
            check_job_user_can_read(folder.resolve())
    return base.resolve(), adapter.resolve() if adapter else None, source


#: adapter task types -> the training task that made them, for the ones GGUF export does not carry
NOT_EXPORTABLE = {"SEQ_2_SEQ_LM": "summarization", "QUESTION_ANS": "question-answering",
                  "SEQ_CLS": "sequence classification", "TOKEN_CLS": "token classification"}


def check_exportable_task(adapter: Path) -> None:
    """GGUF export is for text generation: an adapter trained for another task is refused in one line
    (llama.cpp runs no question-answering head, and its converter does not merge seq2seq LoRA adapters)."""
    try:
        task_type = json.loads((adapter / "adapter_config.json").read_text()).get("task_type")
    except (OSError, ValueError):
        return  # the converter's own check reports an unreadable adapter config
    task = NOT_EXPORTABLE.get(str(task_type))
    if task:
        raise ConfigurationError(
            f"{adapter} was trained for {task} (peft task type {task_type}); mf export makes GGUF files for "
            "llama.cpp's text generation, which runs no such model head.",
            "Use the adapter with transformers and peft (`mf run -p huggingface load` of the merged model), "
            "or export a text-generation run.")


def _parameters(base: Path) -> int:
    """The base model's parameter count, from its safetensors headers (no weights read)."""
    total = 0
    for weights in base.glob("*.safetensors"):
        with weights.open("rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
    return total


def check_space(out: Path, base: Path, types: list[str], keep: bool) -> None:
    params = _parameters(base)
    need = params * 4 + params * 2 + sum(int(params * BITS[t] / 8) for t in types if t != CONVERTER_TYPE)
    need = int(need * 1.1)
    free = shutil.disk_usage(out).free
    if need > free:
        raise ConfigurationError(
            f"Not enough space in {out} for the export: it needs about {need / 1e6:.0f} MB (a merged copy, an f16 "
            f"GGUF and {len(types)} output(s) of a {params / 1e6:.0f}M-parameter model), and {free / 1e6:.0f} MB are free.",
            "Free some space or pick another --output.",
        )


def converter_dir(progress: images.Progress) -> tuple[Path, dict[str, str]]:
    """llama.cpp's converter and its gguf-py, taken from the hash-checked llama-cpp-python sdist the gguf
    image compiles (staged in its wheelhouse), extracted once per sdist."""
    spec = images.image_spec("gguf", "cpu")
    wheels = images.stage_wheelhouse(spec, progress)
    [sdist] = sorted(wheels.glob("llama_cpp_python-*.tar.gz"))
    digest = sha256_file(sdist)
    target = cache_dir() / "llama-convert" / digest[:16]
    info = {"llama_cpp_python": sdist.name.removeprefix("llama_cpp_python-").removesuffix(".tar.gz"),
            "sdist_sha256": digest}
    if (target / ".complete").exists():
        return target, info
    shutil.rmtree(target, ignore_errors=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 3)
            if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"] or not parts[3].startswith(wanted):
                continue
            if not (member.isfile() or member.isdir()):
                continue
            member.name = parts[3]
            if ".." in Path(member.name).parts:
                continue
            # tar filters came with Python 3.11.4 (Debian 12's python3 is 3.11.2): the checks above stand in
            if hasattr(tarfile, "data_filter"):
                tar.extract(member, partial, filter="data")
            else:
                tar.extract(member, partial)  # noqa: S202
    for path in [partial, *partial.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    os.replace(partial, target)
    (target / ".complete").touch()
    progress(f"llama.cpp converter from {sdist.name} in {target}")
    return target, info


#: Ollama TEMPLATE and stop tokens for the chat formats the exported models' templates use
OLLAMA_TEMPLATES = {
    "chatml": ("<|im_start|>", '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
                               '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
                               '<|im_start|>assistant\n', ["<|im_start|>", "<|im_end|>"]),
    "llama3": ("<|start_header_id|>", '{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}'
                                      '<|eot_id|>{{ end }}{{- range .Messages }}<|start_header_id|>{{ .Role }}'
                                      '<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}'
                                      '<|start_header_id|>assistant<|end_header_id|>\n\n', ["<|eot_id|>"]),
    "gemma": ("<start_of_turn>", '{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model'
                                 '{{ else }}{{ .Role }}{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}'
                                 '<start_of_turn>model\n', ["<end_of_turn>"]),
    "mistral": ("[INST]", '{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }} [/INST]'
                          '{{ else }}{{ .Content }}</s>{{ end }}{{ end }}', ["[INST]", "</s>"]),
}


def modelfile(gguf: Path, model_file: str) -> str:
    """An Ollama Modelfile for ``model_file``: its chat template in Ollama's Go template syntax when the
    model's Jinja template is of a known family, with that family's stop tokens."""
    header = read_header(gguf)
    template = header.get("tokenizer.chat_template")
    lines = ["# Written by mf export. `ollama create NAME -f Modelfile` in this folder.", f"FROM ./{model_file}"]
    family = next((name for name, (marker, _, _) in OLLAMA_TEMPLATES.items()
                   if isinstance(template, str) and marker in template), None)
    if family is None:
        lines.append("# The model's chat template is of no family mf knows; Ollama reads it from the GGUF.")
        return "\n".join(lines) + "\n"
    _, go_template, stops = OLLAMA_TEMPLATES[family]
    lines.append(f'TEMPLATE """{go_template}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def run_export(req: ExportRequest, on_event: EventSink, on_build: images.Progress,
               on_layer: Callable[[dict[str, Any]], None] = lambda event: None) -> dict[str, Any]:
    types = list(req.quantize)
    base, adapter, source = resolve_inputs(req)
    out = req.output.expanduser().absolute()
    existing = out / MANIFEST
    if existing.is_file() and not req.overwrite:
        raise ConfigurationError(f"{out} already holds an export.", "Pick another --output, or pass --overwrite.")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"Cannot create {out}: {exc.strerror}.", "Pick a folder you can write to.") from None
    lock = runstate.OutputLock(out).acquire({"provider": "export", "action": "gguf"})
    work = out / WORK_DIR
    try:
        check_space(out, base, types, req.keep_intermediate)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        converter, llama = converter_dir(on_build)
        steps: dict[str, float] = {}
        started = time.perf_counter()
        merge_job = run_job(JobRequest(
            provider="huggingface", action="export", model=str(base), output=work, registry=req.registry,
            options={"export": {"step": "merge_convert", "adapter": ADAPTER_IN_JOB if adapter else None,
                                "outtypes": [CONVERTER_TYPE] + [t for t in types if t in CONVERTER_TYPES
                                                                and t != CONVERTER_TYPE]}},
            mounts=[(converter, str(CONVERTER_DIR), True)] + ([(adapter, ADAPTER_IN_JOB, True)] if adapter else []),
        ), on_event, on_build, on_layer)
        steps["merge_and_convert"] = round(time.perf_counter() - started, 2)
        quantized = [t for t in types if t in QUANTIZER_TYPES]
        started = time.perf_counter()
        quant_job = run_job(JobRequest(
            provider="gguf", action="export", model=str(work / "model-f16.gguf"), output=work, registry=req.registry,
            options={"export": {"step": "quantize", "types": quantized}},
        ), on_event, on_build, on_layer)
        steps["quantize_and_describe"] = round(time.perf_counter() - started, 2)
        described = {o["file"]: o for o in quant_job["outputs"]}
        files = []
        for qtype in types:
            name = f"model-{qtype}.gguf"
            info = described.get(name, {})
            files.append({"type": qtype, "file": name, "bytes": (work / name).stat().st_size,
                          "sha256": sha256_file(work / name), "parameters": info.get("parameters"),
                          "quantization": info.get("quantization"), "seconds": info.get("seconds")})
        model_file = next((f["file"] for f in files if f["type"] in QUANTIZER_TYPES), files[0]["file"])
        (work / "Modelfile").write_text(modelfile(work / "model-f16.gguf", model_file))
        keep = [f["file"] for f in files] + ["Modelfile"]
        if req.keep_intermediate:
            keep += ["model-f16.gguf", "merged"]
        if existing.exists():  # --overwrite: the old export goes first, its manifest before its files
            existing.unlink()
        for name in dict.fromkeys(keep):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(work / name, target)
        manifest = {
            "kind": KIND, "format": "gguf", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": source, "llama_cpp": llama, "files": files, "modelfile": "Modelfile",
            "parameters": next((f["parameters"] for f in files if f["parameters"]), None),
            "steps_seconds": steps, "merge_outputs": merge_job.get("outputs"),
        }
        partial = out / f".{MANIFEST}.partial"
        partial.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(partial, existing)
        return {"output": str(out), "files": files, "steps_seconds": steps, "modelfile": str(out / "Modelfile")}
    except BaseException:
        if created:
            lock.release()
            with contextlib.suppress(OSError):
                shutil.rmtree(out)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        lock.release()
