"""The providers that ship with ModelForge: gguf, huggingface and unsloth. Each registers through the
``modelforge.providers`` entry-point group, as a plugin does, and none imports another: what they share
lives in ``providers.common``."""
