"""Pure logic of the engine requests: GPU device requests from --gpus, and flavour choice."""

from __future__ import annotations

import pytest

from orchestrator import images
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
