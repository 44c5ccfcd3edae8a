"""A plugin provider (tests/plugins/custom_provider) gets its own image from its own lock and runs
jobs in it on the real SmolLM2 checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import mf

CUSTOM = "modelforge-custom-provider"


def test_a_plugin_gets_its_own_image_and_runs_in_it(use_plugins, smollm2_hf: Path, docker_client: Any,
                                                    tmp_path: Path) -> None:
    use_plugins(CUSTOM)
    built = mf("images", "build", "custom", timeout=1200)
    assert built.code == 0, built.stderr
    tag = built.stdout.split()[0]
    assert tag.startswith("modelforge/custom:cpu-")
    labels = docker_client.images.get(tag).labels
    assert labels["org.modelforge.provider"] == "custom"
    assert "transformers==" in labels["org.modelforge.versions"]

    rows = {row["name"]: row for row in json.loads(mf("providers", "--json").stdout)}
    assert rows["custom"]["image"] == tag and rows["custom"]["built"] is True

    res = mf("run", "--provider", "custom", "validate", "--model", str(smollm2_hf), "--json")
    assert res.code == 0, res.stderr
    assert res.last["provider"] == "custom" and res.last["valid"] is True

    config = tmp_path / "job.json"
    config.write_text(json.dumps({"provider_config": {"optimization_level": "aggressive", "use_custom_kernels": False}}))
    res = mf("run", "--provider", "custom", "load", "--model", str(smollm2_hf), "--config", str(config), "--json")
    assert res.code == 0, res.stderr
    logs = [e["message"] for e in res.events if e["event"] == "log"]
    assert "Applying custom optimizations (level=aggressive, custom kernels=False)" in logs
    assert res.last["load_seconds"] > 0


def test_the_plugins_own_errors_cross_the_wall(use_plugins, hf_image: str, tmp_path: Path) -> None:
    use_plugins(CUSTOM)
    (tmp_path / "not-a-model").mkdir()
    res = mf("run", "--provider", "custom", "validate", "--model", str(tmp_path / "not-a-model"), timeout=1200)
    assert res.code == 3, res.stderr
    assert "Error: Cannot access model /models/not-a-model: no config.json." in res.stderr
