"""Shared fixtures: keep the developer's plugins, HF token and caches out of every test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session", autouse=True)
def runs_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run history the tests' `mf` processes write (not the developer's), from the session's start: module
    fixtures that run jobs come before any function's monkeypatch."""
    import os

    path = tmp_path_factory.mktemp("run-history") / "runs.sqlite"
    before = os.environ.get("MF_RUNS_DB")
    os.environ["MF_RUNS_DB"] = str(path)
    yield path
    if before is None:
        os.environ.pop("MF_RUNS_DB", None)
    else:
        os.environ["MF_RUNS_DB"] = before


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("MODELFORGE_LOAD_PLUGINS", "")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("MF_DEBUG", raising=False)
    hf_home = tmp_path_factory.mktemp("hf-home")
    hf_home.chmod(0o755)  # readable by the job user, as a cache under ~/.cache is
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_model() -> Path:
    if not DEMO_MODEL.exists():
        pytest.fail(f"{DEMO_MODEL} is missing: run `make model`")
    return DEMO_MODEL


@pytest.fixture
def truncated_gguf(demo_model: Path, tmp_path: Path) -> Path:
    """The first 5 MB of the real model: a valid header whose tensor data is cut off."""
    path = tmp_path / "truncated.gguf"
    with demo_model.open("rb") as src:
        path.write_bytes(src.read(5_000_000))
    return path


@pytest.fixture
def text_named_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "notes.gguf"
    path.write_text("these are notes, not a model\n")
    return path


@pytest.fixture
def model_copy_with_spaces(demo_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "my models"
    folder.mkdir()
    target = folder / "small model.gguf"
    shutil.copyfile(demo_model, target)
    return target


PLUGINS_SRC = ROOT / "tests" / "plugins"
#: the guide's files (tests/fixtures/guide/test_custom_provider.py runs in an image, not under pytest)
collect_ignore = ["fixtures"]


@pytest.fixture(scope="session")
def plugin_site() -> Path:
    """The test plugins (tests/plugins/*), pip-installed into a folder of their own, once per content."""
    import hashlib
    import subprocess
    import sys

    sources = sorted(p for p in PLUGINS_SRC.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    site = ROOT / ".cache" / "test-plugins" / digest
    if not (site / ".complete").exists():
        shutil.rmtree(site, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--target", str(site), *(str(d) for d in sorted(PLUGINS_SRC.iterdir()) if d.is_dir())],
            check=True,
        )
        (site / ".complete").touch()
    return site


@pytest.fixture
def use_plugins(monkeypatch: pytest.MonkeyPatch, plugin_site: Path):
    """Make the test plugins visible to `mf` subprocesses; returns a function that picks which load."""

    def enable(*dists: str) -> None:
        monkeypatch.setenv("PYTHONPATH", str(plugin_site))
        monkeypatch.setenv("MODELFORGE_LOAD_PLUGINS", ",".join(dists))

    return enable
