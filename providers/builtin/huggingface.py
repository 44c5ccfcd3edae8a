"""The Hugging Face transformers provider: local folders, GGUF files (dequantized) and hub ids,
loaded with transformers; LoRA fine-tuning through the shared train action."""

from __future__ import annotations

from typing import Any, ClassVar

from ..common.transformers_base import TransformersBase
from ..errors import ModelAccessError, ProviderError
from ..log import logger


class HuggingFaceProvider(TransformersBase):
    name = "huggingface"
    actions: ClassVar[tuple[str, ...]] = ("validate", "load", "train", "export")
    #: task -> strategies (see providers/runtime/tasks/)
    training_tasks: ClassVar[dict[str, tuple[str, ...]]] = {
        "text-generation": ("sft", "qlora", "dpo", "rlhf"),
        "summarization": ("sft", "qlora"),
        "question-answering": ("sft",),
    }

    # -- the protocol -----------------------------------------------------------------------
    def load_model(
        self,
        model_id: str,
        model_class: str,
        quantization_config: Any = None,
        device_map: str = "auto",
        **kwargs: Any,
    ) -> Any:
        auto_cls = self._check_model_class(model_class)
        source = self.resolve_source(model_id)
        import torch

        extra: dict[str, Any] = {}
        if quantization_config:  # bitsandbytes: CUDA, or its CPU kernels (see providers/runtime/tasks/quantized.py)
            from transformers import BitsAndBytesConfig

            extra["quantization_config"] = (
                quantization_config if isinstance(quantization_config, BitsAndBytesConfig)
                else BitsAndBytesConfig(**quantization_config)
            )
        dtype = kwargs.pop("dtype", None) or self.dtype or ("auto" if torch.cuda.is_available() else torch.float32)
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if device_map == "auto" and not torch.cuda.is_available():
            device_map = "cpu"
        logger.info("loading %s as %s on %s", model_id, model_class, device_map)
        import contextlib

        from ..runtime.tasks.quantized import frugal_loading

        try:
            with frugal_loading() if quantization_config else contextlib.nullcontext():
                model = auto_cls.from_pretrained(
                    source.location,
                    device_map=device_map,
                    dtype=dtype,
                    trust_remote_code=self.trust_remote_code,
                    **source.pretrained_kwargs(),
                    **extra,
                    **kwargs,
                )
                if quantization_config:
                    from ..runtime.tasks.quantized import own_storage

                    own_storage(model)  # lets go of the float32 file's mapping
        except OSError as exc:
            raise ModelAccessError(f"Cannot load {model_id}: {exc}".split("\n")[0], "Check the model files.") from None
        except ValueError as exc:
            raise ProviderError(f"transformers could not load {model_id}: {exc}".split("\n")[0]) from None
        return model

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> Any:
        from transformers import AutoTokenizer

        source = self.resolve_source(model_id)
        try:
            tokenizer = AutoTokenizer.from_pretrained(  # nosec B615
                source.location, trust_remote_code=self.trust_remote_code, **source.pretrained_kwargs(), **kwargs
            )
        except (OSError, ValueError) as exc:
            raise ModelAccessError(f"Cannot load the tokenizer of {model_id}: {exc}".split("\n")[0]) from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    # -- hooks ------------------------------------------------------------------------------
    def prepare_for_training(self, model: Any, lora: dict[str, Any]) -> Any:
        """Wrap ``model`` with a LoRA adapter (peft); ``lora`` holds LoraConfig's fields, its task type included.
        A 4-bit or 8-bit base is prepared for k-bit training first (frozen, norms in float32, non-reentrant
        gradient checkpointing)."""
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
        config = LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
        return get_peft_model(model, config)
