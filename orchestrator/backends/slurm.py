"""The Slurm backend: the same plan, submitted with `sbatch` as a batch script that runs the plan's
container on the allocated node with the docker backend's flags (``backends.docker.run_args``).

The job's folder (the spec, the script, the container's events and stderr, its exit code) lives on
storage the compute nodes share: ``$MF_SLURM_DIR``, else ``~/.cache/modelforge/slurm``. So do the model,
data, output and HF cache: with ``MF_SHARED_ROOTS`` set, mf refuses paths outside them up front.
The script is also copied into the job's output folder, for the user to read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.contract import JOB_DIR
from providers.errors import ConfigurationError, ContainerError, EngineError, InterruptedJobError

from .. import LABEL_PREFIX, cache_dir
from ..outcome import Exit
from ..plan import JobPlan, Mount
from .base import Lines, LocalFilesBackend
from .docker import run_args, run_command

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE"}
COMMENT_PREFIX = "modelforge:"
EventSink = Callable[[str], None]


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_limit: str | None = None
    gpus: int | None = None


def _tool(name: str) -> str:
    """A Slurm client from the machine's Slurm installation (its standard locations, not whatever PATH holds)."""
    for folder in (os.environ.get("MF_SLURM_BIN", ""), "/usr/bin", "/usr/local/bin", "/opt/slurm/bin"):
        candidate = Path(folder) / name
        if folder and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise EngineError(f"Slurm's {name} is not installed on this machine.",
                      "Run mf on a Slurm login node (or set MF_SLURM_BIN to the folder holding sbatch).")


def _slurm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([_tool(args[0]), *args[1:]], capture_output=True, text=True, check=False)  # noqa: S603
    if check and proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())[:240]
        raise EngineError(f"{args[0]} failed: {detail}", "Check the cluster with `sinfo`, or `mf doctor`.")
    return proc


def jobs_root() -> Path:
    return Path(os.environ.get("MF_SLURM_DIR") or cache_dir() / "slurm").expanduser()


def shared_roots() -> list[Path]:
    return [Path(p).expanduser().resolve() for p in os.environ.get("MF_SHARED_ROOTS", "").split(os.pathsep) if p]


def check_shared(paths: list[str]) -> None:
    roots = shared_roots()
    if not roots:
        return
    for path in paths:
        resolved = Path(path).resolve()
        if not any(resolved == root or root in resolved.parents for root in roots):
            raise ConfigurationError(
                f"{path} is not under a shared root ({os.pathsep.join(map(str, roots))}): the compute nodes would "
                "not see it at that path.",
                "Move it to the cluster's shared storage, or add its filesystem to MF_SHARED_ROOTS.",
            )


def new_job_dir() -> Path:
    folder = jobs_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    (folder / "job").mkdir(parents=True)
    for path in (folder, folder / "job"):
        path.chmod(0o755)
    return folder


def nodes_of(plan: JobPlan) -> int:
    """How many nodes the plan's job trains on (its spec's ``distributed`` options)."""
    dist = (json.loads(plan.spec_json).get("options") or {}).get("distributed") or {}
    return int(dist.get("nnodes", 1))


def write_script(plan: JobPlan, folder: Path, options: SlurmOptions) -> Path:
    gres = options.gpus or (1 if plan.gpus else None)
    nodes = nodes_of(plan)
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name=mf-{plan.labels.get('org.modelforge.provider', 'job')}-"
        f"{plan.labels.get('org.modelforge.action', 'run')}",
        f"#SBATCH --output={folder}/slurm-%j.out",
        f"#SBATCH --comment={COMMENT_PREFIX}{folder}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1" if nodes > 1 else "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={math.ceil(plan.cpus or 1)}",
    ]
    if options.partition:
        header.append(f"#SBATCH --partition={options.partition}")
    if options.time_limit:
        header.append(f"#SBATCH --time={options.time_limit}")
    if gres:
        header.append(f"#SBATCH --gres=gpu:{gres}")
    if plan.memory:
        header.append(f"#SBATCH --mem={_slurm_memory(plan.memory)}")
    if nodes > 1:
        body = _multi_node_body(plan, folder, nodes, bool(gres))
        script = folder / "job.sbatch"
        script.write_text("\n".join(header) + "\n" + body)
        script.chmod(0o755)
        return script
    run = run_command(plan, '"$name"', gpus_from_allocation=bool(gres), docker='"$docker"')
    body = f"""
# Written by mf: runs the job's container on this node with the same flags as `mf run` on a workstation.
set -u
state={shlex.quote(str(folder))}
""" + _container_lines(plan, run, "mf-slurm-${SLURM_JOB_ID}", "$state/events.jsonl", "$state/stderr.log",
                       "$state/exit_code", after_start=_egress_lines(plan))
    script = folder / "job.sbatch"
    script.write_text("\n".join(header) + "\n" + body)
    script.chmod(0o755)
    return script


