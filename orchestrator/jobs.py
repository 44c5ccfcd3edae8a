"""One job, the same way on every backend, in five stages:

1. the request, checked on the host (``checks.py``; the backend checks its files: local paths or volumes);
2. the image: its recipe (``recipes.py``), here pulled or built (``registry.py``, ``images.py``), or the
   digest a cluster pulls;
3. the plan: a pure function of the request, the image and the inputs (``plan.py``);
4. the backend runs it (``backends/``: docker, slurm, kubernetes), followed or detached;
5. the outcome: the result, or the job's error as the same one-line error on every backend (``outcome.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import backends, checks, egress, recipes
from .backends.base import Backend, OutputLease
from .outcome import EventLines, EventSink, Exit, outcome, sigterm_as_interrupt
from .plan import JobPlan, make_plan

__all__ = ["EventSink", "JobRequest", "execute", "run_job"]


@dataclass
class JobRequest:
    """What the user asked for, in host terms. What belongs to one backend (partition, namespace, pvc://
    paths) is in ``backend_options``, that backend's options dataclass."""

    provider: str
    action: str
    model: str
    model_class: str = "AutoModelForCausalLM"
    prompt: str | None = None
    max_new_tokens: int = 32
    temperature: float = 0.0
    online: bool = False
    output: Path | None = None
    provider_config: dict[str, Any] = field(default_factory=dict)
    flavour: str | None = None
    gpus: str | None = None
    quantization_config: dict[str, Any] | None = None
    dataset: Path | None = None
    train: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False
    memory: str | None = None
    cpus: float | None = None
    registry: str | None = None
    build: bool = False
    #: action options passed through to the job (mf export's steps)
    options: dict[str, Any] = field(default_factory=dict)
    #: more bind mounts: (host path, path in the container, read-only)
    mounts: list[tuple[Path, str, bool]] = field(default_factory=list)
    #: where the job runs (see backends/): docker, slurm or kubernetes
    backend: str = "docker"
    backend_options: Any = None
    #: return once the job has started; `mf jobs` follows, lists and cancels it
    detach: bool = False
    #: more labels on the job's container (a server's URL and state folder: serving.py)
    labels: dict[str, str] = field(default_factory=dict)
    #: secrets for the job: name -> "env:VAR" or "file:/abs/path" (the value is read when the job starts)
    secrets: dict[str, str] = field(default_factory=dict)
    #: "open": the bridge network instead of the declared egress through the proxy (with --online)
    network: str | None = None
    #: train: data-parallel ranks in the job's container (torchrun)
    nproc: int = 1
    #: nodes of a multi-node training job (slurm, kubernetes); ``nproc`` ranks on each
    nodes: int = 1


def run_job(request: JobRequest, on_event: EventSink, on_build: Callable[[str], None],
            on_layer: Callable[[dict[str, Any]], None] = lambda event: None,
            on_submit: Callable[[str], None] = lambda job: None) -> dict[str, Any]:
    """Run ``request`` in its provider's image; return the result payload or raise the job's error."""
    backend = backends.create(request.backend, request.backend_options)
    # 1. the request, on the host
    provider = checks.check_provider(request)
    network, allowed = egress.job_egress(provider.cls, request.online, request.network)
    egress.check_declared_secrets(provider.cls, provider.name, request.secrets)
    inputs = backend.inputs(request)
    gpu_host = backend.gpu_host(request)
    backend.check(request, provider, gpu_host)
    # 2. the image
    spec = recipes.image_spec(provider.name, request.flavour, gpu_host)
    backend.check_image(spec, request, gpu_host)
    image, reference = backend.image(spec, request, on_build, on_layer)
    with backend.hold_output(request, inputs, provider.name, on_event) as lease:
        # 3. the plan
        plan = make_plan(request, provider.name, image, reference, spec.lock_hash, inputs, gpu_host,
                         backend.user(), backend.gpus(request, gpu_host), network=network, egress=allowed)
        # 4. the backend, and 5. the outcome
        return execute(backend, plan, lease, on_event, request.detach, on_submit)


def execute(backend: Backend, plan: JobPlan, lease: OutputLease | None, on_event: EventSink,
            detach: bool = False, on_submit: Callable[[str], None] = lambda job: None) -> dict[str, Any]:
    """Submit ``plan`` and follow it to its end (or return once it runs, with ``detach``): Ctrl-C and
    SIGTERM cancel it, giving it its grace period; what a followed job leaves is removed however it ends."""
    plan = backend.prepare(plan, detach)
    shown = backend.dry_run(plan)
    if shown is not None:
        return shown
    events = EventLines(on_event, plan.image)
    job: str | None = None
    with sigterm_as_interrupt():
        try:
            job = backend.submit(plan, lease.folder if lease else None)
            on_submit(job)
            if lease is not None:
                lease.started(job)
            if detach:
                if lease is not None:
                    lease.keep_for(job)
                return backend.detached(job)
            end: Exit = backend.follow(job, events)
        except KeyboardInterrupt:
            if job is not None:
                with contextlib.suppress(Exception):  # the interrupt is what the user sees
                    backend.cancel(job, wait=True)
            raise backend.interrupted(job or "") from None
        finally:
            if job is not None and not detach:
                backend.finish(job)
    return outcome(events, end, plan.image)
