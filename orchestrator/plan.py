"""What a job *is*, apart from where it runs: a ``JobPlan`` is pure data (no engine calls) holding
everything `mf run` decides; backends turn it into a running job (``backends/``).

Every field is carried by every backend: the docker backend maps it to the engine API, the Slurm
backend to `docker run` flags in the batch script. ``tests/unit/test_plan.py`` walks the fields and
fails when a backend misses one, so a new hardening setting cannot silently skip a backend.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from providers.runtime import STOP_ON_STDIN_EOF_ENV

from . import engine


@dataclass(frozen=True)
class Mount:
    source: str  # on the host (for a cluster: visible at the same path on the compute node)
    target: str  # in the container
    read_only: bool = True


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int


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
    cpus: int | None = None
    gpus: str | None = None  # all | N | device=0,1 | None
    labels: dict[str, str] = field(default_factory=dict)
    stop_grace: int = 10
    #: the job stops itself when its stdin closes (attached runs; see providers.runtime)
    stop_on_stdin_eof: bool = True

    @property
    def run_image(self) -> str:
        return self.image_reference or self.image

    # -- the docker backend: engine API arguments ------------------------------------------------
    def docker_create_kwargs(self) -> dict[str, Any]:
        import os

        from docker.types import Mount as DockerMount
        from docker.types import Ulimit as DockerUlimit

        environment = dict(self.environment)
        environment.update({name: os.environ[name] for name in self.pass_environment if name in os.environ})
        if self.stop_on_stdin_eof:
            environment[STOP_ON_STDIN_EOF_ENV] = "1"
        kwargs: dict[str, Any] = {
            "command": list(self.command),
            "user": self.user,
            "environment": environment,
            "mounts": [DockerMount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                       for m in self.mounts],
            "network_mode": self.network,
            "init": self.init,
            "cap_drop": list(self.cap_drop),
            "security_opt": list(self.security_opt),
            "read_only": self.read_only,
            "tmpfs": dict(self.tmpfs),
            "pids_limit": self.pids_limit,
            "shm_size": self.shm_size,
            "labels": dict(self.labels),
            "ulimits": [DockerUlimit(name=u.name, soft=u.soft, hard=u.hard) for u in self.ulimits],
            "device_requests": engine.gpu_device_requests(self.gpus),
            "stop_signal": "SIGTERM",
        }
        if self.memory:
            kwargs.update(mem_limit=self.memory, memswap_limit=self.memory)  # no swap: OOM is OOM
        if self.cpus:
            kwargs["nano_cpus"] = int(self.cpus * 1e9)
        if self.stop_on_stdin_eof:
            # stdin open for one attached client (mf) and closed when it goes: docker's StdinOnce, which the
            # SDK sets only for a container created attached (detach=False); create does not block either way
            kwargs.update(stdin_open=True, detach=False)
        return kwargs

    # -- the Slurm backend: `docker run` flags for the batch script --------------------------------
    def docker_run_args(self, name: str, gpus_from_allocation: bool = False) -> list[str]:
        """`docker run` arguments for the same container (the image and command last). With
        ``gpus_from_allocation`` the GPUs are the ones the scheduler allocated ($CUDA_VISIBLE_DEVICES)."""
        args = ["run", "--rm", "--name", name, "--user", self.user, "--network", self.network,
                "--pids-limit", str(self.pids_limit), "--shm-size", self.shm_size, "--stop-signal", "SIGTERM",
                "--stop-timeout", str(self.stop_grace)]
        if self.init:
            args.append("--init")
        args += [f"--cap-drop={cap}" for cap in self.cap_drop]
        args += [f"--security-opt={opt}" for opt in self.security_opt]
        if self.read_only:
            args.append("--read-only")
        args += [f"--tmpfs={path}:{options}" for path, options in self.tmpfs.items()]
        args += [f"--ulimit={u.name}={u.soft}:{u.hard}" for u in self.ulimits]
        if self.memory:
            args += ["--memory", self.memory, "--memory-swap", self.memory]
        if self.cpus:
            args += ["--cpus", str(self.cpus)]
        if self.gpus:
            args += ["--gpus", '"device=${CUDA_VISIBLE_DEVICES}"' if gpus_from_allocation else self.gpus]
        for m in self.mounts:
            args += ["--mount", f"type=bind,source={m.source},target={m.target}" + (",readonly" if m.read_only else "")]
        for key, value in sorted(self.labels.items()):
            args += ["--label", f"{key}={value}"]
        environment = dict(self.environment)
        if self.stop_on_stdin_eof:
            environment[STOP_ON_STDIN_EOF_ENV] = "1"
        for key, value in sorted(environment.items()):
            args += ["--env", f"{key}={value}"]
        args += [f"--env={name}" for name in self.pass_environment]  # the value comes from the job's environment
        if self.stop_on_stdin_eof:
            args.append("--interactive")
        return args + [self.run_image, *self.command]

    def docker_run_command(self, name: str, gpus_from_allocation: bool = False, docker: str = "docker") -> str:
        """The `docker run` line for a bash script. Arguments that start with a double quote (the container
        name, the allocated GPU list) are left for the script to expand; everything else is quoted."""
        args = self.docker_run_args(name, gpus_from_allocation)
        return " ".join([docker, *(a if a.startswith('"') else shlex.quote(a) for a in args)])
