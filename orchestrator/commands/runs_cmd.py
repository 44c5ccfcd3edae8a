"""`mf runs`: what this machine ran (`mf run`, `mf export`, `mf serve`), how it went, and each run's curves."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click

from .options import json_option


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:  # noqa: PLR2004
        return f"{seconds:.0f}s"
    if seconds < 3600:  # noqa: PLR2004
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _short(path: str | None, width: int = 32) -> str:
    if not path:
        return "-"
    return path if len(path) <= width else "..." + path[-(width - 3):]


@click.group("runs", invoke_without_command=True)
@click.option("--all", "all_kinds", is_flag=True, help="Validate and load jobs too.")
@json_option
@click.pass_context
def runs_group(ctx: click.Context, all_kinds: bool, as_json: bool) -> None:
    """Every run this machine started, newest first: mf runs [show RUN | rm RUN].

    RUN is a run id, a unique start of one, or the run's output folder.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..runs import list_runs

    runs = list_runs(all_kinds=all_kinds)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in runs], indent=2, default=str))
        return
    if not runs:
        click.echo("No runs yet: `mf run`, `mf export` and `mf serve` record theirs here.")
        return
    header = f"{'ID':8}  {'KIND':8} {'PROVIDER':11} {'MODEL':22} {'STATUS':11} {'STARTED':16} {'TOOK':>7}  {'RESULT':30} OUTPUT"
    click.echo(header)
    for r in runs:
        model = Path(r.model).name if r.model else "-"
        output = _short(r.output) + (f" ({r.output_state})" if r.output_state else "")
        click.echo(f"{r.id:8}  {r.kind:8} {(r.provider or '-'):11} {model[:22]:22} {r.status:11} {_when(r.started):16} "
                   f"{_span(r.duration):>7}  {r.summary()[:30]:30} {output}")


@runs_group.command("show")
@click.argument("run")
@json_option
def show_command(run: str, as_json: bool) -> None:
    """A run's settings, image, checkpoints, files, metrics and loss curve."""
    from ..runs import curve, details, find, loss_series

    record = find(run)
    info = details(record)
    manifest, checkpoints, files, rows = info["manifest"], info["checkpoints"], info["files"], info["metrics"]
    if as_json:
        click.echo(json.dumps({**record.as_json(), "checkpoints": checkpoints, "files": files, "metrics": rows,
                               "manifest": manifest}, indent=2, default=str))
        return
    click.echo(f"run       {record.id}   {record.kind} · {record.status}" + (f" ({record.error})" if record.error else ""))
    job = f"   job {record.job}" if record.job else ""
    click.echo(f"provider  {record.provider or '-'}   backend {record.backend or '-'}{job}")
    click.echo(f"model     {record.model or '-'}")
    if record.dataset:
        click.echo(f"dataset   {record.dataset}")
    click.echo(f"output    {record.output or '-'}" + (f" ({record.output_state})" if record.output_state else ""))
    click.echo(f"started   {_when(record.started)}   took {_span(record.duration)}")
    image = manifest.get("image") or record.result.get("image")
    if image:
        click.echo(f"image     {image}" + (f"   lock {manifest['lock_hash']}" if manifest.get("lock_hash") else ""))
    config = manifest.get("config") or record.config.get("train") or {}
    if config:
        click.echo("config    " + ", ".join(f"{k}={v}" for k, v in config.items() if v is not None))
    if checkpoints:
        click.echo(f"checkpoints  {', '.join(checkpoints)}")
    if files:
        click.echo(f"files     {', '.join(files)}")
    final = {k: v for k, v in (manifest.get("metrics") or record.result).items() if isinstance(v, int | float)
             and (k.startswith(("train_loss", "eval_")) or k in ("steps", "global_step"))}
    if final:
        click.echo("metrics   " + "  ".join(f"{k}={v:.4g}" for k, v in final.items()))
    chart = curve(loss_series(rows))
    if chart:
        click.echo("")
        for line in chart:
            click.echo(line)


@runs_group.command("rm")
@click.argument("run")
@click.option("--files", "delete_files", is_flag=True, help="Delete its output folder too (asks first).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
def rm_command(run: str, delete_files: bool, yes: bool) -> None:
    """Forget a run (and, with --files, delete its output folder)."""
    from providers.errors import ConfigurationError

    from ..runs import find, forget

    record = find(run)
    if record.status == "running":
        raise ConfigurationError(f"Run {record.id} is still running.",
                                 f"Stop it first ({'mf jobs cancel ' + record.job if record.job else 'Ctrl-C in its terminal'}).")
    target = Path(record.output) if delete_files and record.output and "://" not in record.output else None
    if target is not None and target.exists():
        if not yes:
            click.confirm(f"Delete {target} and everything in it?", abort=True)
        shutil.rmtree(target)
        click.echo(f"deleted {target}")
    forget(record)
    click.echo(f"forgot run {record.id}")
