"""One small interface for where a job runs, in the manner of dask-jobqueue's ``Job`` and its
per-scheduler subclasses: a backend differs only where its scheduler does.

A job goes through every backend the same way (``orchestrator/jobs.py``): the backend checks the
request's files (:meth:`Backend.inputs`), says whether the job gets GPUs, provides the image
(:meth:`Backend.image`), holds the output folder (:meth:`Backend.hold_output`), adjusts the plan
(:meth:`Backend.prepare`), then :meth:`Backend.submit` / :meth:`Backend.follow` / :meth:`Backend.cancel`.
`mf jobs` uses the same three with :meth:`Backend.list_jobs`. A job's id carries its backend as a prefix
(``docker-``, ``slurm-``, ``k8s-``).
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from providers.contract import HF_HOME, OUTPUT_DIR, LogEvent
from providers.errors import InterruptedJobError

from .. import checks, engine, registry, runstate
from ..outcome import EventSink, Exit
from ..plan import Inputs, JobPlan, Mount

if TYPE_CHECKING:
    from ..images import Progress
    from ..jobs import JobRequest
    from ..recipes import ImageSpec

Lines = Callable[[str], None]


class Backend(ABC):
    #: the name `mf run --backend` takes
    name: ClassVar[str]
    #: the options only this backend has (partition, namespace, ...), as a dataclass
    options_type: ClassVar[type] = type(None)

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.options_type()

    @property
    def prefix(self) -> str:
        """What a job id of this backend starts with."""
        return f"{self.name}-"

    # -- the job's stages ---------------------------------------------------------------------------
    @abstractmethod
    def inputs(self, request: JobRequest) -> Inputs:
        """The request's files as the container sees them, checked where the backend can check them."""

    @abstractmethod
    def gpu_host(self, request: JobRequest) -> bool:
        """Whether the job runs where there are GPUs."""

    def gpus(self, request: JobRequest, gpu_host: bool) -> str | None:
        """The GPUs the plan asks for: --gpus, else all of them on a GPU host."""
        gpus = request.gpus if request.gpus is not None else ("all" if gpu_host else None)
        return None if gpus == "none" else gpus

    def check(self, request: JobRequest, provider: checks.Provider, gpu_host: bool) -> None:
        """Refuse, before any image or container, what cannot run there."""
        return None

    def check_image(self, spec: ImageSpec, request: JobRequest, gpu_host: bool) -> None:
        """Refuse an image the place it runs cannot run (a driver too old for its CUDA)."""
        return None

    @abstractmethod
    def image(self, spec: ImageSpec, request: JobRequest, progress: Progress,
              on_layer: Callable[[dict[str, Any]], None]) -> tuple[str, str | None]:
        """The image's local tag and its digest reference (None without a verified release)."""

    def user(self) -> tuple[int, int]:
        return checks.job_user()

    @contextlib.contextmanager
    def hold_output(self, request: JobRequest, inputs: Inputs, provider: str,
                    on_event: EventSink) -> Iterator[OutputLease | None]:
        """The output folder for the job's life (nothing to hold here by default)."""
        yield None

    def prepare(self, plan: JobPlan, detach: bool) -> JobPlan:
        """The backend's own settings on the plan (labels, how the job's life ends)."""
        return plan

    def dry_run(self, plan: JobPlan) -> dict[str, Any] | None:
        """What the backend would submit, when the user asked to see it instead; None to submit."""
        return None

    # -- the job's life -----------------------------------------------------------------------------
    @abstractmethod
    def submit(self, plan: JobPlan, output: Path | None) -> str:
        """Start the job; return its id (with the backend's prefix)."""

    @abstractmethod
    def follow(self, job: str, on_line: Lines) -> Exit:
        """Pass the job's event lines on as they come; return how it ended."""

    @abstractmethod
    def cancel(self, job: str, wait: bool = False) -> None:
        """Stop the job (a training job gets its grace period to checkpoint); with ``wait``, until it has."""

    def interrupted(self, job: str) -> InterruptedJobError:
        return InterruptedJobError("Stopped: the job was interrupted and its container removed.",
                                   "Run the command again to start over.")

    def finish(self, job: str) -> None:
        """After a followed job: remove what it left (its container, its folder)."""
        return None

    def detached(self, job: str) -> dict[str, Any]:
        """What `mf run --detach` returns."""
        return {"job": job, "backend": self.name, "detached": True}

    def list_jobs(self) -> list[dict[str, Any]]:
        """Detached jobs started from this machine, with their state."""
        return []

    def is_running(self, job: str) -> bool:
        """Whether the job has not ended yet (an output folder stays locked while it runs)."""
        return False

    def read_events(self, job: str, on_line: Lines) -> bool:
        """Pass on what the job has written so far; False when there is no record of it."""
        return False


