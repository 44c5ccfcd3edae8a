"""Training across processes: ``torchrun`` inside the image, launched by the entrypoint.

A train job whose spec asks for more than one process (``options["distributed"]``) does not train in
the entrypoint's process. The entrypoint becomes the *launcher*: it starts ``torchrun`` (c10d
rendezvous; ``--standalone`` on one node), which starts one worker per rank, each running the
entrypoint again with torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``. The contract's event stream
stays one stream: world rank 0 writes its events into a FIFO the launcher reads (``MF_EVENTS_FIFO``), and
the launcher forwards them to its stdout; the other ranks emit none, and their stderr is kept. When a
rank dies, torchrun stops the others; the launcher then ends the stream with one error that names the
rank and how it ended (torchrun's "root cause" summary), unless rank 0 already said why.

SIGTERM (``docker stop``, Ctrl-C in `mf`) goes to the launcher, which passes it to torchrun, which
passes it to every worker; the workers agree on the step to stop at (``stop_agreed``), save one
checkpoint together, and exit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import IO, Any

#: the FIFO rank 0 writes its events to (made by the launcher; torchrun passes no open files to its workers)
EVENTS_PATH_ENV = "MF_EVENTS_FIFO"
#: how long a rendezvous waits for every node (seconds), and a collective for a silent rank
RENDEZVOUS_TIMEOUT_S = 120
COLLECTIVE_TIMEOUT_S = 60


@dataclass(frozen=True)
class World:
    """Where this process is among the job's ranks (all 0/1 when it runs alone)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1
    nodes: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> dict[str, int]:
        return {"world_size": self.size, "ranks_per_node": self.local_size, "nodes": self.nodes}


def world() -> World:
    """The world torchrun set up for this process (its environment), or a world of one."""
    env = os.environ
    if "LOCAL_RANK" not in env or "WORLD_SIZE" not in env:
        return World()
    size, local_size = int(env["WORLD_SIZE"]), int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
    return World(rank=int(env["RANK"]), local_rank=int(env["LOCAL_RANK"]), size=size, local_size=local_size,
                 nodes=max(1, size // max(1, local_size)))


#: what one node's container is told by its scheduler (the spec is the same file on every node)
NODE_ENVIRONMENT = {"node_rank": "MF_NODE_RANK", "head": "MF_RDZV_HEAD", "port": "MF_RDZV_PORT",
                    "local_addr": "MF_LOCAL_ADDR", "nodes": "MF_NODES", "job_id": "MF_RDZV_ID"}
#: where each node's script leaves a file named after the node when it starts its container (the job
#: folder, shared by the nodes): a rendezvous that times out names the nodes that never did
NODES_STARTED_DIR = "/job/nodes"


def requested(options: dict[str, Any]) -> dict[str, Any] | None:
    """The spec's ``distributed`` options when they ask for more than one process, else None; on a node of
    a multi-node job, with what its scheduler said about this node (``NODE_ENVIRONMENT``)."""
    dist = dict(options.get("distributed") or {})
    if int(dist.get("nproc_per_node", 1)) * int(dist.get("nnodes", 1)) <= 1:
        return None
    for key, variable in NODE_ENVIRONMENT.items():
        if os.environ.get(variable):
            dist[key] = os.environ[variable]
    if int(dist.get("nnodes", 1)) > 1 and ("node_rank" not in dist or "head" not in dist):
        from ..errors import ConfigurationError

        raise ConfigurationError(
            f"This job trains on {dist['nnodes']} nodes, but this container was not told its node rank and the "
            "rendezvous host (MF_NODE_RANK, MF_RDZV_HEAD).",
            "Start multi-node jobs with mf run --nodes N on the slurm or kubernetes backend.")
    return dist


def rendezvous_failure(dist: dict[str, Any], started_dir: str = NODES_STARTED_DIR) -> str:
    """What to say when the nodes did not all join within the rendezvous timeout: the nodes whose
    container never started, where the job folder says."""
    timeout = int(dist.get("rendezvous_timeout", RENDEZVOUS_TIMEOUT_S))
    where = f"{dist.get('head')}:{dist.get('port')}"
    expected = [n for n in str(dist.get("nodes") or "").split(",") if n]
    try:
        started = set(os.listdir(started_dir))
    except OSError:
        started = None
    missing = [n for n in expected if started is not None and n not in started]
    if missing:
        return (f"the rendezvous at {where} timed out after {timeout} s: node{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} never started {'their' if len(missing) > 1 else 'its'} container")
    return (f"the rendezvous at {where} timed out after {timeout} s: not all {dist.get('nnodes')} nodes joined "
            f"(this is node {dist.get('node_rank')})")


def torchrun_command(dist: dict[str, Any], spec_path: str) -> list[str]:
    """torchrun's command line for ``dist``: ``--standalone`` on one node; on several, a c10d rendezvous at
    the head node with this node's rank, address and role in it given explicitly (torchrun's guess of which
    node hosts the rendezvous fails in many container setups: pytorch#73656, #150532)."""
    nproc, nnodes = int(dist.get("nproc_per_node", 1)), int(dist.get("nnodes", 1))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--max-restarts", "0",
           "--monitor-interval", "0.5"]
    if nnodes == 1:  # the job's container may have no network but loopback, and no resolvable hostname
        cmd += ["--standalone", "--local-addr", "127.0.0.1"]
    else:
        node_rank = int(dist["node_rank"])
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"{dist['head']}:{dist['port']}", "--rdzv-id", str(dist.get("job_id", "mf")),
                "--rdzv-conf", f"is_host={'true' if node_rank == 0 else 'false'},"
                f"join_timeout={int(dist.get('rendezvous_timeout', RENDEZVOUS_TIMEOUT_S))}"]
        if dist.get("local_addr"):
            cmd += ["--local-addr", str(dist["local_addr"])]
    return [*cmd, "-m", "providers.runtime", spec_path]


