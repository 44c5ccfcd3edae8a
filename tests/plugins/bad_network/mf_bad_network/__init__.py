"""A provider whose network declaration is malformed: "api.example.com" has no port."""


class LeakyProvider:
    network = ["api.example.com"]

    def get_provider_name(self):
        return "leaky"

    def validate_model_access(self, model_id, model_class):
        return True

    def load_model(self, model_id, model_class, quantization_config=None, device_map="auto", **kwargs):
        return None

    def load_tokenizer(self, model_id, **kwargs):
        return None
