"""What `mf providers new` writes: the provider templates (one per stack), the package's pyproject, the shims that
give code written for ModelForge its modules, the image recipe's requirements.in, the pytest file and the README.
Text only; :mod:`orchestrator.provider_kit` fills them in."""

from __future__ import annotations

_HEADER = '''"""The {name} provider (made by `mf providers new`; the protocol: docs/custom-providers.md).

Import heavy libraries inside the methods: `mf` imports this module on the host, where only its
image's libraries are missing.
"""

from pathlib import Path
from typing import Any, Dict, Optional

from providers.errors import ModelAccessError, ProviderError
from providers.log import logger
'''

_TRANSFORMERS = _HEADER + '''

class {cls}:
    """Loads transformers checkpoints (a local folder, or a hub id with --online)."""

    def __init__(self, config: Optional[Dict] = None):
        self.config = config or {{}}

    def get_provider_name(self) -> str:
        return "{name}"

    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        local = Path(model_id)
        if local.exists():
            if not (local / "config.json").is_file():
                raise ModelAccessError(f"Cannot access model {{model_id}}: no config.json",
                                       "Pass a transformers checkpoint folder.")
            return True
        try:
            from huggingface_hub import model_info

            model_info(model_id)
            return True
        except Exception as e:
            raise ModelAccessError(f"Cannot access model {{model_id}}: {{e}}") from e

    def load_model(self, model_id: str, model_class: str, quantization_config: Any = None,
                   device_map: str = "auto", **kwargs: Any) -> Any:
        import transformers

        try:
            auto_class = getattr(transformers, model_class)
            logger.info(f"Loading {{model_id}} as {{model_class}}")
            return auto_class.from_pretrained(model_id, quantization_config=quantization_config,
                                              device_map=device_map, **kwargs)
        except AttributeError:
            raise ProviderError(f"transformers has no {{model_class}}", "Pass --model-class AutoModelForCausalLM.")
        except (OSError, ValueError) as e:
            raise ProviderError(f"Failed to load {{model_id}}: {{e}}") from e

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> Any:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
        except (OSError, ValueError) as e:
            raise ProviderError(f"Failed to load the tokenizer of {{model_id}}: {{e}}") from e
        if tokenizer.pad_token is None:  # batching and training need one
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
'''

_LLAMA_CPP = _HEADER + '''

class {cls}:
    """Loads GGUF files with llama-cpp-python."""

    def __init__(self, config: Optional[Dict] = None):
        self.config = config or {{}}
        self.n_ctx = int(self.config.get("n_ctx", 2048))

    def get_provider_name(self) -> str:
        return "{name}"

    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        path = Path(model_id)
        if not path.is_file():
            raise ModelAccessError(f"No GGUF file at {{model_id}}", "Pass the path of a .gguf file.")
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelAccessError(f"{{model_id}} is not a GGUF file", "Pass the path of a .gguf file.")
        return True

    def load_model(self, model_id: str, model_class: str, quantization_config: Any = None,
                   device_map: str = "auto", **kwargs: Any) -> Any:
        from llama_cpp import Llama

        if quantization_config:
            raise ProviderError("A GGUF file is quantized already.", "Leave quantization_config out.")
        logger.info(f"Loading {{model_id}} with llama.cpp (n_ctx={{self.n_ctx}})")
        try:
            return Llama(model_path=model_id, n_ctx=self.n_ctx, n_gpu_layers=-1, verbose=False, **kwargs)
        except (ValueError, RuntimeError) as e:
            raise ProviderError(f"llama.cpp could not load {{model_id}}: {{e}}") from e

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> Any:
        from llama_cpp import Llama, LlamaTokenizer

        try:
            return LlamaTokenizer(Llama(model_path=model_id, vocab_only=True, verbose=False))
        except (ValueError, RuntimeError) as e:
            raise ProviderError(f"llama.cpp could not read the vocabulary of {{model_id}}: {{e}}") from e
'''