def _container_lines(plan: JobPlan, run: str, name: str, events: str, stderr: str, exit_code: str,
                     after_start: str = "") -> str:
    """The part of a batch script that runs one container: its name, a stop on SIGTERM with the job's grace,
    its events and stderr to files, its exit code written when it is gone (removed whatever happened)."""
    return f"""name="{name}"
docker=${{MF_DOCKER:-docker}}
stop() {{
  # Cancelled (scancel, or the time limit): the job gets its grace period to save a checkpoint.
  "$docker" stop --time {plan.stop_grace} "$name" >/dev/null 2>&1 || true
}}
trap stop TERM INT
{run} >"{events}" 2>"{stderr}" &
pid=$!
{after_start}code=0
wait "$pid" || code=$?
while kill -0 "$pid" 2>/dev/null; do
  wait "$pid" || code=$?
done
"$docker" rm --force "$name" >/dev/null 2>&1 || true
echo "$code" >"{exit_code}"
exit "$code"
"""


def _egress_lines(plan: JobPlan) -> str:
    """For a provider that calls out: the egress proxy, started once the job's container exists, in its PID
    namespace (it ends with the job), its decisions to $state/egress.log (see orchestrator/egress.py)."""
    if not plan.egress:
        return ""
    from .. import egress

    proxy = " ".join(shlex.quote(a) for a in [
        "run", "--rm", "--user", egress.proxy_user(), "--network", os.environ.get(egress.NETWORK_ENV) or "bridge",
        "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--pids-limit", "512", "--memory", "128m",
        "--label", "org.modelforge.kind=egress", "--mount", f"type=bind,source={plan.labels[EGRESS_FOLDER_LABEL]},"
        f"target={egress.SOCKET_DIR}", egress.image_tag(), f"{egress.SOCKET_DIR}/proxy.sock", *plan.egress])
    return f"""until "$docker" inspect "$name" >/dev/null 2>&1 || ! kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
"$docker" {proxy.replace("run --rm", 'run --rm --name "$name-egress" --pid "container:$name"', 1)} >"$state/egress.log" 2>&1 &
"""


