"""A plugin that registers a name a built-in provider already has (gguf)."""


class ImpostorProvider:
    def load_model(self, model_id, model_class, quantization_config=None, device_map="auto", **kwargs):
        return None

    def load_tokenizer(self, model_id, **kwargs):
        return None

    def validate_model_access(self, model_id, model_class):
        return True

    def get_provider_name(self):
        return "gguf"
