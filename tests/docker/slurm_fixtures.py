"""A real one-node Slurm cluster on this machine (Debian's slurm-wlm and munge, installed by
`make services`): munged, slurmctld and slurmd started with a config in a temporary folder, the node
declaring one GPU GRES backed by a stand-in device file (Slurm refuses a count-only GPU line)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SLURM_BIN = Path("/usr/sbin/slurmctld")


def _munge_works() -> bool:
    if not Path("/usr/bin/munge").exists():
        return False
    encoded = subprocess.run(["/usr/bin/munge", "-n"], capture_output=True, check=False)
    if encoded.returncode != 0:
        return False
    return subprocess.run(["/usr/bin/unmunge"], input=encoded.stdout, capture_output=True,
                          check=False).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Yields the path of the cluster's slurm.conf (what SLURM_CONF must name)."""
    if os.getuid() != 0:
        pytest.skip("starting slurmctld and slurmd needs root")
    if not SLURM_BIN.exists():
        pytest.fail("slurm-wlm is not installed: run `make services` (or `make test`, which does)")
    with one_node_slurm(tmp_path_factory.mktemp("slurm")) as conf:
        yield conf


@pytest.fixture(scope="session")
def two_node_slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A second cluster of two nodes, mf1 and mf2: two slurmd daemons on this host (``slurmd -N``, Debian's
    build supports several per host), one CPU each, at 127.0.0.1 and 127.0.0.2, on their own ports."""
    if os.getuid() != 0:
        pytest.skip("starting slurmctld and slurmd needs root")
    if not SLURM_BIN.exists():
        pytest.fail("slurm-wlm is not installed: run `make services` (or `make test`, which does)")
    with slurm(tmp_path_factory.mktemp("slurm2"), nodes=["mf1", "mf2"], ctld_port=16827) as conf:
        yield conf


@contextlib.contextmanager
def one_node_slurm(root: Path) -> Iterator[Path]:
    """Start munged (if none answers), slurmctld and slurmd for one node configured in ``root``."""
    with slurm(root, nodes=None, ctld_port=16817) as conf:
        yield conf


def _start_munge() -> None:
    if _munge_works():
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    subprocess.run(["/usr/sbin/munged", "--force"], check=True)
    deadline = time.monotonic() + 10
    while not _munge_works():
        if time.monotonic() > deadline:
            raise RuntimeError("munged did not start")
        time.sleep(0.1)


@contextlib.contextmanager
def slurm(root: Path, nodes: list[str] | None, ctld_port: int) -> Iterator[Path]:
    """A cluster configured in ``root``: one node named after this host with a GPU GRES (``nodes`` None), or
    the named nodes, each its own slurmd on this host."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    started: list[subprocess.Popen] = []
    _start_munge()
    host = socket.gethostname()
    conf = root / "slurm.conf"
    lines = [
        f"ClusterName=mftest{len(nodes or [])}", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={ctld_port}",
        "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "DefMemPerCPU=2000", "GresTypes=gpu",
        f"StateSaveLocation={root}/state", f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log", "SlurmUser=root", "ReturnToService=2", "KillWait=30",
        "MinJobAge=600", "MpiDefault=none", "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
    ]
    if nodes is None:
        gpu = root / "gpu0"
        subprocess.run(["mknod", str(gpu), "c", "1", "3"], check=True)  # a stand-in device node for the GPU GRES
        lines += [f"SlurmdPort={ctld_port + 1}", f"SlurmdSpoolDir={root}/spool", f"SlurmdPidFile={root}/slurmd.pid",
                  f"SlurmdLogFile={root}/log/slurmd.log",
                  f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=20000 Gres=gpu:1 State=UNKNOWN",
                  f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP"]
        (root / "gres.conf").write_text(f"NodeName={host} Name=gpu File={gpu}\n")
        daemons = [["slurmd"]]
    else:
        lines += [f"SlurmdSpoolDir={root}/spool/%n", f"SlurmdPidFile={root}/slurmd-%n.pid",
                  f"SlurmdLogFile={root}/log/slurmd-%n.log"]
        # each node its own loopback address, as nodes have their own addresses: torchrun tells nodes apart by
        # address and process id, and two containers' launchers can have the same pid in their own namespaces
        lines += [f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.{1 + i} Port={ctld_port + 1 + i} CPUs=1 "
                  "RealMemory=8000 State=UNKNOWN" for i, name in enumerate(nodes)]
        lines.append(f"PartitionName=debug Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP")
        for name in nodes:
            (root / "spool" / name).mkdir()
        daemons = [["slurmd", "-N", name] for name in nodes]
    conf.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for daemon in [["slurmctld"], *daemons]:
        log = (root / "log" / f"{'-'.join(daemon)}.out").open("w")
        started.append(subprocess.Popen([f"/usr/sbin/{daemon[0]}", "-D", "-f", str(conf), *daemon[1:]], env=env,
                                        stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 30
    while True:
        info = subprocess.run(["/usr/bin/sinfo", "--noheader", "--format=%T"], env=env, capture_output=True,
                              text=True, check=False)
        states = info.stdout.split()
        if info.returncode == 0 and states and all(st in ("idle", "mixed", "allocated") for st in states):
            break
        if time.monotonic() > deadline:
            for proc in started:
                proc.kill()
            logs = "".join(f.read_text()[-400:] for f in sorted((root / "log").glob("*.out")))
            raise RuntimeError(f"the Slurm cluster did not come up: {info.stdout} {info.stderr} {logs}")
        time.sleep(0.2)
    try:
        yield conf
    finally:
        subprocess.run(["/usr/bin/scancel", "--full", "--user=root"], env=env, capture_output=True, check=False)
        for proc in reversed(started):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