def _multi_node_body(plan: JobPlan, folder: Path, nodes: int, gpus_from_allocation: bool) -> str:
    """The batch script of a job on several nodes: one ``srun`` task per node runs that node's container on
    the host's network (torchrun's rendezvous and gloo/NCCL use more ports than one), told its node rank,
    the first node's address (the rendezvous host) and the port, which derives from the job id. The first
    node's container writes the events; each node's stderr is kept apart. A node whose task fails ends the
    step (``--kill-on-bad-exit``), and scancel stops every node's container."""
    node_env = ["--env", 'MF_NODE_RANK="$SLURM_NODEID"', "--env", 'MF_RDZV_HEAD="$head_addr"',
                "--env", 'MF_RDZV_PORT="$port"', "--env", 'MF_LOCAL_ADDR="$addr"', "--env", 'MF_NODES="$nodes"',
                "--env", 'MF_RDZV_ID="$SLURM_JOB_ID"']
    args = run_args(plan, '"$name"', gpus_from_allocation)
    image_at = args.index(plan.run_image)
    args[image_at:image_at] = node_env
    run = " ".join(['"$docker"', *(a if a.startswith('"') or '="$' in a else shlex.quote(a) for a in args)])
    scontrol, srun = _tool("scontrol"), _tool("srun")
    node_script = f"""#!/bin/bash
# Written by mf: one node's part of a multi-node job (srun runs it once on each node).
set -u
state={shlex.quote(str(folder))}
addr=$({scontrol} show node "$SLURMD_NODENAME" | tr ' ' '\\n' | sed -n 's/^NodeAddr=//p')
events="$state/events.jsonl"
[ "$SLURM_NODEID" = 0 ] || events="$state/events-node$SLURM_NODEID.jsonl"
""" + _container_lines(plan, run, "mf-slurm-${SLURM_JOB_ID}-${SLURM_NODEID}", "$events",
                       "$state/stderr-node$SLURM_NODEID.log", "$state/exit_code-node$SLURM_NODEID", after_start="""\
# once this node's container runs, say so in the job folder (a rendezvous that times out names the nodes
# whose container never started: an image pull that hangs, a node that cannot run Docker)
(while kill -0 "$pid" 2>/dev/null; do
   if "$docker" inspect "$name" >/dev/null 2>&1; then touch "$state/job/nodes/$SLURMD_NODENAME"; exit 0; fi
   sleep 0.5
 done) &
""")
    (folder / "node.sh").write_text(node_script)
    (folder / "node.sh").chmod(0o755)
    return f"""
# Written by mf: {nodes} nodes, one container each (node.sh beside this script), ranks joined by torchrun.
set -u
state={shlex.quote(str(folder))}
head=$({scontrol} show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
head_addr=$({scontrol} show node "$head" | tr ' ' '\\n' | sed -n 's/^NodeAddr=//p')
nodes=$({scontrol} show hostnames "$SLURM_JOB_NODELIST" | paste -sd, -)
port=$((20000 + SLURM_JOB_ID % 20000))
export head_addr nodes port
mkdir -p "$state/job/nodes"
{srun} --nodes={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 --export=ALL "$state/node.sh" &
step=$!
trap 'kill -TERM "$step" 2>/dev/null' TERM INT
code=0
wait "$step" || code=$?
while kill -0 "$step" 2>/dev/null; do
  wait "$step" || code=$?
done
head_code=$(cat "$state/exit_code-node0" 2>/dev/null || echo "$code")
for log in "$state"/stderr-node*.log; do
  n=${{log##*stderr-node}}
  sed "s/^/[node ${{n%.log}}] /" "$log"
done >"$state/stderr.log" 2>/dev/null
[ "$head_code" = 0 ] && [ "$code" != 0 ] && head_code=$code
echo "$head_code" >"$state/exit_code"
exit "$head_code"
"""


def _slurm_memory(docker_memory: str) -> str:
    match = re.match(r"^(\d+(?:\.\d+)?)([bkmg]?)$", docker_memory.lower())
    if not match:
        return docker_memory
    value, unit = float(match.group(1)), match.group(2)
    mib = value * {"": 1 / 2**20, "b": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024}[unit]
    return f"{max(1, int(mib))}M"


def submit(plan: JobPlan, folder: Path, options: SlurmOptions) -> str:
    check_shared([m.source for m in plan.mounts])
    (folder / "job" / "spec.json").write_text(plan.spec_json)
    (folder / "job" / "spec.json").chmod(0o644)
    script = write_script(plan, folder, options)
    proc = _slurm("sbatch", "--parsable", str(script))
    job_id = proc.stdout.strip().split(";")[0]
    (folder / "job_id").write_text(job_id)
    index = jobs_root() / "index.jsonl"
    with index.open("a") as fh:
        fh.write(json.dumps({"id": job_id, "folder": str(folder), "submitted": time.time(),
                             "provider": plan.labels.get("org.modelforge.provider"),
                             "action": plan.labels.get("org.modelforge.action")}) + "\n")
    return job_id


def job_state(job_id: str) -> dict[str, str]:
    proc = _slurm("scontrol", "show", "job", "--oneliner", job_id, check=False)
    if proc.returncode != 0:
        return {}
    return dict(item.split("=", 1) for item in proc.stdout.split() if "=" in item)


def folder_of(job_id: str) -> Path | None:
    comment = job_state(job_id).get("Comment", "")
    if comment.startswith(COMMENT_PREFIX):
        return Path(comment.removeprefix(COMMENT_PREFIX))
    index = jobs_root() / "index.jsonl"
    if index.exists():
        for line in reversed(index.read_text().splitlines()):
            with contextlib.suppress(ValueError, KeyError):
                entry = json.loads(line)
                if entry["id"] == job_id:
                    return Path(entry["folder"])
    return None


