"""`mf jobs`: jobs that run without an `mf` following them (`mf run --backend slurm --detach`)."""

from __future__ import annotations

import json

import click

from .options import json_option, renderer_for


def _slurm_id(job: str) -> str:
    if not job.startswith("slurm-") or not job.removeprefix("slurm-").isdigit():
        raise click.BadParameter(f"{job!r} is not a job id; `mf jobs list` shows them (e.g. slurm-42)",
                                 param_hint="'JOB'")
    return job.removeprefix("slurm-")


@click.group("jobs")
def jobs_group() -> None:
    """Detached jobs: list them, follow their events, cancel them."""


@jobs_group.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """Jobs submitted from this machine, newest last, with their state."""
    from ..backends import slurm

    rows = slurm.list_jobs() if slurm.jobs_root().exists() else []
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['id']:14} {row['state']:12} {row['provider'] or '?'} {row['action'] or '?'}  {row['folder']}")


@jobs_group.command("logs")
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep reading until the job ends, then show its result.")
@json_option
def logs_command(job: str, follow: bool, as_json: bool) -> None:
    """Show a job's events (as `mf run` shows them); with --follow, until it ends."""
    from providers.contract import ErrorEvent, decode_event
    from providers.errors import ConfigurationError, error_from_kind

    from ..backends import slurm

    job_id = _slurm_id(job)
    folder = slurm.folder_of(job_id)
    if folder is None or not folder.exists():
        raise ConfigurationError(f"No record of {job} on this machine.", "`mf jobs list` shows the jobs mf knows.")
    renderer = renderer_for(as_json)
    errors: list[ErrorEvent] = []

    def on_line(line: str) -> None:
        try:
            event = decode_event(line)
        except ValueError:
            return
        renderer.on_event(event)
        if isinstance(event, ErrorEvent):
            errors.append(event)

    if follow:
        try:
            slurm.follow(job_id, folder, on_line)
        except KeyboardInterrupt:
            raise SystemExit(130) from None  # stops following; the job goes on
    elif (folder / "events.jsonl").exists():
        for line in (folder / "events.jsonl").read_text(errors="replace").splitlines():
            on_line(line)
    if errors:
        exc = error_from_kind(errors[-1].kind, errors[-1].message, errors[-1].hint)
        exc.reported = True
        raise exc


@jobs_group.command("cancel")
@click.argument("job")
def cancel_command(job: str) -> None:
    """Cancel a job: Slurm stops its container, giving a training job its grace period to checkpoint."""
    from ..backends import slurm

    slurm.cancel(_slurm_id(job))
    click.echo(f"{job} cancelled")
