"""How much memory a training job holds, sampled while it runs (reported in its result and manifest)."""

from __future__ import annotations

import os
from pathlib import Path


class MemoryWatch:
    """The job's memory high-water marks, sampled every 50 ms from ``/proc/self/status``:

    - ``peak_anon_bytes``: anonymous memory (``RssAnon``), what the kernel cannot drop under pressure;
    - ``train_peak_rss_bytes``: the resident set (``VmRSS``) while training, i.e. anonymous memory plus the
      model file's pages that stay mapped (a float32 base is used from safetensors' mmap; a quantized base
      is copied and its file no longer needed): the working set training needs to run at speed;
    - ``peak_rss_bytes``: the kernel's peak RSS over the whole job, loading included;
    - in a container, ``cgroup_memory_peak_bytes``: its cgroup's peak (``memory.peak`` on cgroup v2,
      ``memory.max_usage_in_bytes`` on v1), the page cache it read first included;
    - on a GPU, ``gpu_peak_allocated_bytes``: the most this process's tensors held on its device at once
      (PyTorch's allocator; what nvidia-smi shows is that plus the allocator's cache and CUDA's context)."""

    def __init__(self) -> None:
        import threading

        self.peak_anon = self.peak_train_rss = 0
        self.training = False
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="mf-memory")
        self._thread.start()

    def _sample(self) -> None:
        try:
            fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
                          if line.startswith(("RssAnon:", "VmRSS:")))
            anon, rss = (int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "VmRSS"))
        except (OSError, ValueError, KeyError):
            return
        self.peak_anon = max(self.peak_anon, anon)
        if self.training:
            self.peak_train_rss = max(self.peak_train_rss, rss)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def stop(self) -> dict[str, int]:
        import resource

        self._sample()
        self._stop.set()
        self._thread.join(timeout=1)
        peaks = {"peak_anon_bytes": self.peak_anon, "train_peak_rss_bytes": self.peak_train_rss,
                 "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        if os.environ.get("MF_IMAGE"):  # outside a container the cgroup is the whole machine's
            for path in ("/sys/fs/cgroup/memory.peak", "/sys/fs/cgroup/memory/memory.max_usage_in_bytes"):
                try:
                    peaks["cgroup_memory_peak_bytes"] = int(Path(path).read_text().split()[0])
                    break
                except (OSError, ValueError, IndexError):
                    continue
        import sys

        torch = sys.modules.get("torch")  # never imported for this alone
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            peaks["gpu_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        return peaks
