"""The CI workflow builds every image recipe, with the Make targets that exist, and `.ci/run` runs them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from orchestrator.recipes import flavours
from providers.provider_factory import available_providers

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "images.yml"


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_every_recipe_has_a_matrix_job_and_no_job_lacks_a_recipe() -> None:
    matrix = {(e["provider"], e["flavour"]) for e in _workflow()["jobs"]["image"]["strategy"]["matrix"]["include"]}
    recipes = {(name, flavour) for name in available_providers() for flavour in flavours(name)}
    assert recipes, "no recipes found"
    assert matrix == recipes, f"missing jobs: {sorted(recipes - matrix)}; jobs without a recipe: {sorted(matrix - recipes)}"


def test_the_workflow_calls_only_make_targets_that_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z][a-zA-Z0-9%_-]*):", makefile, flags=re.M))
    runs = [step["run"] for job in _workflow()["jobs"].values() for step in job["steps"] if "run" in step]
    called = {t for run in runs for t in re.findall(r"\bmake ((?:[a-z][\w-]*\s*)+)", run) for t in t.split()}
    called = {t.split("$")[0] for t in called if "=" not in t}
    for target in called:
        assert target in targets or any(t.endswith("%") and target.startswith(t[:-1]) for t in targets), target


def test_ci_runs_the_workflow_steps_with_the_same_targets() -> None:
    assert "scripts/ci-workflow-steps.sh" in (ROOT / ".ci" / "run").read_text()
    steps = (ROOT / "scripts" / "ci-workflow-steps.sh").read_text()
    workflow = WORKFLOW.read_text()
    for target in ("image-", "test-image", "push-image", "release"):
        assert re.search(rf"\bmake {target}", steps), f"ci-workflow-steps.sh does not run `make {target}`"
        assert re.search(rf"\bmake (venv )?{target}", workflow), f"the workflow does not run `make {target}`"
