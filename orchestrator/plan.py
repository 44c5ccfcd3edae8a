"""What a job *is*, apart from where it runs: a ``JobPlan`` is pure data holding everything `mf run`
decides, and :func:`make_plan` is the pure function that makes it from the request, the image and the
job's inputs (no engine calls). Backends (``backends/``) turn a plan into a running job.

Every field is carried by every backend: the docker backend maps it to the engine API, the Slurm
backend to `docker run` flags in the batch script, the Kubernetes backend to the Job's pod spec.
``tests/unit/test_plan.py`` walks the fields and fails when a backend misses one, so a new hardening
setting cannot silently skip a backend.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from providers.contract import HF_HOME, JOB_SPEC_PATH, OUTPUT_DIR, JobSpec

from . import project_labels

if TYPE_CHECKING:
    from .jobs import JobRequest

#: Who a job runs as when `mf` itself runs as root (and on a cluster): the images' unprivileged `mf` user.
UNPRIVILEGED_UID = 1000
#: How long a stopped job may take to exit before it is killed: training saves a checkpoint first.
STOP_GRACE_SECONDS = {"train": 120}
DEFAULT_STOP_GRACE_SECONDS = 10
PIDS_LIMIT = 1024


@dataclass(frozen=True)
class Mount:
    source: str  # on the host (for a cluster: visible at the same path on the compute node; or pvc://)
    target: str  # in the container
    read_only: bool = True


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int


@dataclass
class Inputs:
    """The job's files as the container sees them, from the backend's check of the request."""

    model: str  # the model's path in the container, or a hub reference
    mounts: list[Mount] = field(default_factory=list)
    #: the action's options (the train config, the dataset's path in the container, ...)
    options: dict[str, Any] = field(default_factory=dict)
    #: whether the job has an output folder (mounted at OUTPUT_DIR)
    has_output: bool = False


@dataclass
class JobPlan:
    image: str  # the local content tag, e.g. modelforge/gguf:cpu-<hash12>
    command: list[str]
    spec_json: str  # the JobSpec, written to the spec mount's folder as spec.json
    mounts: list[Mount]
    environment: dict[str, str]
    user: str  # uid:gid
    #: names of variables passed from mf's own environment, never written to disk (HF_TOKEN)
    pass_environment: list[str] = field(default_factory=list)
    #: the image by registry digest (repo@sha256:...), when a verified release names it: what clusters pull
    image_reference: str | None = None
    network: str = "none"
    init: bool = True
    cap_drop: list[str] = field(default_factory=lambda: ["ALL"])
    security_opt: list[str] = field(default_factory=lambda: ["no-new-privileges"])
    read_only: bool = True
    tmpfs: dict[str, str] = field(default_factory=dict)
    pids_limit: int = 1024
    shm_size: str = "1g"
    ulimits: list[Ulimit] = field(default_factory=list)
    memory: str | None = None
    cpus: float | None = None
    gpus: str | None = None  # all | N | device=0,1 | None
    labels: dict[str, str] = field(default_factory=dict)
    stop_grace: int = 10
    #: the job stops itself when its stdin closes (attached runs; see providers.runtime)
    stop_on_stdin_eof: bool = True
    #: host:port pairs the job reaches through its egress proxy (see orchestrator/egress.py); empty: no proxy
    egress: list[str] = field(default_factory=list)
    #: name -> "env:VAR" | "file:PATH": where the backend reads each secret when it starts the job (never the value)
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def run_image(self) -> str:
        return self.image_reference or self.image


def make_plan(request: JobRequest, provider: str, image: str, image_reference: str | None, lock_hash: str,
              inputs: Inputs, gpu_host: bool, user: tuple[int, int], gpus: str | None, network: str | None = None,
              egress: list[str] | None = None) -> JobPlan:
    """The plan for ``request`` in ``image``: the job spec the entrypoint reads, the container's hardening,
    its environment and labels. ``gpus`` is what the backend will pass (None: none); ``network`` and ``egress``
    what :func:`orchestrator.egress.job_egress` decided (default: the bridge when online, else none)."""
    job = JobSpec(
        provider=provider,
        action=request.action,  # type: ignore[arg-type]
        model=inputs.model,
        model_class=request.model_class,
        provider_config=request.provider_config,
        quantization_config=request.quantization_config,
        prompt=request.prompt,
        max_new_tokens=request.max_new_tokens,
        temperature=request.temperature,
        online=request.online,
        output_dir=str(OUTPUT_DIR) if inputs.has_output else None,
        device_map="auto" if gpu_host else "cpu",
        options=inputs.options,
    )
    environment = {
        "HOME": "/tmp",  # nosec B108 - the container's tmpfs
        "HF_HOME": str(HF_HOME),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        # The host's token file is never read inside; a token comes in only as HF_TOKEN with --online.
        "HF_TOKEN_PATH": "/tmp/.no-hf-token",  # nosec B108
        "MF_IMAGE": image,
        "MF_LOCK_HASH": lock_hash,
    }
    if not request.online:
        environment["HF_HUB_OFFLINE"] = "1"
    if os.environ.get("MF_DEBUG"):
        environment["MF_DEBUG"] = "1"
    if egress:
        from .egress import proxy_environment

        environment.update(proxy_environment())
    return JobPlan(
        image=image,
        image_reference=image_reference,
        command=[str(JOB_SPEC_PATH)],
        spec_json=job.to_json(),
        mounts=list(inputs.mounts),
        environment=environment,
        # the token is passed by name from mf's environment, so it is never written into a file or argv
        pass_environment=["HF_TOKEN"] if request.online and os.environ.get("HF_TOKEN") else [],
        user=f"{user[0]}:{user[1]}",
        network=network or ("bridge" if request.online and egress is None else "none"),
        egress=list(egress or []),
        secrets=dict(request.secrets),
        tmpfs={"/tmp": "rw,nosuid,nodev,size=2g"},  # nosec B108
        pids_limit=PIDS_LIMIT,
        memory=request.memory,
        cpus=request.cpus,
        gpus=gpus,
        # what NVIDIA recommends for training in containers: pinned memory and deep stacks
        ulimits=[Ulimit("memlock", -1, -1), Ulimit("stack", 67108864, 67108864)] if gpus else [],
        labels=project_labels("job", provider=provider, action=request.action,
                                     owner_pid=str(os.getpid()), host=socket.gethostname(),
                                     session=os.environ.get("MF_SESSION", "")) | dict(request.labels),
        stop_grace=STOP_GRACE_SECONDS.get(request.action, DEFAULT_STOP_GRACE_SECONDS),
    )