_NONE = _HEADER + '''

class {cls}:
    """A provider with no library yet: write load_model and load_tokenizer, list what they import in
    image/requirements.in, then `mf providers lock {name}`."""

    def __init__(self, config: Optional[Dict] = None):
        self.config = config or {{}}

    def get_provider_name(self) -> str:
        return "{name}"

    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        if not Path(model_id).exists():
            raise ModelAccessError(f"Cannot access model {{model_id}}: no such file or folder")
        return True

    def load_model(self, model_id: str, model_class: str, quantization_config: Any = None,
                   device_map: str = "auto", **kwargs: Any) -> Any:
        raise ProviderError("load_model is not written yet.", "Write it in " + __file__ + ".")

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> Any:
        raise ProviderError("load_tokenizer is not written yet.", "Write it in " + __file__ + ".")
'''

TEMPLATES = {"transformers": _TRANSFORMERS, "llama-cpp": _LLAMA_CPP, "none": _NONE}

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mf-provider-{name}"
version = "0.1.0"
description = "The {name} provider for ModelForge."
requires-python = ">=3.11"

# The name on the left is what `mf run --provider` takes.
[project.entry-points."modelforge.providers"]
{name} = "{package}.providers.{module}:{cls}"

[tool.setuptools.packages.find]
include = ["{package}*"]

[tool.setuptools.package-data]
{package} = ["image/*"]
'''

SHIMS = {
    "__init__.py": '"""The {name} provider for ModelForge."""\n',
    "logging_config.py": '"""ModelForge\'s logger, for code written for ModelForge (from ..logging_config import logger)."""\n\n'
                         "from ModelForge.logging_config import logger, setup_logging  # noqa: F401\n",
    "exceptions.py": '"""ModelForge\'s exceptions, for code written for ModelForge (from ..exceptions import ...)."""\n\n'
                     "from ModelForge.exceptions import *  # noqa: F401,F403\n",
    "providers/__init__.py": "",
    "providers/provider_factory.py": '"""ModelForge\'s factory, for code written for ModelForge."""\n\n'
                                     "from ModelForge.providers.provider_factory import *  # noqa: F401,F403\n",
}

REQUIREMENTS_OWN = """# What the {name} provider's image installs, with pydantic for the ModelForge runtime.
# Hash-lock it with `mf providers lock {name}` (writes requirements.<flavour>.txt beside this file).
pydantic>=2.7
"""

REQUIREMENTS_EXTRA = """# Libraries the {name} provider needs beyond the {parent} image's (that image has {key}).
# List them here, then `mf providers lock {name}`: requirements.<flavour>.txt gets what is new.
"""

TEST = '''"""The guide's step 4 for the {name} provider, in its own image: `mf providers check` on a real model.

    MF_CHECK_MODEL=path/to/model pytest tests/
"""

import json
import os
import subprocess
import sys

import pytest

MODEL = os.environ.get("MF_CHECK_MODEL")


@pytest.mark.skipif(not MODEL, reason="set MF_CHECK_MODEL to a model the provider loads")
def test_the_provider_passes_every_check():
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "providers", "check", "{name}", "--model", MODEL,
                           "--json"], capture_output=True, text=True, timeout=3600)
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # one record per check
    assert records, proc.stderr
    failed = [f"{{r['name']}}: {{r['detail']}}" for r in records if r["ok"] is False]
    assert failed == [] and proc.returncode == 0, failed or proc.stderr
'''

README = """# mf-provider-{name}

The `{name}` provider for ModelForge ({stack} stack).

```bash
mf providers lock {name}          # hash-lock image/requirements.in for the image
pip install -e .                  # mf now lists {name}
mf providers check {name} --model {model}
MF_CHECK_MODEL={model} pytest tests/
```
"""

KEY_LIBRARY = {"huggingface": "torch, transformers, peft", "gguf": "llama-cpp-python"}
EXAMPLE_MODEL = {"transformers": "./my-checkpoint", "llama-cpp": "./models/SmolLM2-135M-Instruct.Q4_1.gguf",
                  "none": "./my-model"}
