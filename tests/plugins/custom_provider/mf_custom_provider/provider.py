# mf_custom_provider/provider.py

from pathlib import Path
from typing import Any, Dict, Optional

from providers.errors import ModelAccessError, ProviderError
from providers.log import logger


class CustomProvider:
    """Custom provider implementation."""

    # The folder with this provider's image recipe: requirements.cpu.txt (hash-locked), and
    # optionally a Dockerfile that builds FROM the ModelForge base.
    image_recipe = str(Path(__file__).parent / "image")

    def __init__(self, config: Optional[Dict] = None):
        """Initialize the custom provider."""
        logger.info("Initializing CustomProvider")
        self.config = config or {}
        self.optimization_level = self.config.get("optimization_level", "default")
        self.use_custom_kernels = self.config.get("use_custom_kernels", True)

    def get_provider_name(self) -> str:
        """Return provider name."""
        return "custom"

    def load_model(
        self,
        model_id: str,
        model_class: str,
        quantization_config: Any = None,
        device_map: str = "auto",
        **kwargs
    ) -> Any:
        """Load model with custom logic (a hub id or a local path)."""
        from transformers import AutoModelForCausalLM  # heavy: imported where it is used

        try:
            logger.info(f"Loading model {model_id} with CustomProvider")
            model = AutoModelForCausalLM.from_pretrained(
                model_id,
                quantization_config=quantization_config,
                device_map=device_map,
                trust_remote_code=True,
                **kwargs
            )
            model = self._apply_custom_optimizations(model)
            logger.info(f"Model {model_id} loaded successfully")
            return model
        except Exception as e:
            logger.error(f"Failed to load model {model_id}: {e}")
            raise ProviderError(f"CustomProvider failed to load model: {e}") from e

    def load_tokenizer(self, model_id: str, **kwargs) -> Any:
        """Load tokenizer for the model."""
        from transformers import AutoTokenizer

        try:
            logger.info(f"Loading tokenizer for {model_id}")
            tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True, **kwargs)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            return tokenizer
        except Exception as e:
            logger.error(f"Failed to load tokenizer: {e}")
            raise ProviderError(f"Failed to load tokenizer: {e}") from e

    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        """Validate that the model is accessible: a local folder with a config, or a hub repository."""
        local = Path(model_id)
        if local.exists():
            if not (local / "config.json").is_file():
                raise ModelAccessError(f"Cannot access model {model_id}: no config.json")
            logger.info(f"Model {model_id} is accessible")
            return True
        try:
            from huggingface_hub import model_info

            model_info(model_id)
            logger.info(f"Model {model_id} is accessible")
            return True
        except Exception as e:
            logger.error(f"Model {model_id} not accessible: {e}")
            raise ModelAccessError(f"Cannot access model {model_id}: {e}") from e

    def _apply_custom_optimizations(self, model: Any) -> Any:
        """Apply custom optimizations to the model."""
        logger.info(
            f"Applying custom optimizations (level={self.optimization_level}, "
            f"custom kernels={self.use_custom_kernels})"
        )
        return model
