"""The custom-provider guide as commands, for real: `mf providers new` -> `lock` -> `pip install` -> `check`
in a built image, for both stacks; the guide's own file and test script, byte for byte; planted faults."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import MfResult, mf

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "tests" / "fixtures" / "guide"
FAULTY = ROOT / "tests" / "fixtures" / "faulty"


def records(res: MfResult) -> dict[str, dict[str, Any]]:
    """`check --json`: one record per line; by name, the image's record winning over the host's."""
    return {r["name"]: r for r in (json.loads(line) for line in res.stdout.splitlines())}


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client: Any) -> Iterator[Callable[..., Path]]:
    """new -> lock -> pip install (into a folder of its own, on PYTHONPATH, as a user's pip install would)."""
    site = tmp_path / "site"
    made: list[str] = []

    def make(name: str, *new_args: str, edit: Callable[[Path], None] | None = None) -> Path:
        package = tmp_path / f"mf-provider-{name}"
        res = mf("providers", "new", name, "--dir", str(package), *new_args)
        assert res.code == 0, res.stderr
        if edit is not None:
            edit(package)
        res = mf("providers", "lock", name, "--dir", str(package), "--flavour", "cpu")
        assert res.code == 0, res.stderr
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--target", str(site), str(package)], check=True)
        monkeypatch.setenv("PYTHONPATH", str(site))
        made.append(f"mf-provider-{name}")
        monkeypatch.setenv("MODELFORGE_LOAD_PLUGINS", ",".join(made))
        made_names.append(name)
        return package

    made_names: list[str] = []
    yield make
    for name in made_names:  # the plugin's thin image: its layers are the built-in's, the tag is ours to drop
        for image in docker_client.images.list(name=f"modelforge/{name}"):
            docker_client.images.remove(image.id, force=True)


def test_a_new_llama_cpp_provider_passes_check_as_generated(plugin, gguf_image: str, demo_model: Path,
                                                             tmp_path: Path) -> None:
    package = plugin("demo", "--stack", "llama-cpp")
    assert (package / "mf_provider_demo" / "image" / "extends").read_text().strip() == "gguf"
    res = mf("providers", "check", "demo", "--model", str(demo_model), "--json", timeout=900)
    assert res.code == 0, res.stdout + res.stderr
    got = records(res)
    for name in ("registered", "load_model signature", "provider name", "image recipe", "create_provider",
                 "validate_model_access", "load_model", "load_tokenizer"):
        assert got[name]["ok"] is True, got[name]
    assert got["load_model"]["detail"] == "llama_cpp.Llama" and got["load_model"]["where"] == "image"
    assert got["pad token"]["ok"] is None  # llama.cpp's tokenizer has no pad token to check
    rows = {row["name"]: row for row in json.loads(mf("providers", "--json").stdout)}
    assert rows["demo"]["built"] is True and rows["demo"]["image"].startswith("modelforge/demo:cpu-")

    again = mf("providers", "new", "demo", "--dir", str(package))  # never overwrites
    assert again.code == 2 and "exists and is not empty" in again.stderr and "Traceback" not in again.stderr


def test_a_new_transformers_provider_passes_check_as_generated(plugin, smollm2_hf: Path) -> None:
    plugin("tx", "--stack", "transformers")
    res = mf("providers", "check", "tx", "--model", str(smollm2_hf), timeout=900)
    assert res.code == 0, res.stdout + res.stderr
    assert "✅ load_model: transformers.LlamaForCausalLM" in res.stdout
    assert "✅ pad token: '<|im_end|>' (the eos token)" in res.stdout  # the template's fallback
    assert res.stdout.strip().endswith("passed, 0 failed")


def test_the_guides_file_and_script_run_unchanged(plugin, smollm2_hf: Path) -> None:
    package = plugin("custom", "--from-file", str(GUIDE / "custom_provider.py"))
    packaged = package / "mf_provider_custom" / "providers" / "custom_provider.py"
    assert packaged.read_bytes() == (GUIDE / "custom_provider.py").read_bytes()
    assert (package / "mf_provider_custom" / "image" / "extends").read_text().strip() == "huggingface"  # it imports transformers

    res = mf("providers", "check", "custom", "--model", str(smollm2_hf), "--json", timeout=900)
    got = records(res)
    # on the host, without transformers: it registers (its image has transformers), named as its entry point
    assert "imports transformers in its image only" in got["registered"]["detail"]
    assert got["provider name"]["ok"] is True
    assert got["load_model"]["ok"] is True and got["load_tokenizer"]["ok"] is True
    assert got["pad token"] == {**got["pad token"], "ok": True, "detail": "'<|im_end|>' (the eos token)"}
    # the guide's validate_model_access asks the Hub's API, which a local folder (and this machine) has not
    assert got["validate_model_access"]["ok"] is False
    assert got["validate_model_access"]["detail"].startswith("ModelAccessError: Cannot access model /models/")
    assert res.code == 1

    res = mf("providers", "check", "custom", "--model", str(smollm2_hf), "--script",
             str(GUIDE / "test_custom_provider.py"), timeout=900)
    lines = res.stdout.splitlines()
    assert "✅ Model loading successful" in lines and "✅ Tokenizer loading successful" in lines
    assert any(line.startswith("❌ Model validation failed: Cannot access model /models/") for line in lines)
    assert "the script's model id meta-llama/Llama-3.2-3B is read as /models/" in res.stderr
    assert res.code == 1


def test_check_names_each_planted_fault(plugin, gguf_image: str, demo_model: Path) -> None:
    plugin("faulty", "--from-file", str(FAULTY / "faulty_provider.py"), "--stack", "llama-cpp")
    res = mf("providers", "check", "faulty", "--model", str(demo_model), timeout=900)
    assert res.code == 1, res.stderr
    lines = res.stdout.splitlines()
    assert ("❌ validate_model_access: returned False: return True when the model is accessible, and raise "
            "ModelAccessError saying why when it is not") in lines
    assert any(line.startswith("❌ load_model: raised a bare Exception: boom (raise ProviderError or "
                               "ModelAccessError") for line in lines)
    assert ("❌ pad token: the tokenizer has no pad token and no eos token to fall back on: set "
            "tokenizer.pad_token in load_tokenizer") in lines
    assert "Traceback" not in res.stderr

    # ModelForge's registry API inside the image: register_provider, then create_provider; VALID_PROVIDERS is live
    res = mf("providers", "check", "faulty", "--model", str(demo_model), "--script",
             str(FAULTY / "registry_script.py"), "--json", timeout=600)
    got = records(res)
    assert res.code == 0, res.stdout + res.stderr
    assert got["create_provider after register_provider"]["detail"] == "{'model': '/models/SmolLM2-135M-Instruct.Q4_1.gguf'}"
    assert got["VALID_PROVIDERS"]["detail"] == "['echo', 'faulty', 'gguf', 'huggingface', 'unsloth']"


def test_a_missing_method_and_a_wrong_name_are_caught_on_the_host(plugin, tmp_path: Path) -> None:
    def drop_tokenizer(package: Path) -> None:
        module = package / "mf_provider_half" / "providers" / "half_provider.py"
        text = module.read_text().replace("def load_tokenizer(", "def not_load_tokenizer(")
        module.write_text(text.replace('return "half"', 'return "whole"'))

    plugin("half", "--stack", "none", edit=drop_tokenizer)
    res = mf("providers", "check", "half", "--model", str(tmp_path))
    assert res.code == 1
    assert ("❌ registered: Plugin mf-provider-half (provider 'half') does not implement the provider protocol: "
            "missing load_tokenizer.") in res.stdout
    assert "(on the host; the image was not built)" in res.stdout
