"""What the built-in providers share, so that none imports another: ``gguf_header`` (a fast GGUF header
reader), ``hub`` (Hugging Face hub references and downloads) and ``transformers_base`` (where a model is,
validate, describe, generate and train for the transformers-based providers, huggingface and unsloth).
Not part of the plugin SDK (that is the top level of ``providers``), though a plugin may use it."""
