"""The GGUF provider: quantized llama.cpp models, read with ``gguf`` and run with llama-cpp-python."""

from __future__ import annotations

import contextlib
import ctypes
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..base import BaseProvider
from ..common.cpus import CpuWatch, cpu_budget
from ..common.gguf_header import GGUFHeader, read_gguf
from ..common.hub import hub_file, parse_hub_reference
from ..errors import ConfigurationError, ModelAccessError, ProviderError
from ..log import logger

SUPPORTED_MODEL_CLASSES = ("AutoModelForCausalLM",)
#: llama.cpp's own count, logged as it places the weights: "offloaded 31/31 layers to GPU"
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


@contextlib.contextmanager
def _llama_log(llama_cpp: Any) -> Iterator[list[str]]:
    """Collect what llama.cpp logs (it prints nothing with verbose=False); its own callback after."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def collect(level: int, text: bytes, user_data: Any) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def _mapped_library(prefix: str) -> str | None:
    """The path of the loaded shared library whose file name starts with ``prefix`` (/proc/self/maps)."""
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)  # address, perms, offset, device, inode, path
            path = fields[5].strip() if len(fields) == 6 else ""
            if path.startswith("/") and path.rsplit("/", 1)[-1].startswith(prefix):
                return path
    return None


def ggml_devices(llama_cpp: Any) -> list[dict[str, str]]:
    """The devices llama.cpp's loaded backends offer (ggml's device registry, read through ctypes).

    The very libggml llama.cpp loaded is opened again, by its path: another copy of the file (pip
    installs libggml.so and libggml.so.0 as two files) would be a second registry with no backends."""
    loaded = _mapped_library("libggml.so") or str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so")
    lib = ctypes.CDLL(loaded)
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        devices.append({
            "name": (lib.ggml_backend_dev_name(dev) or b"").decode(),
            "description": (lib.ggml_backend_dev_description(dev) or b"").decode().strip(),
            "type": _DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "other"),
        })
    return devices


def cpu_backend_library() -> str | None:
    """Which build of llama.cpp's CPU backend this process runs (libggml-cpu-haswell.so, say)."""
    path = _mapped_library("libggml-cpu")
    return path.rsplit("/", 1)[-1] if path else None


