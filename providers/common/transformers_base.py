"""What the transformers-based built-in providers (huggingface, unsloth) share: where a model is
(a local folder, a .gguf file in it, a hub id), the checks of ``validate`` and the facts it reports,
``generate`` and the shared train action. Loading a model and its tokenizer, and the LoRA wrapping,
are each provider's own."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base import BaseProvider
from ..errors import ConfigurationError, ModelAccessError, ProviderError
from .cpus import TorchThreads
from .hub import hub_snapshot, parse_hub_reference

SUPPORTED_MODEL_CLASSES = (
    "AutoModelForCausalLM",
    "AutoModelForSeq2SeqLM",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
)
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


@dataclass
class ModelSource:
    """Where transformers loads from: a folder (local or a hub snapshot), and an optional GGUF file in it."""

    location: str
    gguf_file: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def pretrained_kwargs(self) -> dict[str, Any]:
        return {**({"gguf_file": self.gguf_file} if self.gguf_file else {}), **self.kwargs}


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; ModelAccessError when it is corrupt or cut short."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ModelAccessError(f"{path.name} is too short to be a safetensors file.", "Download the file again.")
        (length,) = struct.unpack("<Q", raw)
        if length <= 0 or 8 + length > size or length > 100_000_000:
            raise ModelAccessError(
                f"{path.name} has a corrupt safetensors header (it claims {length} header bytes; the file has {size}).",
                "Download the weights again.",
            )
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelAccessError(
                f"{path.name} has a corrupt safetensors header (not JSON).", "Download the weights again."
            ) from None
    end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise ModelAccessError(f"{path.name} is truncated: its tensors need {8 + length + end} bytes, the file has {size}.",
                               "Download the weights again.")
    return dict(header)


class TransformersBase(BaseProvider):
    """The base of the huggingface and unsloth providers (see the module's docstring)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.trust_remote_code = bool(self.config.get("trust_remote_code", False))
        self.revision = self.config.get("revision")
        self.dtype = self.config.get("dtype")
        # On the CPU, torch's OpenMP threads spin at barriers like ggml's: as many as the job's CPUs while
        # the machine is idle, fewer while other processes use them (common.cpus).
        self.cpu_threads = TorchThreads(int(self.config["n_threads"]) if self.config.get("n_threads") else None)
        if self.trust_remote_code and not self.revision:
            raise ConfigurationError(
                "trust_remote_code runs the model repository's own Python code; it needs a pinned revision.",
                'Add "revision": "<commit sha>" to provider_config, or drop trust_remote_code.',
            )

    # -- where the model is -----------------------------------------------------------------
    def resolve_source(self, model_id: str) -> ModelSource:
        path = Path(model_id)
        if path.is_dir():
            return ModelSource(str(path))
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelAccessError(
                    f"{path.name} is a single file; the huggingface provider needs a model folder or a .gguf file.",
                    "Pass the folder that holds config.json and the weights.",
                )
            return ModelSource(str(path.parent), gguf_file=path.name)
        ref = parse_hub_reference(model_id)
        if ref is None:
            raise ModelAccessError(
                f"Model not found: {model_id}",
                "Check the path, or pass a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct.",
            )
        folder = hub_snapshot(ref, revision=self.revision)
        return ModelSource(folder, gguf_file=ref.filename if ref.filename and ref.filename.endswith(".gguf") else None)

    def _check_model_class(self, model_class: str) -> Any:
        if model_class not in SUPPORTED_MODEL_CLASSES:
            raise ProviderError(
                f"The huggingface provider does not support model_class {model_class!r}. "
                f"Supported: {list(SUPPORTED_MODEL_CLASSES)}",
                "Pick one of those with --model-class.",
            )
        import transformers

        return getattr(transformers, model_class)

    def _check_folder(self, folder: Path) -> list[Path]:
        config = folder / "config.json"
        if not config.is_file():
            raise ModelAccessError(
                f"{folder} has no config.json, so it is not a transformers model folder.",
                "Pass the folder written by save_pretrained (config.json plus weights).",
            )
        try:
            json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelAccessError(f"{config} is not readable JSON: {exc}", "Fix or re-download config.json.") from None
        weights = sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))
        if not weights:
            raise ModelAccessError(
                f"{folder} has a config.json but no weights (*.safetensors or pytorch_model*.bin).",
                "Download the weights into the folder.",
            )
        for weight in weights:
            if weight.suffix == ".safetensors":
                read_safetensors_header(weight)
        return weights

    def _config(self, source: ModelSource) -> Any:
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(  # nosec B615
                source.location, trust_remote_code=self.trust_remote_code, **source.pretrained_kwargs()
            )
        except (OSError, ValueError) as exc:
            raise ModelAccessError(f"Cannot read the model config of {source.location}: {exc}".split("\n")[0],
                                   "Check the model folder or file.") from None

    # -- the protocol -----------------------------------------------------------------------
    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        auto_cls = self._check_model_class(model_class)
        source = self.resolve_source(model_id)
        if source.gguf_file:
            from .gguf_header import read_gguf

            read_gguf(Path(source.location) / source.gguf_file)
        else:
            self._check_folder(Path(source.location))
        config = self._config(source)
        if type(config) not in auto_cls._model_mapping:
            raise ProviderError(
                f"{config.model_type} models cannot be loaded as {model_class}.",
                "Pick the model class that fits the model (for chat and text models: AutoModelForCausalLM).",
            )
        return True

    def describe_model(self, model_id: str, model_class: str) -> dict[str, Any]:
        auto_cls = self._check_model_class(model_class)
        source = self.resolve_source(model_id)
        config = self._config(source)
        architectures = getattr(config, "architectures", None)
        if not architectures and type(config) in auto_cls._model_mapping:  # a GGUF file's config names none
            architectures = [auto_cls._model_mapping[type(config)].__name__]
        info: dict[str, Any] = {
            "architecture": (architectures or [config.model_type])[0],
            "model_type": config.model_type,
            "vocab_size": getattr(config, "vocab_size", None),
            "context_length": getattr(config, "max_position_embeddings", None),
            "dtype": str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)),
        }
        if source.gguf_file:
            from .gguf_header import read_gguf

            path = Path(source.location) / source.gguf_file
            info["parameters"] = sum(int(t.n_elements) for t in read_gguf(path).tensors)
            info["file_size"] = path.stat().st_size
        else:
            weights = self._check_folder(Path(source.location))
            params = 0
            for weight in weights:
                if weight.suffix == ".safetensors":
                    for key, tensor in read_safetensors_header(weight).items():
                        if key != "__metadata__":
                            n = 1
                            for dim in tensor["shape"]:
                                n *= int(dim)
                            params += n
            info["parameters"] = params or None
            info["file_size"] = sum(w.stat().st_size for w in weights)
            info["weights"] = [w.name for w in weights]
        return info

    # -- hooks ------------------------------------------------------------------------------
    def device_of(self, model: Any) -> str:
        return str(getattr(model, "device", "cpu"))

    def generate(self, model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int,
                 temperature: float) -> dict[str, Any]:
        import torch

        inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature}
        from transformers import StoppingCriteria, StoppingCriteriaList

        on_cpu = model.device.type == "cpu"
        threads = self.cpu_threads

        class Refit(StoppingCriteria):  # type: ignore[misc]
            """Called per token: adjusts the thread count, never stops the generation."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                threads.fit(on_cpu=on_cpu)
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        started = time.perf_counter()
        threads.fit(on_cpu=on_cpu, wait=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 stopping_criteria=StoppingCriteriaList([Refit()]), **sampling)
        seconds = time.perf_counter() - started
        prompt_len = int(inputs["input_ids"].shape[1])
        new_ids = out[0][prompt_len:]
        return {
            "text": tokenizer.decode(new_ids, skip_special_tokens=True),
            "prompt_tokens": prompt_len,
            "new_tokens": int(new_ids.shape[0]),
            "seconds": round(seconds, 4),
            "tokens_per_second": round(int(new_ids.shape[0]) / seconds, 2) if seconds > 0 else None,
            "threads": torch.get_num_threads() if on_cpu else None,
        }

    def generate_stream(self, model: Any, tokenizer: Any, *, messages: list[dict[str, str]] | None = None,
                        prompt: str | None = None, max_tokens: int, temperature: float, top_p: float = 1.0,
                        should_stop: Any = lambda: False) -> Iterator[str | int]:
        """Serve's generation: ``model.generate`` in a thread, its tokens handed over one at a time (a streamer)
        and decoded incrementally; the chat template is the tokenizer's."""
        import queue
        import threading

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        if messages is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise ConfigurationError("This model has no chat template, so it cannot chat.",
                                         "Use /v1/completions with a prompt, or a model with a chat template.")
            inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)
        else:
            inputs = tokenizer(prompt, return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in dict(inputs).items()}
        prompt_len = int(inputs["input_ids"].shape[1])
        yield prompt_len
        handoff: queue.Queue[Any] = queue.Queue()
        done = object()
        on_cpu = model.device.type == "cpu"
        threads = self.cpu_threads

        class Handoff(BaseStreamer):  # type: ignore[misc]
            first = True

            def put(self, value: Any) -> None:
                if self.first:  # generate's first call is the prompt
                    self.first = False
                    return
                for token in value.reshape(-1).tolist():
                    handoff.put(int(token))

            def end(self) -> None:
                handoff.put(done)

        class Stop(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                threads.fit(on_cpu=on_cpu)
                stop = bool(should_stop())
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        failure: list[BaseException] = []

        def run() -> None:
            try:
                threads.fit(on_cpu=on_cpu, wait=True)
                with torch.no_grad():
                    model.generate(**inputs, max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id,
                                   streamer=Handoff(), stopping_criteria=StoppingCriteriaList([Stop()]), **sampling)
            except BaseException as exc:  # handed to the reader
                failure.append(exc)
                handoff.put(done)

        worker = threading.Thread(target=run, name="mf-generate", daemon=True)
        worker.start()
        ids: list[int] = []
        shown = ""
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        try:
            while (token := handoff.get()) is not done:
                if token in eos:
                    continue
                ids.append(token)
                text = tokenizer.decode(ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half a character: wait for the rest
                    yield ""
                    continue
                piece, shown = text[len(shown):], text
                yield piece
        finally:
            worker.join()
        if failure:
            raise failure[0]

    def attach_adapter(self, model: Any, adapter: str, merge: bool = True) -> Any:
        """A LoRA adapter (a finished run's adapter/ folder) on the loaded base; merged into its weights
        unless ``merge`` is False (merged generation skips the adapter's extra matrix products)."""
        from peft import PeftModel

        adapted = PeftModel.from_pretrained(model, adapter)
        return adapted.merge_and_unload() if merge else adapted

    def train(self, job: Any, events: Any) -> dict[str, Any]:
        from ..runtime.training import run_training

        return run_training(self, job, events)
