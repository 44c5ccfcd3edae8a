"""The guide's CloudAPIProvider: "loads" a model from a cloud API with an api_key and an api_endpoint.

It declares the one host:port it talks to (``network``) and the secret it needs (``secrets``): its job runs with no
network but the egress proxy, which lets it reach exactly that, and the key arrives as /run/secrets/CLOUD_API_KEY.
The API is a small OpenAI-style completions API (POST {endpoint}/completions).
"""

import json
import urllib.error
import urllib.request
from typing import Any, Dict, Optional

from providers import secrets
from providers.errors import ModelAccessError, ProviderError
from providers.log import logger

DEFAULT_ENDPOINT = "http://api.cloud.test:8080/v1"


class CloudModelWrapper:
    """A model that lives behind the API: each call is an HTTP request."""

    def __init__(self, model_id: str, api_key: str, api_endpoint: str):
        self.model_id = model_id
        self.api_key = api_key
        self.api_endpoint = api_endpoint

    def request(self, path: str, payload: Optional[Dict] = None) -> Dict:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(f"{self.api_endpoint}{path}", data=data, method="POST" if data else "GET",
                                     headers={"Authorization": f"Bearer {self.api_key}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise ProviderError(f"The cloud API answered {e.code}: {e.read().decode(errors='replace').strip()}") from e
        except (urllib.error.URLError, OSError) as e:
            raise ProviderError(f"Cannot reach the cloud API at {self.api_endpoint}: {e}") from e

    def complete(self, prompt: str, max_tokens: int, temperature: float) -> Dict:
        return self.request("/completions", {"model": self.model_id, "prompt": prompt, "max_tokens": max_tokens,
                                             "temperature": temperature})


class CloudAPIProvider:
    """Provider for cloud-hosted models."""

    network = ["api.cloud.test:8080"]
    secrets = ["CLOUD_API_KEY"]

    def __init__(self, config: Optional[Dict] = None):
        self.config = config or {}
        self.api_endpoint = self.config.get("api_endpoint", DEFAULT_ENDPOINT)

    @property
    def api_key(self) -> str:
        return secrets.get("CLOUD_API_KEY")

    def get_provider_name(self) -> str:
        return "cloud"

    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        models = CloudModelWrapper(model_id, self.api_key, self.api_endpoint).request("/models")
        if model_id not in [m.get("id") for m in models.get("data", [])]:
            raise ModelAccessError(f"The cloud API has no model {model_id}")
        return True

    def load_model(self, model_id: str, model_class: str, quantization_config: Any = None,
                   device_map: str = "auto", **kwargs: Any) -> CloudModelWrapper:
        """Load model from cloud API: a wrapper that makes API calls."""
        logger.info(f"Using {model_id} at {self.api_endpoint}")
        return CloudModelWrapper(model_id=model_id, api_key=self.api_key, api_endpoint=self.api_endpoint)

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> None:
        return None  # the API tokenizes

    def generate(self, model: CloudModelWrapper, tokenizer: Any, prompt: str, *, max_new_tokens: int,
                 temperature: float) -> Dict[str, Any]:
        answer = model.complete(prompt, max_new_tokens, temperature)
        choice = answer["choices"][0]
        return {"text": choice["text"], "new_tokens": answer.get("usage", {}).get("completion_tokens", 0)}
