"""How many threads a job runs: its CPU budget from the cgroup (v1 and v2 files as the kernel writes them),
and the count that steps down while other processes use the CPUs (from /proc counters written here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from providers.common import cpus
from providers.common.cpus import CpuWatch, cgroup_quota, cpu_budget


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_quota_from_cgroup_v2(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    write(tmp_path / "cpu.max", "max 100000\n")
    assert cgroup_quota(tmp_path) is None


def test_quota_from_cgroup_v1(tmp_path: Path) -> None:
    write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "50000\n")
    write(tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(tmp_path) == 0.5
    write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_quota(tmp_path) is None
    assert cgroup_quota(tmp_path / "nothing-here") is None


@pytest.mark.parametrize(("quota", "cores", "budget"), [
    ("max 100000", 8, 8), ("100000 100000", 8, 1), ("150000 100000", 8, 2), ("50000 100000", 8, 1),
    ("400000 100000", 2, 2),  # a quota above the cpuset: the cpuset wins
    ("102000 100000", 8, 1),  # a hair over one CPU is one thread, not two half-starved ones
])
def test_budget_is_the_smaller_of_cpuset_and_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota: str,
                                                   cores: int, budget: int) -> None:
    write(tmp_path / "cpu.max", quota)
    monkeypatch.setattr(cpus, "_affinity", lambda: set(range(cores)))
    assert cpu_budget(tmp_path) == budget


class FakeProc:
    """/proc/stat (two CPUs) and /proc/self/stat, advanced by hand: who was busy, for how long."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.busy = [0, 0]
        self.own = 0
        self.write()

    def write(self) -> None:
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
        lines += [f"cpu{i} {b} 0 0 {10_000 - b} 0 0 0 0 0 0" for i, b in enumerate(self.busy)]
        write(self.root / "stat", "\n".join(lines) + "\nintr 0\n")
        fields = ["S"] + ["0"] * 10 + [str(self.own), "0"] + ["0"] * 30
        write(self.root / "self" / "stat", "42 (python (x)) " + " ".join(fields) + "\n")

    def tick(self, others: float, ours: float, seconds: float) -> None:
        """``others`` and ``ours`` CPUs' worth of work for ``seconds`` (100 ticks a second)."""
        hz = os.sysconf("SC_CLK_TCK")
        share = (others + ours) * seconds * hz / 2
        self.busy = [b + round(share) for b in self.busy]
        self.own += round(ours * seconds * hz)
        self.write()


def test_watch_keeps_every_cpu_when_idle_and_steps_down_when_busy(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(cpus.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cpus, "_affinity", lambda: {0, 1})
    proc = FakeProc(tmp_path)
    watch = CpuWatch(2, proc=tmp_path)

    def after(others: float, ours: float, seconds: float = 0.5) -> int:
        proc.tick(others, ours, seconds)
        clock[0] += seconds
        return watch.threads_now()

    assert after(others=0.05, ours=2.0) == 2      # idle but for noise: both threads
    assert after(others=0.67, ours=1.33) == 1     # a busy neighbour, with our two threads fighting it
    assert after(others=1.0, ours=1.0) == 1       # ... stays at one while it runs
    assert after(others=1.33, ours=0.67) == 1     # two neighbours
    assert after(others=0.0, ours=1.0) == 2       # it ended: both threads again
    proc.tick(others=1.0, ours=1.0, seconds=0.1)
    clock[0] += 0.1
    assert watch.threads_now() == 2, "looks again only after interval_s"


def test_watch_with_one_cpu_or_no_proc_keeps_the_budget(tmp_path: Path) -> None:
    assert CpuWatch(1, proc=tmp_path).threads_now(wait=True) == 1
    assert CpuWatch(4, proc=tmp_path / "missing").threads_now(wait=True) == 4
