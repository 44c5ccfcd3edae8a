"""The builder stage kept as its own image: which stage is it, and the Dockerfile that takes it from there."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import recipes

RECIPE = """\
# syntax comment
ARG BASE_BUILD=modelforge/base:build
ARG BASE=modelforge/base:runtime

FROM ${BASE_BUILD} AS builder
ARG CUDA_ARCHITECTURES="80-real;90"
COPY requirements.build.txt /tmp/locks/
COPY wheels /tmp/wheels
RUN pip install --no-index /tmp/wheels/*.whl \\
 && rm -rf /tmp/wheels

FROM ${BASE}
COPY --from=builder /opt/venv /opt/venv
COPY app /opt/modelforge
USER mf
"""


def test_the_stage_runs_from_its_from_line_to_the_next() -> None:
    stage = recipes.builder_stage(RECIPE)
    assert stage is not None
    assert stage.startswith("FROM ${BASE_BUILD} AS builder\n") and stage.rstrip().endswith("rm -rf /tmp/wheels")
    assert recipes.builder_stage(RECIPE.replace("AS builder", "AS compile")) is None


def test_the_image_is_built_from_the_kept_stage_with_nothing_else_of_it() -> None:
    out = recipes.builder_stage_from(RECIPE, "modelforge/gguf-builder:cuda-0123456789ab")
    assert "FROM modelforge/gguf-builder:cuda-0123456789ab AS builder\n" in out
    # the stage's inputs and steps are gone; the global ARGs and the later stage are untouched
    assert "wheels" not in out and "CUDA_ARCHITECTURES" not in out and "pip install" not in out
    assert out.startswith("# syntax comment\nARG BASE_BUILD=modelforge/base:build\nARG BASE=modelforge/base:runtime\n")
    assert out.endswith(RECIPE[RECIPE.index("FROM ${BASE}\n"):])


@pytest.mark.parametrize("copy", ["COPY app /opt/modelforge", "COPY --chown=mf ./app/providers /x", "ADD app/ /x"])
def test_a_builder_stage_that_copies_the_code_is_not_kept(tmp_path: Path, copy: str) -> None:
    (tmp_path / "Dockerfile").write_text(RECIPE.replace("COPY wheels /tmp/wheels", f"COPY wheels /tmp/wheels\n{copy}"))
    (tmp_path / "requirements.cpu.txt").write_text("")
    assert not recipes.ImageSpec("tiny", "cpu", tmp_path).has_builder_stage
    (tmp_path / "Dockerfile").write_text(RECIPE.replace("COPY wheels /tmp/wheels", "COPY apply.sh /tmp/"))
    assert recipes.ImageSpec("tiny", "cpu", tmp_path).has_builder_stage


def test_every_recipe_here_keeps_its_builder_stage() -> None:
    for spec in recipes.all_specs():
        assert spec.has_builder_stage, spec.dockerfile
        rewritten = recipes.builder_stage_from(spec.dockerfile.read_text(), spec.builder_tag)
        assert f"FROM {spec.builder_tag} AS builder" in rewritten and "COPY wheels" not in rewritten
        assert spec.builder_tag == f"modelforge/{spec.provider}-builder:{spec.flavour}-{spec.build_hash}"