def cancel(job_id: str) -> None:
    _slurm("scancel", job_id, check=False)


def follow(job_id: str, folder: Path, on_line: EventSink, timings: dict[str, float] | None = None,
           poll: float = 0.2) -> int:
    """Stream the job's event lines as they appear; return the container's exit code when the job ends."""
    events = folder / "events.jsonl"
    offset = 0
    pending = b""
    started_running = first_line = None
    ended_at: float | None = None
    while True:
        if events.exists():
            with events.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                if raw.strip():
                    if first_line is None:
                        first_line = time.monotonic()
                    on_line(raw.decode("utf-8", errors="replace"))
        state = job_state(job_id).get("JobState", "")
        if state == "RUNNING" and started_running is None:
            started_running = time.monotonic()
        if (folder / "exit_code").exists() or state in TERMINAL or (not state and ended_at is None and offset):
            if ended_at is None:
                ended_at = time.monotonic()
            if (folder / "exit_code").exists() or time.monotonic() - ended_at > 5:
                break
        time.sleep(poll)
    if events.exists():  # what was written after the last read
        with events.open("rb") as fh:
            fh.seek(offset)
            tail = pending + fh.read()
        for raw in tail.split(b"\n"):
            if raw.strip():
                on_line(raw.decode("utf-8", errors="replace"))
    if timings is not None:
        timings.update(running=started_running or 0.0, first_event=first_line or 0.0, end=time.monotonic())
    try:
        return int((folder / "exit_code").read_text().strip())
    except (OSError, ValueError):
        info = job_state(job_id)
        if info.get("JobState") == "CANCELLED":
            return 130
        raise ContainerError(f"Slurm job {job_id} ended ({info.get('JobState', 'gone')}) without the job's exit code.",
                             f"See {folder}/slurm-{job_id}.out and {folder}/stderr.log.") from None


def list_jobs() -> list[dict[str, Any]]:
    index = jobs_root() / "index.jsonl"
    rows: list[dict[str, Any]] = []
    if not index.exists():
        return rows
    for line in index.read_text().splitlines()[-200:]:
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            state = job_state(entry["id"]).get("JobState")
            folder = Path(entry["folder"])
            if state is None:
                code = (folder / "exit_code").read_text().strip() if (folder / "exit_code").exists() else None
                state = "ENDED" if code is None else ("COMPLETED" if code == "0" else f"FAILED({code})")
            rows.append({"id": f"slurm-{entry['id']}", "backend": "slurm", "provider": entry.get("provider"),
                         "action": entry.get("action"), "state": state, "folder": str(folder)})
    return rows


EGRESS_FOLDER_LABEL = f"{LABEL_PREFIX}.egress-folder"


def _with_egress(folder: Path, on_line: Lines) -> Lines:
    """The job's lines, with the egress proxy's decisions (``egress.log``) put before its result or error."""
    log = folder / "egress.log"

    def wrapped(line: str) -> None:
        if log.exists() and ('"event":"result"' in line or '"event":"error"' in line):
            from .. import egress

            for event in egress.log_events(log.read_text(errors="replace").splitlines()):
                on_line(json.dumps(event))
        on_line(line)

    return wrapped


