"""The Unsloth provider: FastLanguageModel loading (4-bit when asked), Unsloth's LoRA, and the shared
train action on Unsloth's patched trainer. Needs an NVIDIA GPU for load and train; validate runs
anywhere (the checks it shares with the huggingface provider, in
``providers.common.transformers_base``, never import unsloth)."""

from __future__ import annotations

from typing import Any, ClassVar

from ..common.transformers_base import TransformersBase
from ..errors import ProviderError


class UnslothProvider(TransformersBase):
    name = "unsloth"
    actions: ClassVar[tuple[str, ...]] = ("validate", "load", "train")
    requires_gpu = True
    #: causal LMs only; everything here needs the GPU (DPO included)
    training_tasks: ClassVar[dict[str, tuple[str, ...]]] = {"text-generation": ("sft", "qlora", "dpo", "rlhf")}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.max_seq_length = int(self.config.get("max_seq_length", 2048))

    def _require_gpu(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise ProviderError(
                "Unsloth needs an NVIDIA GPU; none is visible in this container.",
                "Run on a GPU host (NVIDIA container toolkit), or use --provider huggingface.",
            )

    def _load(self, model_id: str, quantization_config: Any, **kwargs: Any) -> tuple[Any, Any]:
        self._require_gpu()
        from unsloth import FastLanguageModel  # first: Unsloth patches transformers and trl on import

        source = self.resolve_source(model_id)
        quant = quantization_config or {}
        return FastLanguageModel.from_pretrained(  # nosec B615 - a local folder (hub refs resolved above)
            model_name=source.location,
            max_seq_length=int(kwargs.pop("max_seq_length", self.max_seq_length)),
            load_in_4bit=bool(quant.get("load_in_4bit", False)),
            load_in_8bit=bool(quant.get("load_in_8bit", False)),
            dtype=None,
            trust_remote_code=self.trust_remote_code,
            **source.pretrained_kwargs(),
            **kwargs,
        )

    def load_model(self, model_id: str, model_class: str, quantization_config: Any = None,
                   device_map: str = "auto", **kwargs: Any) -> Any:
        if model_class != "AutoModelForCausalLM":
            raise ProviderError(f"The unsloth provider loads causal language models only, not {model_class}.",
                                "Use --model-class AutoModelForCausalLM, or --provider huggingface.")
        model, tokenizer = self._load(model_id, quantization_config, **kwargs)
        self._tokenizer = tokenizer
        return model

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> Any:
        tokenizer = getattr(self, "_tokenizer", None)
        if tokenizer is None:
            _, tokenizer = self._load(model_id, None)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if "padding_side" in kwargs:
            tokenizer.padding_side = kwargs["padding_side"]
        return tokenizer

    def training_load_kwargs(self, config: Any) -> dict[str, Any]:
        return {"max_seq_length": config.max_seq_length}

    def prepare_for_training(self, model: Any, lora: dict[str, Any]) -> Any:
        from unsloth import FastLanguageModel

        targets = lora["target_modules"]
        if targets == "all-linear":
            targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        return FastLanguageModel.get_peft_model(
            model, r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
            target_modules=targets, use_gradient_checkpointing="unsloth",
        )
