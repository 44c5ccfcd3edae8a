"""`mf doctor --model`'s training estimate against the real thing: the memory peak of a LoRA run of the bundled
SmolLM2-135M (its job container's cgroup high-water mark, read from the host while the container lives) is within
25% of ``estimate.training.total``, at batch 1 and 4, with the settings the doctor estimated."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.doctor import cgroup_memory_peak_file

from .conftest import JOB_LABEL, SESSION_LABEL, mf

SEQ = 256  # tokens per sequence: activations a third of the peak at batch 1, two thirds at batch 4
TEXT = " ".join(f"The capital of {c} is {p}." for c, p in [("France", "Paris"), ("Italy", "Rome"),
                                                           ("Spain", "Madrid"), ("Japan", "Tokyo")]) + " "


class PeakWatcher:
    """Polls the memory high-water mark of this session's next job container from the host until it is gone."""

    def __init__(self, client: Any) -> None:
        self.peak = 0
        self.found: Path | None = None
        self._client = client
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            if self.found is None:
                for container in self._client.containers.list(filters={"label": [JOB_LABEL, SESSION_LABEL]}):
                    pid = self._client.api.inspect_container(container.id)["State"]["Pid"]
                    self.found = cgroup_memory_peak_file(pid) if pid else None
            if self.found is not None:
                try:
                    self.peak = max(self.peak, int(self.found.read_text().split()[0]))
                except (OSError, ValueError, IndexError):
                    pass  # the container has ended; its last reading stands
            time.sleep(0.05)

    def stop(self) -> int:
        self._done.set()
        self._thread.join(timeout=10)
        return self.peak


def evict_page_cache(folder: Path) -> None:
    """Drop the checkpoint's pages from the page cache, so that the run reads them again and its cgroup is charged
    for them, as the estimate counts the weights (pages already cached stay charged to whoever read them first)."""
    for item in folder.iterdir():
        fd = os.open(item, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@pytest.mark.parametrize("batch", [1, 4])
def test_lora_peak_is_within_25_percent_of_the_estimate(smollm2_hf: Path, tmp_path: Path, docker_client: Any,
                                                        batch: int) -> None:
    doctor = mf("doctor", "--model", str(smollm2_hf), "--batch-size", str(batch), "--max-seq-length", str(SEQ), "--json")
    assert doctor.code == 0, doctor.stderr
    training = json.loads(doctor.stdout)["estimate"]["training"]
    settings = training["settings"]
    assert training["fits"] and settings["strategy"] == "lora" and settings["batch_size"] == batch

    tmp_path.chmod(0o755)
    data = tmp_path / "data.jsonl"  # every record longer than SEQ tokens: each sequence is cut to SEQ, as estimated
    data.write_text("".join(json.dumps({"text": f"{i}. " + TEXT * 20}) + "\n" for i in range(8)))
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"train": {
        "max_steps": 2, "batch_size": batch, "max_seq_length": SEQ, "save_steps": 1000, "lora_r": settings["lora_r"],
        "gradient_checkpointing": settings["gradient_checkpointing"]}}))
    if not Path(f"/proc/{os.getpid()}/cgroup").exists():
        pytest.skip("no /proc here: the job container's cgroup cannot be read")
    evict_page_cache(smollm2_hf)
    watcher = PeakWatcher(docker_client)
    try:
        res = mf("run", "--provider", "huggingface", "train", "--model", str(smollm2_hf), "--dataset", str(data),
                 "--output", str(tmp_path / "run"), "--config", str(config), "--json", timeout=600)
    finally:
        peak = watcher.stop()
    assert res.code == 0, res.stderr
    assert watcher.found is not None, "the job container's cgroup memory file was not found"
    reported = res.last.get("cgroup_memory_peak_bytes")  # the job's own reading at its end: the same counter
    estimate = training["total"]
    figures = (f"batch {batch} x {SEQ}: peak {peak / 1e6:.0f} MB (the job read {(reported or 0) / 1e6:.0f} MB), "
               f"estimate {estimate / 1e6:.0f} MB, {100 * (estimate / peak - 1):+.1f}%")
    print(figures)
    assert abs(estimate / peak - 1) <= 0.25, figures