def threads_per_rank(nproc: int) -> int:
    """The CPUs this container may use (its cpuset and CPU quota), shared fairly between its ranks (at least one each)."""
    from ..common.cpus import cpu_budget

    return max(1, cpu_budget() // max(1, nproc))


_ROOT_CAUSE = re.compile(r"^\s*(rank|exitcode|traceback|host)\s*:\s*(.*)$")


def root_cause(stderr_tail: list[str]) -> str | None:
    """torchrun's "Root Cause (first observed failure)" summary, as one phrase: rank 1 (local_rank: 1) on
    HOST exited with -9 (Signal 9 (SIGKILL) received by PID 123)."""
    try:
        start = max(i for i, line in enumerate(stderr_tail) if "Root Cause" in line)
    except ValueError:
        return None
    fields: dict[str, str] = {}
    for line in stderr_tail[start:]:
        match = _ROOT_CAUSE.match(line)
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2).strip()
    if "rank" not in fields:
        return None
    why = f"exited with {fields.get('exitcode', '?').split(' (pid')[0]}"
    detail = fields.get("traceback", "")
    if detail and detail != "<N/A>" and "To enable traceback" not in detail:
        why += f" ({detail})"
    return f"rank {fields['rank']}" + (f" on {fields['host']}" if fields.get("host") else "") + f" {why}"


def launch(dist: dict[str, Any], spec_path: str, out: IO[str]) -> tuple[int, str | None, str | None]:
    """Run the job's ranks under torchrun; rank 0's events go to ``out``. Returns torchrun's exit code, how
    rank 0 ended the stream ("result", an error's kind, or None when it did not), and torchrun's root cause
    of a failure."""
    import select
    import tempfile

    nproc = int(dist.get("nproc_per_node", 1))
    fifo = os.path.join(tempfile.mkdtemp(prefix="mf-events-"), "events")
    os.mkfifo(fifo, 0o600)
    read_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # read-write: opening never blocks, nor does EOF come early
    env = {**os.environ, EVENTS_PATH_ENV: fifo}
    env.pop("MF_STOP_ON_STDIN_EOF", None)  # the launcher watches mf; the workers' stdin is empty
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    proc = subprocess.Popen(torchrun_command(dist, spec_path), env=env, stdin=subprocess.DEVNULL,
                            stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    ended: dict[str, str | None] = {"how": None, "error": None}
    tail: deque[str] = deque(maxlen=200)
    done = threading.Event()

    def forward(line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            event = {}
        if event.get("event") == "error":  # held back: another rank's death may be the real cause
            ended["how"], ended["error"] = str(event.get("kind", "internal")), line
            return
        out.write(line + "\n")
        out.flush()
        if event.get("event") == "result":
            ended["how"] = "result"

    def forward_events() -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([read_fd], [], [], 0.2)
            chunk = os.read(read_fd, 65536) if ready else b""
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    forward(line.decode("utf-8", "replace"))
            if not chunk and done.is_set():
                return

    def keep_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))

    threads = [threading.Thread(target=forward_events, daemon=True), threading.Thread(target=keep_stderr, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # the entrypoint's own SIGINT: pass it on, keep waiting
                proc.send_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
        done.set()
    for thread in threads:
        thread.join(timeout=10)
    os.close(read_fd)
    os.unlink(fifo)
    os.rmdir(os.path.dirname(fifo))
    cause = root_cause(list(tail))
    if cause is None and any("RendezvousTimeoutError" in line for line in tail):
        cause = rendezvous_failure(dist)
    if ended["error"] and not (cause and not cause.startswith("rank 0 ")):
        out.write(ended["error"] + "\n")  # rank 0's own failure: its error is the job's
        out.flush()
    elif ended["error"]:
        ended["how"] = None  # rank 0 failed because another rank died first: that one is named instead
    return code, ended["how"], cause


def events_stream() -> IO[str] | None:
    """For a worker: where its events go (rank 0: the launcher's FIFO; other ranks: nowhere), or None
    when this process is not a worker."""
    fifo = os.environ.get(EVENTS_PATH_ENV)
    if fifo is None or "LOCAL_RANK" not in os.environ:
        return None
    with open(f"/tmp/mf-rank-{os.environ.get('RANK', '0')}.pid", "w", encoding="ascii") as fh:  # noqa: S108  # nosec B108 - the container's tmpfs
        fh.write(str(os.getpid()))  # which process is which rank, for `docker exec` (and the fault tests)
    if os.environ.get("RANK", "0") == "0":
        return open(fifo, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - the worker's event stream
    return open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - the worker's event stream, for its life


def stop_agreed(local_flag: bool) -> bool:
    """Whether any rank asked to stop (a collective: every rank calls it at the same step)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return local_flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1 if local_flag else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
