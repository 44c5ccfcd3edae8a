"""The pure parts of the custom-provider kit: names, reading a provider file, the scaffold, locking's output,
the ModelForge compatibility package, and importing a plugin whose libraries are only in its image."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import provider_kit
from providers import errors
from providers.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "tests" / "fixtures" / "guide"


def mf(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["new", "Not-A-Name"], "Error: Provider name 'Not-A-Name' is not a lower-case Python identifier."),
    (["new", "class"], "Error: Provider name 'class' is not a lower-case Python identifier."),
    (["new", "huggingface"], "Error: Provider name 'huggingface' is a built-in provider's"),
    (["new", "x", "--from-file", os.devnull], f"Error: {os.devnull} has no class with all of load_model, load_tokenizer"),
    (["new", "x", "--stack", "rust"], "Error: Invalid value for '--stack': 'rust' is not one of"),
    (["lock", "nowhere"], "Error: No provider 'nowhere' is installed, and mf-provider-nowhere/mf_provider_nowhere/image"),
    (["lock", "gguf"], "Error: gguf is a built-in provider: its recipe is images/gguf/. Lock it with `make lock-gguf`."),
])
def test_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    proc = mf("providers", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_file_that_is_not_python_is_named_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.py"
    bad.write_text("class P:\n    def load_model(self\n")
    with pytest.raises(ConfigurationError, match=r"p.py is not valid Python: line 2"):
        provider_kit.read_provider_file(bad, "p")


def test_the_guides_file_is_packaged_byte_for_byte_with_modelforges_modules(tmp_path: Path) -> None:
    folder, stack, files = provider_kit.scaffold("custom", tmp_path / "pkg", None, GUIDE / "custom_provider.py")
    assert stack == "transformers"  # it imports transformers
    module = folder / "mf_provider_custom" / "providers" / "custom_provider.py"
    assert module.read_bytes() == (GUIDE / "custom_provider.py").read_bytes()
    pyproject = (folder / "pyproject.toml").read_text()
    assert 'custom = "mf_provider_custom.providers.custom_provider:CustomProvider"' in pyproject
    # `from ..logging_config import logger` and `from ..exceptions import ...` resolve to ModelForge's
    assert "from ModelForge.logging_config import logger" in (folder / "mf_provider_custom" / "logging_config.py").read_text()
    assert "from ModelForge.exceptions import *" in (folder / "mf_provider_custom" / "exceptions.py").read_text()
    with pytest.raises(ConfigurationError, match="exists and is not empty"):
        provider_kit.scaffold("custom", folder, None, None)


def test_the_guides_file_registers_on_a_host_without_transformers(tmp_path: Path) -> None:
    """The host has no transformers; the plugin's image does: the registry reads the class anyway."""
    folder, _, _ = provider_kit.scaffold("custom", tmp_path / "pkg", None, GUIDE / "custom_provider.py")
    code = textwrap.dedent("""
        import sys
        from importlib.metadata import EntryPoint
        from providers import provider_factory as f
        ep = EntryPoint("custom", "mf_provider_custom.providers.custom_provider:CustomProvider", f.ENTRY_POINT_GROUP)
        from providers.hostimport import load_with_stand_ins
        try:
            ep.load()
        except ModuleNotFoundError as exc:
            cls, stood_in = load_with_stand_ins(ep.load, exc.name)
        print(cls.__name__, stood_in, f.plugin_recipe(cls).name, cls().get_provider_name(), "transformers" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}, timeout=60)
    assert proc.stdout.split() == ["CustomProvider", "['transformers']", "image", "custom", "False"], proc.stderr


def test_a_missing_module_of_the_plugins_own_package_is_not_stood_in(tmp_path: Path) -> None:
    package = tmp_path / "mf_own"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "provider.py").write_text("import transformers\nimport mf_own.helpers\n")
    code = textwrap.dedent("""
        from importlib.metadata import EntryPoint
        from providers.hostimport import load_with_stand_ins
        ep = EntryPoint("own", "mf_own.provider:P", "modelforge.providers")
        try:
            load_with_stand_ins(ep.load, "transformers")
        except ImportError as exc:
            print("still missing:", exc.name)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}, timeout=60)
    assert proc.stdout.strip() == "still missing: mf_own.helpers", proc.stderr


