"""The Unsloth provider: registered now, implemented with its own CUDA image."""

from .base import PlannedProvider


class UnslothProvider(PlannedProvider):
    name = "unsloth"
    actions = ("validate", "load", "train")
    requires_gpu = True
