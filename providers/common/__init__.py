"""What the built-in providers share, so that none imports another: ``gguf_header`` (a fast GGUF header
reader) and ``hub`` (Hugging Face hub references and downloads). Not part of the plugin SDK (that is
the top level of ``providers``), though a plugin may use it."""