def test_modelforges_exceptions_carry_this_projects_kinds_and_exit_codes() -> None:
    from ModelForge import exceptions as mfe

    expected = {
        mfe.ModelForgeException: ("internal", 1), mfe.ModelAccessError: ("model_access", 3),
        mfe.DatasetValidationError: ("configuration", 2), mfe.TrainingError: ("provider", 5),
        mfe.ProviderError: ("provider", 5), mfe.ConfigurationError: ("configuration", 2),
        mfe.HardwareError: ("configuration", 2), mfe.DatabaseError: ("internal", 1),
    }
    for cls, (kind, code) in expected.items():
        exc = cls("what went wrong")
        assert (exc.kind, exc.exit_code, str(exc), exc.message) == (kind, code, "what went wrong", "what went wrong")
        assert isinstance(exc, mfe.ModelForgeException) and isinstance(exc, errors.ModelForgeError)
    assert isinstance(mfe.ProviderError("x"), errors.ProviderError)
    assert isinstance(mfe.ModelAccessError("x"), errors.ModelAccessError)


def test_modelforges_factory_and_valid_providers_are_the_registry() -> None:
    from ModelForge.providers.provider_factory import PROVIDER_REGISTRY, ProviderFactory, create_provider
    from ModelForge.schemas.training_schemas import VALID_PROVIDERS
    from providers import provider_factory

    class Echo:
        def load_model(self, model_id, model_class, quantization_config=None, device_map="auto", **kwargs):
            return model_id

        def load_tokenizer(self, model_id, **kwargs):
            return None

        def validate_model_access(self, model_id, model_class):
            return True

        def get_provider_name(self):
            return "echo"

    assert "echo" not in VALID_PROVIDERS
    ProviderFactory.register_provider("Echo", Echo)
    try:
        assert create_provider("echo").load_model("m", "C") == "m"
        assert ProviderFactory.create_provider("ECHO").get_provider_name() == "echo"
        assert "echo" in VALID_PROVIDERS and "echo" in ProviderFactory.get_available_providers()
        assert list(VALID_PROVIDERS) == sorted(PROVIDER_REGISTRY)
    finally:
        provider_factory.load_registry()
    assert "echo" not in VALID_PROVIDERS  # a view, not a copy
    from ModelForge.exceptions import ConfigurationError as MFConfigurationError
    from ModelForge.exceptions import ProviderError as MFProviderError

    with pytest.raises(MFConfigurationError, match=r"Unknown provider: nope. Available providers: \["):
        ProviderFactory.create_provider("nope")  # ModelForge's class raises ConfigurationError
    with pytest.raises(MFProviderError, match=r"Unknown provider: nope. Available providers: \["):
        create_provider("nope")  # the guide's function raises ProviderError
    with pytest.raises(MFProviderError, match="lacks load_tokenizer"):
        ProviderFactory.register_provider("half", type("Half", (), {"load_model": lambda self: None}))


def test_an_extending_lock_keeps_only_what_the_parent_lacks() -> None:
    lock = textwrap.dedent("""\
        # This file was autogenerated by uv via the following command:
        #    uv pip compile --generate-hashes requirements.in -o requirements.cpu.txt
        numpy==2.3.0 \\
            --hash=sha256:aa
            # via rich
        rich==15.0.0 \\
            --hash=sha256:bb
            # via -r requirements.in
        """)
    kept = provider_kit._keep_new_pins(lock, {"numpy": "2.3.0"})
    assert "numpy" not in kept and "rich==15.0.0" in kept and "--hash=sha256:bb" in kept and kept.startswith("# This file")


def test_an_unsolvable_lock_is_one_line() -> None:
    stderr = ("  × No solution found when resolving dependencies:\n  ╰─▶ Because you require pydantic>=2.7 and "
              "pydantic<2, we can conclude that your requirements are unsatisfiable.\n")
    assert provider_kit._conflict_line(stderr) == ("No solution found when resolving dependencies: Because you require "
                                                   "pydantic>=2.7 and pydantic<2, we can conclude that your "
                                                   "requirements are unsatisfiable.")