class GGUFTokenizer:
    """Encodes and decodes with a GGUF model's own vocabulary (llama.cpp, vocabulary only)."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._vocab.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True))

    def decode(self, ids: list[int]) -> str:
        return bytes(self._vocab.detokenize(list(ids))).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return int(self._vocab.n_vocab())


class GGUFProvider(BaseProvider):
    name = "gguf"
    actions = ("validate", "load", "export")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.n_ctx = int(self.config.get("n_ctx", 2048))
        # llama.cpp's own default is half the host's cores (it assumes hyper-threads): on a 2-core host that
        # halves generation speed (measured: 50 vs 96 tokens/s). Use the job's CPU budget (its cpuset and
        # quota), and step down while other processes take some of it: ggml's threads spin at every
        # barrier, so one thread too many is a collapse, not a slowdown (see common.cpus). A fixed
        # n_threads in provider_config turns that off.
        self.fixed_threads = int(self.config["n_threads"]) if self.config.get("n_threads") else None
        self.n_threads = self.fixed_threads or cpu_budget()
        self._watch: CpuWatch | None = None
        self.seed = int(self.config.get("seed", 0))
        self._readers: dict[Path, GGUFHeader] = {}

    # -- where the file is ------------------------------------------------------------------
    def resolve_path(self, model_id: str) -> Path:
        path = Path(model_id)
        if path.exists():
            if path.is_dir():
                files = sorted(path.glob("*.gguf"))
                if len(files) != 1:
                    raise ModelAccessError(
                        f"{model_id} is a folder with {len(files)} .gguf files; the gguf provider needs one file.",
                        "Pass the .gguf file itself with --model.",
                    )
                return files[0]
            return path
        ref = parse_hub_reference(model_id)
        if ref is not None:
            return Path(hub_file(ref))
        raise ModelAccessError(
            f"Model file not found: {model_id}",
            "Check the path, or pass a hub reference such as org/repo:model.Q4_K_M.gguf.",
        )

    def _check_model_class(self, model_class: str) -> None:
        if model_class not in SUPPORTED_MODEL_CLASSES:
            raise ProviderError(
                f"The gguf provider does not support model_class {model_class!r}. "
                f"Supported: {list(SUPPORTED_MODEL_CLASSES)}",
                "Use --model-class AutoModelForCausalLM, or another provider.",
            )

    def _read(self, path: Path) -> GGUFHeader:
        """Parse once per file and job: validate and describe share the header."""
        key = path.resolve()
        if key not in self._readers:
            self._readers[key] = read_gguf(path)
        return self._readers[key]

    # -- the protocol -----------------------------------------------------------------------
    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        self._check_model_class(model_class)
        self._read(self.resolve_path(model_id))
        return True

    def describe_model(self, model_id: str, model_class: str) -> dict[str, Any]:
        path = self.resolve_path(model_id)
        header = self._read(path)
        arch = header.get("general.architecture")
        tokens = header.get("tokenizer.ggml.tokens")
        return {
            "path": str(path),
            "name": header.get("general.name"),
            "architecture": arch,
            "parameters": header.parameters,
            "tensors": len(header.tensors),
            "quantization": header.file_type_name,
            "context_length": header.get(f"{arch}.context_length") if arch else None,
            "vocab_size": len(tokens) if tokens is not None else None,
            "file_size": header.file_size,
            "gguf_version": header.version,
            "has_chat_template": header.get("tokenizer.chat_template") is not None,
        }

    def load_model(
        self,
        model_id: str,
        model_class: str,
        quantization_config: Any = None,
        device_map: str = "auto",
        **kwargs: Any,
    ) -> Any:
        self._check_model_class(model_class)
        if quantization_config:
            raise ConfigurationError(
                "GGUF models are already quantized; quantization_config does not apply.",
                "Remove quantization_config, or pick a differently quantized .gguf file.",
            )
        path = self.resolve_path(model_id)
        import llama_cpp

        # With backends built as modules (the cuda image), this loads them: CUDA only where a driver is.
        gpu = device_map != "cpu" and bool(llama_cpp.llama_supports_gpu_offload())
        logger.info("loading %s with llama.cpp on the %s", path.name, "GPU" if gpu else "CPU")
        log: list[str] = []
        threads = kwargs.get("n_threads", self.n_threads)
        if self.fixed_threads is None and "n_threads" not in kwargs and not gpu:
            self._watch = CpuWatch(self.n_threads)  # its first look spans the load
        try:
            with _llama_log(llama_cpp) as log:
                model = llama_cpp.Llama(
                    model_path=str(path),
                    n_gpu_layers=-1 if gpu else 0,
                    n_ctx=int(kwargs.get("n_ctx", self.n_ctx)),
                    n_threads=threads,
                    n_threads_batch=threads,
                    seed=self.seed,
                    verbose=False,
                )
        except ValueError as exc:
            # llama.cpp says why in its log (an out-of-memory GPU, a bad tensor), not in the exception
            why = [line.strip() for line in log if re.search(r"error|failed|unable|out of memory", line, re.I)]
            detail = f" ({'; '.join(why[-2:])[:300]})" if why else ""
            raise ModelAccessError(f"llama.cpp could not load {path.name}: {exc}{detail}",
                                   "Check the file." if not gpu else
                                   "Check the file, or run on the CPU (--gpus none) to see whether the GPU is why.") from None
        # llama.cpp logs the count only where a GPU backend is loaded; else none of the blocks (and
        # not the output layer, which it counts as one more) left the CPU.
        offloaded = next((m for m in map(_OFFLOADED.search, log) if m), None)
        arch = self._read(path).get("general.architecture")
        blocks = self._read(path).get(f"{arch}.block_count")
        layers = int(offloaded.group(2)) if offloaded else int(blocks) + 1 if blocks is not None else None
        model._mf_device = "cuda" if gpu and offloaded and int(offloaded.group(1)) > 0 else "cpu"
        model._mf_backend = {
            "devices": ggml_devices(llama_cpp),
            "layers_offloaded": int(offloaded.group(1)) if offloaded else 0,
            "layers": layers,
            "cpu_backend": cpu_backend_library(),
        }
        return model

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> GGUFTokenizer:
        import llama_cpp

        path = self.resolve_path(model_id)
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        return GGUFTokenizer(vocab)

    # -- hooks ------------------------------------------------------------------------------
    def device_of(self, model: Any) -> str:
        return str(getattr(model, "_mf_device", "cpu"))

    def backend_of(self, model: Any) -> dict[str, Any]:
        """What ran the model: llama.cpp's devices, how many layers went to the GPU, the CPU build."""
        return dict(getattr(model, "_mf_backend", {}))

    def generate(self, model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int,
                 temperature: float) -> dict[str, Any]:
        import llama_cpp

        prompt_tokens = tokenizer.encode(prompt)
        started = time.perf_counter()
        fit = self.thread_fitter(model)
        fit(wait=True)  # before the prompt's batch: a wrong count there can cost seconds

        def refit(ids: Any, logits: Any) -> bool:  # called per token; never stops the generation
            fit()
            return False

        out = model.create_completion(
            prompt,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_k=1 if temperature == 0 else 40,
            seed=self.seed,
            stopping_criteria=llama_cpp.StoppingCriteriaList([refit]),
        )
        seconds = time.perf_counter() - started
        new_tokens = int(out["usage"]["completion_tokens"])
        return {
            "text": out["choices"][0]["text"],
            "prompt_tokens": len(prompt_tokens),
            "new_tokens": new_tokens,
            "finish_reason": out["choices"][0].get("finish_reason"),
            "seconds": round(seconds, 4),
            "tokens_per_second": round(new_tokens / seconds, 2) if seconds > 0 else None,
            "threads": getattr(model, "n_threads", None),
            "cpu_budget": self.n_threads if self.fixed_threads is None else None,
        }

    def generate_stream(self, model: Any, tokenizer: Any, *, messages: list[dict[str, str]] | None = None,
                        prompt: str | None = None, max_tokens: int, temperature: float, top_p: float = 1.0,
                        should_stop: Any = lambda: False) -> Iterator[str | int]:
        """Serve's generation: llama-cpp-python's chat completion (the GGUF's chat template, rendered in its
        sandboxed Jinja environment) or completion, streamed; threads refitted per token."""
        fit = self.thread_fitter(model)
        fit(wait=True)
        sampling: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                                    "top_k": 1 if temperature == 0 else 40, "seed": self.seed, "stream": True}
        if messages is not None:
            chunks = model.create_chat_completion(messages=messages, **sampling)
            text_of = lambda chunk: chunk["choices"][0].get("delta", {}).get("content")  # noqa: E731
        else:
            yield len(tokenizer.encode(prompt or ""))
            chunks = model.create_completion(prompt, **sampling)
            text_of = lambda chunk: chunk["choices"][0].get("text")  # noqa: E731
        try:
            for chunk in chunks:
                text = text_of(chunk)
                if text is None:  # the role's chunk, the finish reason's chunk
                    continue
                yield text
                if should_stop():
                    return
                fit()
        finally:
            chunks.close()

    def thread_fitter(self, model: Any) -> Any:
        """A callable that sets the model's thread count to what the CPUs can give now (see CpuWatch),
        cheap enough to call per token; a no-op where the count is fixed or the model runs on a GPU."""
        watch = self._watch
        if watch is None:
            return lambda wait=False: getattr(model, "n_threads", None)
        import llama_cpp

        def fit(wait: bool = False) -> int:
            threads = watch.threads_now(wait=wait)
            if threads != model.n_threads:
                llama_cpp.llama_set_n_threads(model.ctx, threads, threads)
                model.n_threads = model.n_threads_batch = threads
            return threads

        return fit
