"""The docker backend: the plan as a container on this machine's Docker engine.

A followed job's container holds its stdin open to `mf` (when `mf` dies, the job stops as for Ctrl-C; see
providers.runtime) and is removed when the job ends, however it ends. A detached job's container (``mf run
--detach``) has no `mf` attached: it runs to its end and is kept, so that `mf jobs logs` can read its events,
until `mf jobs cancel` stops (with the job's grace period) and removes it. Its output folder stays locked
while it runs. Each job's spec lives in a folder of its own under ``~/.cache/modelforge/docker-jobs/NAME``,
mounted read-only at /job.

The plan's fields map to the engine API here (:func:`create_kwargs`), and to `docker run` flags for
schedulers that start the container themselves (:func:`run_args`, used by the Slurm backend's script).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shlex
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docker.errors import DockerException

from providers.contract import JOB_DIR, LogEvent
from providers.errors import ConfigurationError, ContainerError
from providers.runtime import STOP_ON_STDIN_EOF_ENV

from .. import LABEL_PREFIX, cache_dir, checks, egress, engine, serving
from ..outcome import EventSink, Exit, iter_lines
from ..plan import Inputs, JobPlan, Mount
from .base import Lines, LocalFilesBackend, OutputLease

if TYPE_CHECKING:
    from ..jobs import JobRequest
    from ..recipes import ImageSpec

DETACHED_LABEL = f"{LABEL_PREFIX}.detached"
GRACE_LABEL = f"{LABEL_PREFIX}.stop-grace"


def jobs_root() -> Path:
    return cache_dir() / "docker-jobs"


# -- the plan's fields: engine API arguments, and `docker run` flags ----------------------------------
def create_kwargs(plan: JobPlan) -> dict[str, Any]:
    """Engine API arguments (docker SDK ``containers.create``) for the plan's container."""
    from docker.types import Mount as DockerMount
    from docker.types import Ulimit as DockerUlimit

    environment = dict(plan.environment)
    environment.update({name: os.environ[name] for name in plan.pass_environment if name in os.environ})
    if plan.stop_on_stdin_eof:
        environment[STOP_ON_STDIN_EOF_ENV] = "1"
    kwargs: dict[str, Any] = {
        "command": list(plan.command),
        "user": plan.user,
        "environment": environment,
        "mounts": [DockerMount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                   for m in plan.mounts],
        "network_mode": plan.network,
        "init": plan.init,
        "cap_drop": list(plan.cap_drop),
        "security_opt": list(plan.security_opt),
        "read_only": plan.read_only,
        "tmpfs": dict(plan.tmpfs),
        "pids_limit": plan.pids_limit,
        "shm_size": plan.shm_size,
        "labels": dict(plan.labels),
        "ulimits": [DockerUlimit(name=u.name, soft=u.soft, hard=u.hard) for u in plan.ulimits],
        "device_requests": engine.gpu_device_requests(plan.gpus),
        "stop_signal": "SIGTERM",
    }
    if plan.memory:
        kwargs.update(mem_limit=plan.memory, memswap_limit=plan.memory)  # no swap: OOM is OOM
    if plan.cpus:
        kwargs["nano_cpus"] = int(plan.cpus * 1e9)
    if plan.stop_on_stdin_eof:
        # stdin open for one attached client (mf) and closed when it goes: docker's StdinOnce, which the
        # SDK sets only for a container created attached (detach=False); create does not block either way
        kwargs.update(stdin_open=True, detach=False)
    return kwargs


def run_args(plan: JobPlan, name: str, gpus_from_allocation: bool = False) -> list[str]:
    """`docker run` arguments for the same container (the image and command last). With
    ``gpus_from_allocation`` the GPUs are the ones the scheduler allocated ($CUDA_VISIBLE_DEVICES)."""
    args = ["run", "--rm", "--name", name, "--user", plan.user, "--network", plan.network,
            "--pids-limit", str(plan.pids_limit), "--shm-size", plan.shm_size, "--stop-signal", "SIGTERM",
            "--stop-timeout", str(plan.stop_grace)]
    if plan.init:
        args.append("--init")
    args += [f"--cap-drop={cap}" for cap in plan.cap_drop]
    args += [f"--security-opt={opt}" for opt in plan.security_opt]
    if plan.read_only:
        args.append("--read-only")
    args += [f"--tmpfs={path}:{options}" for path, options in plan.tmpfs.items()]
    args += [f"--ulimit={u.name}={u.soft}:{u.hard}" for u in plan.ulimits]
    if plan.memory:
        args += ["--memory", plan.memory, "--memory-swap", plan.memory]
    if plan.cpus:
        args += ["--cpus", f"{plan.cpus:g}"]
    if plan.gpus:
        args += ["--gpus", '"device=${CUDA_VISIBLE_DEVICES}"' if gpus_from_allocation else plan.gpus]
    for m in plan.mounts:
        args += ["--mount", f"type=bind,source={m.source},target={m.target}" + (",readonly" if m.read_only else "")]
    for key, value in sorted(plan.labels.items()):
        args += ["--label", f"{key}={value}"]
    environment = dict(plan.environment)
    if plan.stop_on_stdin_eof:
        environment[STOP_ON_STDIN_EOF_ENV] = "1"
    for key, value in sorted(environment.items()):
        args += ["--env", f"{key}={value}"]
    args += [f"--env={name}" for name in plan.pass_environment]  # the value comes from the job's environment
    if plan.stop_on_stdin_eof:
        args.append("--interactive")
    return args + [plan.run_image, *plan.command]


