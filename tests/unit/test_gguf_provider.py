"""The gguf provider's validate path on the real SmolLM2 GGUF (the gguf package, no llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.builtin.gguf import GGUFProvider
from providers.common.hub import parse_hub_reference
from providers.errors import ModelAccessError, ProviderError


@pytest.fixture(scope="module")
def provider() -> GGUFProvider:
    return GGUFProvider()


def test_describes_the_real_model(provider: GGUFProvider, demo_model: Path) -> None:
    assert provider.validate_model_access(str(demo_model), "AutoModelForCausalLM") is True
    info = provider.describe_model(str(demo_model), "AutoModelForCausalLM")
    assert info["architecture"] == "llama"
    assert info["parameters"] == 134_515_008  # the sum of the 272 tensors' elements
    assert info["tensors"] == 272
    assert info["quantization"] == "Q4_1"
    assert info["context_length"] == 8192
    assert info["vocab_size"] == 49152
    assert info["file_size"] == demo_model.stat().st_size == 98_362_432


def test_a_folder_with_one_gguf_resolves_to_it(provider: GGUFProvider, model_copy_with_spaces: Path) -> None:
    assert provider.resolve_path(str(model_copy_with_spaces.parent)) == model_copy_with_spaces


@pytest.mark.parametrize(
    "fixture, message",
    [
        ("truncated_gguf", "is truncated"),
        ("text_named_gguf", "is not a GGUF file"),
    ],
)
def test_broken_files_are_model_access_errors(provider, request, fixture: str, message: str) -> None:
    path = request.getfixturevalue(fixture)
    with pytest.raises(ModelAccessError, match=message) as info:
        provider.validate_model_access(str(path), "AutoModelForCausalLM")
    assert "\n" not in str(info.value) and info.value.hint


def test_a_missing_file_is_a_model_access_error(provider: GGUFProvider, tmp_path: Path) -> None:
    with pytest.raises(ModelAccessError, match="Model file not found"):
        provider.validate_model_access(str(tmp_path / "absent.gguf"), "AutoModelForCausalLM")


def test_other_model_classes_are_refused_with_the_supported_list(provider: GGUFProvider, demo_model: Path) -> None:
    with pytest.raises(ProviderError, match=r"Supported: \['AutoModelForCausalLM'\]"):
        provider.validate_model_access(str(demo_model), "AutoModelForSeq2SeqLM")


def test_an_uncached_hub_reference_offline_says_to_add_online(provider: GGUFProvider) -> None:
    pytest.importorskip("huggingface_hub")
    with pytest.raises(ModelAccessError) as info:
        provider.validate_model_access("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:model.gguf", "AutoModelForCausalLM")
    assert "offline" in info.value.message
    assert "--online" in info.value.hint


@pytest.mark.parametrize(
    "text, repo, filename",
    [
        ("org/repo:model.Q4_K_M.gguf", "org/repo", "model.Q4_K_M.gguf"),
        ("org/repo", "org/repo", None),
        ("org/repo:sub/dir/m.gguf@v1.0", "org/repo", "sub/dir/m.gguf"),
    ],
)
def test_hub_references(text: str, repo: str, filename: str | None) -> None:
    ref = parse_hub_reference(text)
    assert ref is not None and (ref.repo_id, ref.filename) == (repo, filename)


@pytest.mark.parametrize("text", ["./models/m.gguf", "/abs/m.gguf", "models/m.gguf", "m.gguf", "a/b/c"])
def test_paths_are_not_hub_references(text: str) -> None:
    assert parse_hub_reference(text) is None
