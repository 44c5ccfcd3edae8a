"""Where a JobPlan runs: docker (this machine's engine), slurm (a cluster, sbatch), kubernetes (a Job).

Each backend is one module with one ``Backend`` subclass (``base.py`` says what a backend does); its
own options (partition, namespace, pvc:// paths) live in its options dataclass, not in the request.
Modules load when used, so `mf` never imports a client it does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

from providers.errors import ConfigurationError

from .base import Backend

#: backend name -> module:class
BACKENDS = {
    "docker": "orchestrator.backends.docker:DockerBackend",
    "slurm": "orchestrator.backends.slurm:SlurmBackend",
    "kubernetes": "orchestrator.backends.kubernetes:KubernetesBackend",
}
#: what a job id starts with -> its backend
JOB_PREFIXES = {"docker-": "docker", "slurm-": "slurm", "k8s-": "kubernetes"}


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise ConfigurationError(f"Unknown backend: {name!r}. Available backends: {sorted(BACKENDS)}",
                                 "Pass one of them to --backend.")
    module, _, attr = BACKENDS[name].partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), attr)
    return cls


def create(name: str, options: Any = None) -> Backend:
    return backend_class(name)(options)


def for_job(job: str) -> Backend:
    """The backend of a job id (``docker-...``, ``slurm-42``, ``k8s-NAMESPACE/NAME``)."""
    for prefix, name in JOB_PREFIXES.items():
        if job.startswith(prefix) and len(job) > len(prefix):
            return create(name)
    raise ConfigurationError(f"{job!r} is not a job id.",
                             "`mf jobs list` shows them (docker-mf-..., slurm-42, k8s-NAMESPACE/NAME).")


def job_running(record: dict[str, Any]) -> bool:
    """Whether the job a lock or hand-back record names still runs (False when its backend cannot say)."""
    job = str(record.get("job") or "")
    try:
        return for_job(job).is_running(job)
    except Exception:  # a backend that cannot be asked (no engine, no cluster) holds no folder here
        return False