def run_command(plan: JobPlan, name: str, gpus_from_allocation: bool = False, docker: str = "docker") -> str:
    """The `docker run` line for a bash script. Arguments that start with a double quote (the container
    name, the allocated GPU list) are left for the script to expand; everything else is quoted."""
    args = run_args(plan, name, gpus_from_allocation)
    return " ".join([docker, *(a if a.startswith('"') else shlex.quote(a) for a in args)])


# -- the backend --------------------------------------------------------------------------------------
class DockerBackend(LocalFilesBackend):
    name = "docker"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._container: Any = None
        self._stdin: Any = None
        self._image: str | None = None
        self._egress: egress.EgressProxy | None = None
        self._egress_image = ""
        self._secrets: Path | None = None

    def check(self, request: JobRequest, provider: checks.Provider, gpu_host: bool) -> None:
        if request.gpus not in (None, "none") and not gpu_host:
            raise ConfigurationError(
                f"--gpus {request.gpus} asks for GPUs, but this Docker engine has no NVIDIA runtime "
                "(`mf doctor` shows what it found).",
                "Install the NVIDIA Container Toolkit and restart the engine "
                "(docs.nvidia.com/datacenter/cloud-native/container-toolkit), or run without --gpus.",
            )
        super().check(request, provider, gpu_host)

    def check_image(self, spec: ImageSpec, request: JobRequest, gpu_host: bool) -> None:
        if gpu_host and request.gpus != "none":
            checks.check_driver_floor(spec, engine.host_driver_version())

    @contextlib.contextmanager
    def hold_output(self, request: JobRequest, inputs: Inputs, provider: str,
                    on_event: EventSink) -> Iterator[OutputLease | None]:
        for name in engine.remove_orphaned_jobs():
            shutil.rmtree(jobs_root() / name, ignore_errors=True)
            egress.remove_secrets(egress.secrets_root() / f"mf-secrets-{name}")
            on_event(LogEvent(level="warning", message=f"removed the orphaned job container {name} (its mf was killed)"))
        with super().hold_output(request, inputs, provider, on_event) as lease:
            yield lease

    def prepare(self, plan: JobPlan, detach: bool) -> JobPlan:
        plan.labels[GRACE_LABEL] = str(plan.stop_grace)  # for `mf jobs cancel`, from another mf
        if "HF_TOKEN" in plan.pass_environment:  # here the token travels as a secret file, not in the environment
            plan.pass_environment = [n for n in plan.pass_environment if n != "HF_TOKEN"]
            plan.secrets = {**plan.secrets, "HF_TOKEN": "env:HF_TOKEN"}
            plan.environment["HF_TOKEN_PATH"] = f"{egress.SECRETS_DIR}/HF_TOKEN"
        if plan.egress:
            self._egress_image = egress.ensure_image(lambda line: None)  # before the job: seconds, once
        if detach:
            plan.stop_on_stdin_eof = False  # no mf stays attached: the job runs to its end
            # no mf process owns it: the orphan reaper of the next `mf run` leaves it alone
            plan.labels.pop(f"{LABEL_PREFIX}.owner-pid", None)
            plan.labels[DETACHED_LABEL] = "1"
        return plan

    def submit(self, plan: JobPlan, output: Path | None) -> str:
        provider = plan.labels.get(f"{LABEL_PREFIX}.provider", "job")
        name = f"mf-{provider}-{plan.labels.get(f'{LABEL_PREFIX}.action', 'run')}-{secrets.token_hex(4)}"
        folder = jobs_root() / name
        folder.mkdir(parents=True)
        try:
            os.chmod(folder, 0o755)  # nosec B103 # noqa: S103 - the job user (another uid) reads the spec; nothing secret
            spec_file = folder / "spec.json"
            spec_file.write_text(plan.spec_json, encoding="utf-8")
            os.chmod(spec_file, 0o644)
            mounts = [*plan.mounts, Mount(str(folder), str(JOB_DIR), True)]
            if plan.secrets:
                self._secrets = egress.write_secrets(name, plan.secrets, plan.user)
                mounts.append(Mount(str(self._secrets), egress.SECRETS_DIR, True))
            if plan.egress:
                sockets = egress.socket_folder(folder, plan.user)
                mounts.append(Mount(str(sockets), egress.SOCKET_DIR, False))
            plan = dataclasses.replace(plan, mounts=mounts)
            self._image = plan.image
            self._container = engine.create_container(plan.run_image, name=name, **create_kwargs(plan))
            if plan.stop_on_stdin_eof:
                # held until mf returns or dies: its end is the job's signal to stop (see providers.runtime)
                self._stdin = self._container.attach_socket(params={"stdin": 1, "stream": 1})
            self._container.start()
            if plan.egress:  # in the job's PID namespace, so started after it; the job waits for its socket
                self._egress = egress.EgressProxy(self._egress_image, self._container, sockets, plan.egress, plan.labels)
                if DETACHED_LABEL in plan.labels:  # mf returns now: the proxy must exist before it does
                    self._egress.started.wait(timeout=60)
        except BaseException:
            self.finish(self.prefix + name)
            raise
        return self.prefix + name

    def _get(self, job: str) -> Any:
        if self._container is not None and self.prefix + self._container.name == job:
            return self._container
        return engine.find_container(job.removeprefix(self.prefix))

    def follow(self, job: str, on_line: Lines) -> Exit:
        container = self._get(job)
        if container is None:
            raise _no_record(job)
        image = self._image or container.attrs.get("Config", {}).get("Image", "")
        proxy = self._egress
        for line in iter_lines(container.logs(stdout=True, stderr=False, stream=True, follow=True)):
            if proxy is not None:  # the proxy's decisions, in order with the job's events (before its result)
                for event in proxy.new_events(final='"event":"result"' in line or '"event":"error"' in line):
                    on_line(json.dumps(event))
            on_line(line)
        status = container.wait()
        code = int(status.get("StatusCode", -1))
        try:
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            tail = container.logs(stdout=False, stderr=True, tail=15).decode("utf-8", errors="replace").strip()
        except DockerException:
            raise ContainerError(
                f"The job container {container.short_id} was removed from outside mf while it ran (exit {code}).",
                "Run the command again, and leave its container alone until it ends.",
                exit_status=code, image=image,
            ) from None
        return Exit(code, oom, tail)

    def read_events(self, job: str, on_line: Lines) -> bool:
        container = self._get(job)
        if container is None:
            return False
        for line in iter_lines(iter([container.logs(stdout=True, stderr=False)])):
            on_line(line)
        return True

    def cancel(self, job: str, wait: bool = False) -> None:
        container = self._get(job)
        if container is None:
            raise _no_record(job)
        grace = int(container.labels.get(GRACE_LABEL, "10"))
        with contextlib.suppress(DockerException):
            container.stop(timeout=grace)  # returns once the container has stopped
        if container.labels.get(DETACHED_LABEL):
            self.finish(job)  # no mf is following it: nothing else would remove it

    def finish(self, job: str) -> None:
        if self._egress is not None:
            self._egress.stop()
            self._egress = None
        if self._secrets is not None:
            egress.remove_secrets(self._secrets)
            self._secrets = None
        if self._stdin is not None:
            with contextlib.suppress(Exception):
                self._stdin.close()
            self._stdin = None
        with contextlib.suppress(Exception):  # however the job ended, even with the engine gone
            container = self._get(job)
            if container is not None:
                container.remove(force=True, v=True)
                serving.cleanup(container.labels)  # a server's relay and key
        shutil.rmtree(jobs_root() / job.removeprefix(self.prefix), ignore_errors=True)
        egress.remove_secrets(egress.secrets_root() / f"mf-secrets-{job.removeprefix(self.prefix)}")

    def is_running(self, job: str) -> bool:
        container = self._get(job)
        return container is not None and container.status in ("created", "running", "restarting")

    def list_jobs(self) -> list[dict[str, Any]]:
        rows = []
        for container in engine.job_containers(detached="1", host=socket.gethostname()):
            labels = container.labels
            state = container.status.upper()
            if container.status == "exited":
                code = int(container.attrs.get("State", {}).get("ExitCode", -1))
                state = "COMPLETED" if code == 0 else f"FAILED({code})"
            rows.append({"id": self.prefix + container.name, "backend": self.name,
                         "provider": labels.get(f"{LABEL_PREFIX}.provider"),
                         "action": labels.get(f"{LABEL_PREFIX}.action"), "state": state,
                         "folder": str(jobs_root() / container.name),
                         **({"url": labels[serving.URL_LABEL]} if serving.URL_LABEL in labels else {})})
        return rows


def _no_record(job: str) -> ConfigurationError:
    return ConfigurationError(f"No record of {job} on this machine's Docker engine.",
                              "`mf jobs list` shows the jobs mf knows.")

