"""Plugins: found through the entry-point group, listed, configured, and isolated when broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from providers.contract import EXIT_CODES

CUSTOM = "modelforge-custom-provider"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def providers_json() -> dict:
    proc = run("-m", "orchestrator", "providers", "--json")
    assert proc.returncode == 0, proc.stderr
    return {row["name"]: row for row in json.loads(proc.stdout)}


def test_a_plugin_is_registered_listed_and_configured(use_plugins) -> None:
    use_plugins(CUSTOM)
    rows = providers_json()
    assert rows["custom"]["origin"] == CUSTOM
    assert rows["custom"]["image"].startswith("modelforge/custom:cpu-")
    code = (
        "from providers.provider_factory import create_provider\n"
        "from providers.schemas import VALID_PROVIDERS\n"
        "p = create_provider('Custom', {'optimization_level': 'aggressive', 'use_custom_kernels': False})\n"
        "print(p.get_provider_name(), p.optimization_level, p.use_custom_kernels, 'custom' in VALID_PROVIDERS)\n"
    )
    proc = run("-c", code)
    assert proc.stdout.split() == ["custom", "aggressive", "False", "True"], proc.stderr


def test_the_cli_offers_plugin_providers(use_plugins) -> None:
    use_plugins(CUSTOM)
    proc = run("-m", "orchestrator", "run", "--help")
    assert "[custom|gguf|huggingface|unsloth]" in proc.stdout


def test_the_test_switch_keeps_plugins_out(use_plugins) -> None:
    use_plugins()  # MODELFORGE_LOAD_PLUGINS="" : built-ins only
    assert set(providers_json()) == {"gguf", "huggingface", "unsloth"}


def test_a_plugin_that_fails_to_import_is_named_with_the_fix(use_plugins) -> None:
    use_plugins("modelforge-broken-import")
    rows = providers_json()
    assert "failed to import: ModuleNotFoundError" in rows["broken"]["note"]
    assert rows["gguf"]["origin"] == "modelforge"  # the others keep working
    proc = run("-m", "orchestrator", "run", "--provider", "broken", "validate", "--model", __file__)
    assert proc.returncode == EXIT_CODES["provider"]
    assert proc.stderr.strip() == (
        "Error: Plugin modelforge-broken-import (provider 'broken') failed to import: ModuleNotFoundError: "
        "No module named 'a_package_that_is_not_installed'. Fix or reinstall modelforge-broken-import, "
        "or uninstall it: `pip uninstall modelforge-broken-import`."
    )


def test_a_plugin_missing_a_protocol_method_is_refused(use_plugins) -> None:
    use_plugins("modelforge-missing-method")
    proc = run("-m", "orchestrator", "run", "--provider", "halfdone", "validate", "--model", __file__)
    assert proc.returncode == EXIT_CODES["provider"]
    assert "does not implement the provider protocol: missing load_tokenizer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_plugin_cannot_take_a_built_in_name(use_plugins) -> None:
    use_plugins("modelforge-name-clash")
    rows = providers_json()
    assert rows["gguf"]["origin"] == "modelforge"
    assert "which modelforge already provides" in rows["gguf@modelforge-name-clash"]["note"]
    proc = run("-c", "from providers.provider_factory import create_provider; "
                     "print(type(create_provider('gguf')).__module__)")
    assert proc.stdout.strip() == "providers.builtin.gguf"
