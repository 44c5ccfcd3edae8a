"""A plugin whose provider lacks a protocol method (load_tokenizer)."""


class HalfDoneProvider:
    def load_model(self, model_id, model_class, quantization_config=None, device_map="auto", **kwargs):
        return None

    def validate_model_access(self, model_id, model_class):
        return True

    def get_provider_name(self):
        return "halfdone"
