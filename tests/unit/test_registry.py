"""The provider registry: built-ins through entry points, lookups, the protocol, and the recipes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator import PROJECT_ROOT, recipes
from providers import ModelProvider
from providers.errors import ConfigurationError, ProviderError
from providers.provider_factory import (
    PROVIDER_ORIGINS,
    PROVIDER_REGISTRY,
    create_provider,
    get_provider_class,
    providers_supporting,
)
from providers.schemas import VALID_PROVIDERS, valid_providers

BUILTINS = {"gguf", "huggingface", "unsloth"}


def test_builtins_register_through_the_entry_point_group() -> None:
    assert BUILTINS <= set(PROVIDER_REGISTRY)
    assert {PROVIDER_ORIGINS[name] for name in BUILTINS} == {"modelforge"}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_provider_satisfies_the_protocol(name: str) -> None:
    provider = create_provider(name)
    assert isinstance(provider, ModelProvider)
    assert provider.get_provider_name() == name


def test_lookup_is_case_insensitive() -> None:
    assert type(create_provider("GGUF")) is PROVIDER_REGISTRY["gguf"]
    assert type(create_provider(" Gguf ")) is PROVIDER_REGISTRY["gguf"]


def test_unknown_provider_lists_the_available_ones() -> None:
    with pytest.raises(ProviderError) as info:
        create_provider("ggml")
    assert str(info.value) == "Unknown provider: ggml. Available providers: ['gguf', 'huggingface', 'unsloth']"


def test_provider_config_reaches_the_constructor() -> None:
    provider = create_provider("gguf", {"n_ctx": 512, "seed": 7})
    assert (provider.n_ctx, provider.seed) == (512, 7)


def test_a_provider_without_a_config_parameter_refuses_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bare:
        def load_model(self, model_id, model_class, quantization_config=None, device_map="auto", **kw): ...
        def load_tokenizer(self, model_id, **kw): ...
        def validate_model_access(self, model_id, model_class): return True
        def get_provider_name(self): return "bare"

    monkeypatch.setitem(PROVIDER_REGISTRY, "bare", Bare)
    assert isinstance(create_provider("bare"), Bare)
    with pytest.raises(ConfigurationError, match="takes no provider_config"):
        create_provider("bare", {"x": 1})


def test_valid_providers_come_from_the_registry() -> None:
    assert VALID_PROVIDERS == sorted(PROVIDER_REGISTRY) == valid_providers()


def test_training_providers() -> None:
    assert providers_supporting("train") == ["huggingface", "unsloth"]
    assert "train" not in get_provider_class("gguf").actions


@pytest.mark.parametrize("name", sorted(n for n in BUILTINS if recipes.flavours(n)))
def test_each_provider_with_an_image_has_its_recipe_module_and_tests(name: str) -> None:
    recipe = recipes.recipe_dir(name)
    assert (recipe / "Dockerfile").is_file()
    for flavour in recipes.flavours(name):
        lock = recipe / f"requirements.{flavour}.txt"
        assert "--hash=sha256:" in lock.read_text()
        assert (recipe / f"requirements.{flavour}.in").is_file() or (recipe / "requirements.in").is_file()
    assert (PROJECT_ROOT / "providers" / "builtin" / f"{name}.py").is_file()
    assert list((PROJECT_ROOT / "tests").rglob(f"test_{name}*.py"))


def test_importing_the_registry_imports_no_heavy_library() -> None:
    code = (
        "import sys, providers, providers.provider_factory, providers.contract, providers.runtime, orchestrator.cli\n"
        "heavy = [m for m in ('llama_cpp', 'gguf', 'torch', 'transformers', 'unsloth', 'numpy', 'huggingface_hub')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