class OutputLease:
    """The output folder on this machine, for the job's life: locked (one run at a time), handed to the
    job user when `mf` runs as root and handed back when the job ends. A detached job keeps the lock's
    record and the hand-back record: the next run asks the backend whether that job still runs."""

    def __init__(self, folder: Path, stack: contextlib.ExitStack, lock: runstate.OutputLock,
                 record: runstate.HandbackRecord | None) -> None:
        self.folder, self._stack, self._lock, self._record = folder, stack, lock, record

    def started(self, job: str) -> None:
        self._lock.update(job=job)

    def keep_for(self, job: str) -> None:
        """The job goes on after `mf` returns: leave the folder locked by it, and the hand-back to later."""
        self._stack.pop_all()  # neither released nor handed back now
        self._lock.keep(job=job, detached=True)
        if self._record is not None:
            self._record.keep(job=job)


class LocalFilesBackend(Backend):
    """A backend whose jobs read and write this machine's files (bind mounts) and run this project's
    images from a Docker engine: docker, and Slurm (whose nodes see the same paths)."""

    def inputs(self, request: JobRequest) -> Inputs:
        inputs = checks.local_inputs(request)
        hf_home = checks.hf_cache_dir()
        hf_home.mkdir(parents=True, exist_ok=True)
        inputs.mounts.append(Mount(str(hf_home), str(HF_HOME), read_only=not request.online))
        return inputs

    def gpu_host(self, request: JobRequest) -> bool:
        return engine.has_nvidia_runtime()

    def check(self, request: JobRequest, provider: checks.Provider, gpu_host: bool) -> None:
        checks.check_gpu_provider(provider, request.action, gpu_host)

    def image(self, spec: ImageSpec, request: JobRequest, progress: Progress,
              on_layer: Callable[[dict[str, Any]], None]) -> tuple[str, str | None]:
        tag = registry.obtain(spec, progress, on_layer, request.registry, request.build)
        return tag, registry.verified_reference(tag)

    @contextlib.contextmanager
    def hold_output(self, request: JobRequest, inputs: Inputs, provider: str,
                    on_event: EventSink) -> Iterator[OutputLease | None]:
        from . import job_running

        for folder in runstate.recover_abandoned_outputs(still_running=job_running):
            on_event(LogEvent(level="warning", message=f"handed {folder} back to its owner (the mf running its job was killed)"))
        if request.output is None:
            yield None
            return
        output = checks.make_output(request.output)
        with contextlib.ExitStack() as stack:
            lock = runstate.OutputLock(output).acquire({"provider": provider, "action": request.action,
                                                        "backend": self.name}, still_running=job_running)
            stack.callback(lock.release)
            if lock.recovered:
                on_event(LogEvent(level="warning", message=(
                    f"took over {output.name}'s lock from a run that ended without releasing it "
                    f"(mf pid {lock.recovered.get('pid')} on {lock.recovered.get('host')})")))
            record = None
            if os.getuid() == 0:
                # the unprivileged job user writes here, and reads its earlier checkpoints on --resume; all is
                # handed back to root when the job ends (or by the next mf, if this one dies)
                record = stack.enter_context(runstate.handback_record(output, 0, 0, backend=self.name))
                stack.callback(runstate.hand_back, output, 0, 0)
                uid, gid = self.user()
                runstate.hand_back(output, uid, gid)
            inputs.mounts.append(Mount(str(output), str(OUTPUT_DIR), read_only=False))
            yield OutputLease(output, stack, lock, record)
