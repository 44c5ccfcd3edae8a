"""How many CPUs a job really has, and how many of them are free right now.

Two things make a thread count go wrong in a container. The host's core count is not the job's budget: a
CPU quota (``docker run --cpus``, a Kubernetes CPU limit, Slurm's cgroup) or a cpuset gives it fewer.
And a thread pool whose threads spin at every barrier (llama.cpp's ggml always does; OpenMP does for a
while) collapses when it has as many threads as the CPUs and anything else runs on them: the threads that
are running spin, waiting for the one that is descheduled, hundreds of times per token (measured on 2 cores,
SmolLM2 Q4_1: 89 tokens/s idle with 2 threads, 0.8 tokens/s with one busy process beside it; 49 with one
thread either way). :func:`cpu_budget` answers the first; :class:`CpuWatch` the second, from the kernel's
per-CPU counters, so that a job can use every CPU when the machine is idle and step down when it is not.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

#: where cgroup v2 and v1 keep a container's CPU quota (a cgroup namespace shows the container's own)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup quota allows (1.5 for ``--cpus 1.5``), or None where there is none."""
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # cgroup v1
        try:
            quota_us = int((root / folder / "cpu.cfs_quota_us").read_text())
            period_us = int((root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def cpu_budget(root: Path = CGROUP_ROOT) -> int:
    """The threads worth running: the CPUs this process may run on (its cpuset), fewer where a CPU quota
    allows less (rounded up: a quota of 1.5 CPUs keeps 2 threads busy)."""
    cpus = len(_affinity())
    quota = cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 0.05)))
    return max(1, cpus)


def _busy_ticks(cpus: set[int], stat: Path) -> int:
    """Clock ticks the given CPUs spent doing anything but idling, since boot (all processes)."""
    total = 0
    with stat.open() as lines:
        for line in lines:
            if not line.startswith("cpu") or not line[3:4].isdigit():
                continue
            fields = line.split()
            if int(fields[0][3:]) in cpus:
                v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
                total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total


def _own_ticks(stat: Path) -> int:
    """Clock ticks this process (all its threads) has used, user and system."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class CpuWatch:
    """Threads to use now: the budget, less the CPUs' worth of time other processes took on this job's CPUs
    since the last look. One thread at least. Cheap (two small reads of /proc), so callable per token.

    Others' load is measured, not guessed: busy time on the job's CPUs (host-wide counters; /proc/stat is not
    namespaced) minus this process's own. A busy neighbour taking one CPU of two leaves one thread; an idle
    machine keeps them all."""

    #: how long between two looks; a decision in between keeps the last answer
    interval_s = 0.2
    #: CPUs' worth of others' time that still leaves a CPU to us (noise, short bursts)
    slack = 0.4

    def __init__(self, budget: int | None = None, *, proc: Path = Path("/proc")) -> None:
        self.budget = budget or cpu_budget()
        self.cpus = _affinity()
        self._stat, self._self = proc / "stat", proc / "self" / "stat"
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.threads = self.budget
        self.others = 0.0
        self._last = self._sample()

    def _sample(self) -> tuple[int, int, float] | None:
        try:
            return _busy_ticks(self.cpus, self._stat), _own_ticks(self._self), time.monotonic()
        except (OSError, ValueError, IndexError):
            return None  # no /proc (not Linux): keep the budget

    def threads_now(self, *, wait: bool = False) -> int:
        """The thread count for the next piece of work. Looks again when ``interval_s`` has passed since the
        last look (with ``wait``, sleeps out the rest of a first interval of at least 50 ms, so a decision made
        right before a long piece of work is not a guess)."""
        if self.budget == 1 or self._last is None:
            return self.threads
        elapsed = time.monotonic() - self._last[2]
        if wait and elapsed < 0.05:
            time.sleep(0.05 - elapsed)
        elif elapsed < self.interval_s and not wait:
            return self.threads
        now = self._sample()
        if now is None:
            return self.threads
        busy, own, at = now
        seconds = (at - self._last[2]) * self._hz
        self.others = max(0.0, ((busy - self._last[0]) - (own - self._last[1])) / seconds) if seconds > 0 else 0.0
        self._last = now
        self.threads = max(1, min(self.budget, int(self.budget - self.others + self.slack)))
        return self.threads


class TorchThreads:
    """PyTorch's intra-op thread count kept to what the CPUs can give (see :class:`CpuWatch`), for a model
    on the CPU. ``fit()`` is cheap: call it per token or per training step. Fixed (no watching) where the
    count was given (``n_threads``) or ``OMP_NUM_THREADS`` is set (torchrun's ranks share the CPUs that
    way); a no-op for a model on a GPU."""

    def __init__(self, n_threads: int | None = None) -> None:
        self.fixed = n_threads or (int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS", "").isdigit()
                                   else None)
        self.watch = None if self.fixed else CpuWatch()  # created early: its first look spans the model's load
        self._applied: int | None = None

    def fit(self, *, on_cpu: bool = True, wait: bool = False) -> int | None:
        """Set and return the thread count for the next piece of work (None: left alone, not on the CPU)."""
        if not on_cpu:
            return None
        import torch

        threads = self.fixed or (self.watch.threads_now(wait=wait) if self.watch else None)
        if threads and threads != self._applied:
            torch.set_num_threads(threads)
            self._applied = threads
        return threads
