"""`mf jobs`: jobs that run without an `mf` following them (`mf run --detach`), on every backend that lists
them: docker (this machine's engine) and Slurm. A Kubernetes job (k8s-NAMESPACE/NAME) is followed and
cancelled by its id."""

from __future__ import annotations

import json
from typing import Any

import click

from .options import json_option, renderer_for

#: the backends whose detached jobs `mf jobs list` shows (a Kubernetes cluster is asked with kubectl)
LISTED = ("docker", "slurm")


def _backend(job: str) -> Any:
    from providers.errors import ConfigurationError

    from .. import backends

    try:
        if job.startswith("slurm-") and not job.removeprefix("slurm-").isdigit():
            raise ConfigurationError(job)
        return backends.for_job(job)
    except ConfigurationError:
        raise click.BadParameter(f"{job!r} is not a job id; `mf jobs list` shows them (e.g. docker-mf-gguf-load-1a2b3c4d, "
                                 "slurm-42)", param_hint="'JOB'") from None


@click.group("jobs")
def jobs_group() -> None:
    """Detached jobs: list them, follow their events, cancel them."""


@jobs_group.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """Jobs started from this machine with --detach, with their state."""
    from providers.errors import EngineError

    from .. import backends

    rows: list[dict[str, Any]] = []
    for name in LISTED:
        try:
            rows += backends.create(name).list_jobs()
        except EngineError:
            continue  # no Docker engine (or no Slurm) here: none of its jobs either
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        where = row.get("url") or row["folder"]  # a server: where it answers
        click.echo(f"{row['id']:14} {row['state']:12} {row['provider'] or '?'} {row['action'] or '?'}  {where}")


@jobs_group.command("logs")
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep reading until the job ends, then show its result.")
@json_option
def logs_command(job: str, follow: bool, as_json: bool) -> None:
    """Show a job's events (as `mf run` shows them); with --follow, until it ends."""
    from providers.errors import ConfigurationError

    from ..outcome import EventLines

    backend = _backend(job)
    renderer = renderer_for(as_json)
    events = EventLines(renderer.on_event)
    if follow:
        try:
            backend.follow(job, events)
        except KeyboardInterrupt:
            raise SystemExit(130) from None  # stops following; the job goes on
    elif not backend.read_events(job, events):
        raise ConfigurationError(f"No record of {job} on this machine.", "`mf jobs list` shows the jobs mf knows.")
    events.raise_error()


@jobs_group.command("cancel")
@click.argument("job")
def cancel_command(job: str) -> None:
    """Cancel a job: its container is stopped with the job's grace period (a training job checkpoints)."""
    _backend(job).cancel(job)
    click.echo(f"{job} cancelled")