class SlurmBackend(LocalFilesBackend):
    """Submits the plan with sbatch; its events are read from the job's folder on shared storage."""

    name = "slurm"
    options_type = SlurmOptions

    def __init__(self, options: SlurmOptions | None = None) -> None:
        super().__init__(options)
        self._folder: Path | None = None
        self._grace = 10
        self._timings: dict[str, float] = {}

    def gpus(self, request: Any, gpu_host: bool) -> str | None:
        return str(self.options.gpus) if self.options.gpus else super().gpus(request, gpu_host)

    def prepare(self, plan: JobPlan, detach: bool) -> JobPlan:
        if plan.secrets:
            names = sorted(plan.secrets)
            raise ConfigurationError(
                f"Secrets ({', '.join(names)}) reach Docker jobs only: a Slurm job's files are on the cluster's shared "
                "disk, and a secret is never written to a disk.",
                "Run the job with --backend docker, or give the node the secret by your cluster's own means.")
        if plan.egress and nodes_of(plan) > 1:
            raise ConfigurationError("A provider that calls out runs on one node (its egress proxy is the node's).",
                                     "Leave --nodes out, or run it with --backend docker.")
        plan.stop_on_stdin_eof = False  # Slurm owns the job's life: scancel stops it, not a closed stdin
        # no mf process owns the container (a detached job outlives mf): the local orphan reaper leaves it alone
        plan.labels.pop(f"{LABEL_PREFIX}.owner-pid", None)
        plan.labels[f"{LABEL_PREFIX}.backend"] = "slurm"
        if nodes_of(plan) > 1:
            plan.network = "host"  # torchrun's rendezvous and gloo/NCCL between the nodes' containers
        return plan

    def submit(self, plan: JobPlan, output: Path | None) -> str:
        self._folder = folder = new_job_dir()
        self._grace = plan.stop_grace
        mounts = [*plan.mounts, Mount(str(folder / "job"), str(JOB_DIR), True)]
        if plan.egress:
            from .. import egress

            egress.ensure_image(lambda line: None)
            sockets = egress.socket_folder(folder, plan.user)
            mounts.append(Mount(str(sockets), egress.SOCKET_DIR, False))
            plan = dataclasses.replace(plan, labels={**plan.labels, EGRESS_FOLDER_LABEL: str(sockets)})
        plan = dataclasses.replace(plan, mounts=mounts)
        self._timings["start"] = time.monotonic()
        job_id = submit(plan, folder, self.options)
        self._timings["submitted"] = time.monotonic()
        if output is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(folder / "job.sbatch", output / f"slurm-{job_id}.sbatch")
        return self.prefix + job_id

    def _folder_of(self, job: str) -> Path:
        folder = self._folder or folder_of(job.removeprefix(self.prefix))
        if folder is None or not folder.exists():
            raise ConfigurationError(f"No record of {job} on this machine.", "`mf jobs list` shows the jobs mf knows.")
        return folder

    def follow(self, job: str, on_line: Lines) -> Exit:
        folder = self._folder_of(job)
        code = follow(job.removeprefix(self.prefix), folder, _with_egress(folder, on_line), self._timings)
        stderr_log = folder / "stderr.log"
        tail = "\n".join(stderr_log.read_text(errors="replace").splitlines()[-15:]) if stderr_log.exists() else ""
        timings = self._timings
        if os.environ.get("MF_TIMINGS") and timings.get("running") and "start" in timings:
            # for `make bench`; the event stream stays the same
            split = {"sbatch": timings["submitted"] - timings["start"],
                     "scheduling": timings["running"] - timings["submitted"],
                     "container_and_job": max(0.0, timings["first_event"] - timings["running"]),
                     "streaming_after_first_event": timings["end"] - max(timings["first_event"], timings["running"])}
            print("mf-timings " + json.dumps(split), file=sys.stderr)
        return Exit(code, False, tail)

    def read_events(self, job: str, on_line: Lines) -> bool:
        events = self._folder_of(job) / "events.jsonl"
        if events.exists():
            for line in events.read_text(errors="replace").splitlines():
                on_line(line)
        return True

    def cancel(self, job: str, wait: bool = False) -> None:
        job_id = job.removeprefix(self.prefix)
        cancel(job_id)
        if not wait:
            return
        folder = self._folder or folder_of(job_id)
        deadline = time.monotonic() + self._grace + 30
        while time.monotonic() < deadline and job_state(job_id).get("JobState", "") not in TERMINAL | {""}:
            time.sleep(0.3)
        while folder is not None and time.monotonic() < deadline and not (folder / "exit_code").exists():
            time.sleep(0.3)

    def interrupted(self, job: str) -> InterruptedJobError:
        return InterruptedJobError(f"Stopped: Slurm job {job.removeprefix(self.prefix)} was cancelled and its "
                                   "container removed.", "Run the command again to start over.")

    def detached(self, job: str) -> dict[str, Any]:
        return {"job": job, "backend": self.name, "folder": str(self._folder), "detached": True}

    def is_running(self, job: str) -> bool:
        state = job_state(job.removeprefix(self.prefix)).get("JobState", "")
        return bool(state) and state not in TERMINAL

    def list_jobs(self) -> list[dict[str, Any]]:
        return list_jobs() if jobs_root().exists() else []
