"""The Hugging Face transformers provider: registered now, implemented with its own image."""

from .base import PlannedProvider


class HuggingFaceProvider(PlannedProvider):
    name = "huggingface"
    actions = ("validate", "load", "train")
