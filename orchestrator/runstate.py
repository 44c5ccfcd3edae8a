"""What a running `mf` holds on the host, and how the next `mf` recovers it when that `mf` was killed.

- **The output folder's lock.** An output folder belongs to one run at a time. `mf` holds an
  exclusive ``flock`` on ``<output>/.mf-run.lock`` for the run's life and writes who holds it (job,
  host, pid, start time) into the file. A second run into the folder is refused with that holder.
  The kernel releases the lock when its process dies however it dies (``kill -9`` included), so a
  killed `mf` leaves only the file: the next run takes the lock and reports what it recovered.
  Shared filesystems: Linux emulates ``flock`` with POSIX byte-range locks on NFS (v3 with lockd, v4),
  and CephFS, GPFS and Lustre (mounted with ``-o flock``) honour it across nodes; a lock held by a
  node that died is released when the server's lease expires (NFSv4: 90 s by default). SMB mounted
  with ``nobrl`` and sshfs do not lock across machines: do not share an output folder there.
- **Files to hand back.** When `mf` runs as root, the job runs as uid 1000 and the output folder is
  handed to it, then back to root when the job ends. A record under ``~/.cache/modelforge/runs/``
  says which folder to hand back to whom; a record whose `mf` is gone is handled by the next `mf`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.errors import ConfigurationError

LOCK_NAME = ".mf-run.lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, int | float) else "?"
    job = f"{holder.get('provider', '?')} {holder.get('action', '?')}"
    name = str(holder.get("job") or "")
    if name.startswith(("slurm-", "k8s-")):
        job += f" as {name}"
    elif name:  # a docker job's id is docker-<its container's name>
        job += f" in container {name.removeprefix('docker-')}"
    return f"{job}, mf pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}"


@dataclass
class OutputLock:
    """An exclusive lock on one output folder, held from :meth:`acquire` to :meth:`release`."""

    folder: Path
    fd: int | None = None
    #: what was in the lock file when this run took it: a run that ended without releasing it
    recovered: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self, holder: dict[str, Any],
                still_running: Callable[[dict[str, Any]], bool] | None = None) -> OutputLock:
        """Lock the folder for ``holder``. A detached job's record (see :meth:`keep`) holds the folder while
        ``still_running`` says that job has not ended."""
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                current = _read_holder(fd)
                os.close(fd)
                raise ConfigurationError(
                    f"{self.folder} is in use by another run ({_describe(current) if current else 'starting'}).",
                    "Wait for that run to end (or stop it), or pick another --output folder.",
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file as we opened it: lock the new one
                os.close(fd)
                continue
            previous = _read_holder(fd)
            if previous and previous.get("detached") and previous.get("job"):
                if still_running is not None and still_running(previous):
                    os.close(fd)
                    job = previous["job"]
                    raise ConfigurationError(
                        f"{self.folder} is in use by the detached job {job} ({_describe(previous)}).",
                        f"Follow it with `mf jobs logs {job} --follow`, stop it with `mf jobs cancel {job}`, "
                        "or pick another --output folder.",
                    )
            elif previous:  # a detached job that ended is no run to recover
                self.recovered = previous
            data = json.dumps({**holder, "host": socket.gethostname(), "pid": os.getpid(),
                               "started": time.time()}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            self.fd = fd
            return self
        raise ConfigurationError(f"Could not lock {self.folder}: its lock file keeps changing.",
                                 "Check that no other tool is deleting files in that folder, then run again.")

    def update(self, **fields: Any) -> None:
        if self.fd is None:
            return
        data = {**(_read_holder(self.fd) or {}), **fields}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(data).encode(), 0)

    def keep(self, **fields: Any) -> None:
        """Leave the folder to a job that goes on after `mf` returns (``detached``): the record stays, the
        kernel lock goes; the next run asks the job's backend whether it still runs."""
        if self.fd is None:
            return
        self.update(**fields)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it: a waiting run then locks a fresh file
        os.close(self.fd)
        self.fd = None


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        raw = os.pread(fd, 65536, 0)
        data = json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- handing files back after a job run for root ----------------------------------------------------
def _records_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "modelforge" / "runs"


def hand_back(folder: Path, uid: int, gid: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            os.lchown(path, uid, gid)


class HandbackRecord:
    """While the block runs, a record says that ``folder`` goes back to ``uid:gid`` if this `mf` dies. A
    record kept for a detached job (:meth:`keep`) is handled by a later `mf` once that job has ended."""

    def __init__(self, folder: Path, uid: int, gid: int, **fields: Any) -> None:
        records = _records_dir()
        records.mkdir(parents=True, exist_ok=True)
        self.path = records / f"{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}.json"
        self.data = {"folder": str(folder), "uid": uid, "gid": gid, "pid": os.getpid(),
                     "host": socket.gethostname(), **fields}
        self.path.write_text(json.dumps(self.data))
        self.kept = False

    def keep(self, **fields: Any) -> None:
        self.data.update(fields)
        self.path.write_text(json.dumps(self.data))
        self.kept = True

    def __enter__(self) -> HandbackRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.kept:
            self.path.unlink(missing_ok=True)


def handback_record(folder: Path, uid: int, gid: int, **fields: Any) -> HandbackRecord:
    return HandbackRecord(folder, uid, gid, **fields)


def recover_abandoned_outputs(still_running: Callable[[dict[str, Any]], bool] | None = None) -> list[str]:
    """Hand back the output folders of `mf` runs on this host that were killed mid-job (or whose detached
    job has ended since); return them."""
    records = _records_dir()
    if not records.is_dir():
        return []
    recovered = []
    for record in records.glob("*.json"):
        try:
            data = json.loads(record.read_text())
            if data.get("host") != socket.gethostname() or pid_alive(int(data["pid"])):
                continue
            if data.get("job") and still_running is not None and still_running(data):
                continue  # a detached job still writes there
            folder = Path(data["folder"])
            if folder.is_dir():
                hand_back(folder, int(data["uid"]), int(data["gid"]))
                recovered.append(str(folder))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        record.unlink(missing_ok=True)
    return recovered
