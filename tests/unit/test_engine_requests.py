"""Pure logic of the engine requests: GPU device requests from --gpus, and flavour choice."""

from __future__ import annotations

import pytest

from orchestrator import engine, images, recipes
from orchestrator.engine import gpu_device_requests


@pytest.mark.parametrize(
    "gpus, expected",
    [
        (None, []),
        ("none", []),
        ("all", [{"Count": -1, "DeviceIDs": []}]),
        ("2", [{"Count": 2, "DeviceIDs": []}]),
        ("device=0,1", [{"Count": 0, "DeviceIDs": ["0", "1"]}]),
    ],
)
def test_gpus_option_maps_to_device_requests(gpus: str | None, expected: list[dict]) -> None:
    requests = gpu_device_requests(gpus)
    assert [{"Count": r.get("Count"), "DeviceIDs": r.get("DeviceIDs")} for r in requests] == expected
    assert all(r["Capabilities"] == [["gpu"]] for r in requests)


def test_flavour_follows_the_host() -> None:
    assert images.resolve_flavour("huggingface", gpu_host=False) == "cpu"
    assert images.resolve_flavour("huggingface", gpu_host=True) == "cuda"
    # a CUDA-only image still runs validate on a CPU host; GPU jobs are refused earlier
    assert images.resolve_flavour("unsloth", gpu_host=False) == "cuda"
    assert images.resolve_flavour("huggingface", "cpu", gpu_host=True) == "cpu"
    # gguf has both since its cuda image: a GPU host gets llama.cpp's CUDA backend without asking
    assert images.resolve_flavour("gguf", gpu_host=True) == "cuda"
    assert images.resolve_flavour("gguf", gpu_host=False) == "cpu"


def test_the_engine_is_asked_for_the_flavour_only_when_none_is_named(monkeypatch) -> None:
    asked: list[str] = []

    def has_nvidia_runtime() -> bool:
        asked.append("asked")
        return True

    monkeypatch.setattr(engine, "has_nvidia_runtime", has_nvidia_runtime)
    assert images.resolve_flavour("gguf", "cpu") == "cpu" and not asked
    assert recipes.image_spec("gguf", None, False).flavour == "cpu" and not asked  # the recipe alone asks nothing
    assert images.image_spec("gguf").flavour == "cuda" and asked == ["asked"]


def test_a_flavour_with_its_own_dockerfile_and_build_lock() -> None:
    cuda, cpu = recipes.image_spec("gguf", "cuda", False), recipes.image_spec("gguf", "cpu", False)
    assert recipes.flavours("gguf") == ["cpu", "cuda"]  # requirements.build*.txt are not flavours
    assert cuda.dockerfile.name == "Dockerfile.cuda" and cpu.dockerfile.name == "Dockerfile"
    assert [p.name for p in cuda.locks] == ["requirements.cuda.txt", "requirements.build.txt",
                                            "requirements.build.cuda.txt"]
    assert [p.name for p in cpu.locks] == ["requirements.cpu.txt", "requirements.build.txt"]
    assert cuda.driver_floor == "580.65.06" and cpu.driver_floor is None
    # the toolkit it compiles with is the runtime it ships: the same CUDA libraries, pinned alike
    build = recipes.lock_versions(cuda.recipe / "requirements.build.cuda.txt")
    run = recipes.lock_versions(cuda.lock)
    for name in ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-cuda-nvrtc"):
        assert build[name] == run[name], name
    assert build["nvidia-cuda-nvcc"].split(".")[:2] == run["nvidia-cuda-runtime"].split(".")[:2]


def test_a_flavour_that_is_not_there_names_the_ones_that_are(tmp_path, monkeypatch) -> None:
    from providers.errors import ImageError

    recipe = tmp_path / "plugin"
    recipe.mkdir()
    (recipe / "requirements.cpu.txt").write_text("")
    (recipe / "requirements.build.txt").write_text("")
    monkeypatch.setattr(recipes, "recipe_dir", lambda provider: recipe)
    with pytest.raises(ImageError) as caught:
        images.resolve_flavour("plugin", "cuda")
    assert caught.value.message == "Provider plugin has no 'cuda' flavour. Flavours: ['cpu']"
    assert "--flavour cpu" in caught.value.hint


@pytest.mark.parametrize(("driver", "refused"), [("535.104.05", True), ("580.65.06", False), ("590.1", False)])
def test_an_old_driver_is_refused_before_any_container(driver: str, refused: bool) -> None:
    from orchestrator.checks import check_driver_floor
    from providers.errors import ConfigurationError

    spec = images.image_spec("gguf", "cuda")
    if not refused:
        check_driver_floor(spec, driver)
        return
    with pytest.raises(ConfigurationError) as caught:
        check_driver_floor(spec, driver)
    assert caught.value.message == (f"This host's NVIDIA driver is {driver}; the gguf cuda image needs 580.65.06 "
                                    "or newer (its CUDA runtime's floor).")
    assert "--flavour cpu" in caught.value.hint
    check_driver_floor(images.image_spec("gguf", "cpu"), driver)  # no CUDA inside: any driver will do
    check_driver_floor(spec, None)  # a remote engine's driver is unknown here: `mf doctor` on that host says


@pytest.mark.parametrize("text", [
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc 12\n",
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build  (dvs-builder@U16)\n",
])
def test_the_driver_version_is_read_from_the_kernel_module(tmp_path, monkeypatch, text: str) -> None:
    from orchestrator import engine

    monkeypatch.setattr(engine, "_unix_socket", lambda: "/var/run/docker.sock")
    version_file = tmp_path / "version"
    version_file.write_text(text)
    assert engine.host_driver_version(version_file) == "535.104.05"


def test_a_build_that_fills_the_disk_says_so_and_what_to_free() -> None:
    from orchestrator.engine import build_failure

    tail = ["Step 5/12 : RUN pip install ...", "ERROR: Could not install packages due to an OSError: "
            "[Errno 28] No space left on device: '/opt/venv/lib/python3.11/site-packages/torch/lib/libtorch.so'"]
    err = build_failure("modelforge/unsloth:cuda-0123", "The command '/bin/sh -c pip install' returned a "
                        "non-zero code: 1", tail)
    assert err.message == "Building modelforge/unsloth:cuda-0123 failed: the Docker engine's disk is full."
    assert "mf images prune" in err.hint
    # the engine's own write errors say it in lower case, with no step output
    err = build_failure("t", "write /var/lib/docker/tmp/x: no space left on device", [])
    assert "disk is full" in err.message


def test_a_failed_step_names_its_own_error_line() -> None:
    from orchestrator.engine import build_failure

    tail = ["Collecting torch", "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.", "x"]
    err = build_failure("t", "The command returned a non-zero code: 1", tail)
    assert err.message == "Building t failed: ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE."
    assert "re-lock" in err.hint
