"""`mf providers`: every registered provider, its image and whether that image is built; and the custom
provider guide as commands: `new` (a package), `lock` (its image recipe), `check` (the guide's step 4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .options import flavour_option, json_option, parse_secrets, secret_option


def provider_rows() -> list[dict[str, Any]]:
    from providers.errors import EngineError, ImageError
    from providers.protocol import declared_network, declared_secrets
    from providers.provider_factory import (
        IMAGE_ONLY_IMPORTS,
        PLUGIN_ERRORS,
        PROVIDER_ORIGINS,
        PROVIDER_REGISTRY,
        available_providers,
    )

    from .. import engine, recipes

    try:
        gpu_host: bool | None = engine.has_nvidia_runtime()
    except EngineError:
        gpu_host = None
    rows = []
    for name in available_providers():
        cls = PROVIDER_REGISTRY[name]
        row: dict[str, Any] = {
            "name": name,
            "origin": PROVIDER_ORIGINS.get(name, "?"),
            "actions": list(getattr(cls, "actions", ("validate", "load"))),
            "requires_gpu": bool(getattr(cls, "requires_gpu", False)),
            "network": declared_network(cls),
            "secrets": declared_secrets(cls),
            "image": None,
            "built": None,
            "note": "",
        }
        try:
            spec = recipes.image_spec(name, None, bool(gpu_host))
            row["image"] = spec.tag
            row["built"] = engine.image_exists(spec.tag) if gpu_host is not None else None
            if gpu_host is None:
                row["note"] = "Docker engine not reachable"
        except ImageError as exc:
            row["note"] = exc.message
        if row["network"]:
            row["note"] = " ".join([row["note"], f"reaches {', '.join(row['network'])} (egress proxy)"]).strip()
        if name in IMAGE_ONLY_IMPORTS:
            row["note"] = " ".join([row["note"], f"imports {', '.join(IMAGE_ONLY_IMPORTS[name])} in its image only"]).strip()
        rows.append(row)
    for name, error in sorted(PLUGIN_ERRORS.items()):
        rows.append({"name": name, "origin": "?", "actions": [], "requires_gpu": False, "network": [], "secrets": [],
                     "image": None,
                     "built": None, "note": f"broken plugin: {error.message}"})
    return rows


@click.group("providers", invoke_without_command=True)
@json_option
@click.pass_context
def providers_command(ctx: click.Context, as_json: bool) -> None:
    """List the providers, their images, and whether each image is built.

    \b
    mf providers new NAME         a provider package (entry point, image recipe, test)
    mf providers lock NAME        hash-lock its image recipe
    mf providers check NAME ...   the interface on the host, then each method in its image
    """
    if ctx.invoked_subcommand is None:
        list_providers(as_json)


@providers_command.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List the providers (the same as `mf providers`)."""
    list_providers(as_json)


def list_providers(as_json: bool) -> None:
    rows = provider_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from ..render import stdout_console

    table = Table("provider", "actions", "image", "built", "note")
    for row in rows:
        built = {True: "[green]yes[/]", False: "[yellow]no[/]", None: "-"}[row["built"]]
        table.add_row(row["name"], ", ".join(row["actions"]), row["image"] or "-", built, row["note"])
    stdout_console.print(table)


@providers_command.command("new")
@click.argument("name")
@click.option("--from-file", "from_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A provider module to package byte for byte (e.g. the guide's custom_provider.py).")
@click.option("--stack", type=click.Choice(["transformers", "llama-cpp", "none"]), default=None,
              help="What the image builds on: the huggingface image (transformers), the gguf image (llama-cpp), "
                   "or a lock of its own (none). Default: from the file's imports, else transformers.")
@click.option("--dir", "target", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the package. Default: ./mf-provider-NAME.")
def new_command(name: str, from_file: Path | None, stack: str | None, target: Path | None) -> None:
    """Write a provider package: the provider, its entry point, its image recipe and a test."""
    from ..provider_kit import scaffold

    folder, stack, files = scaffold(name, target or Path(f"mf-provider-{name}"), stack, from_file)
    click.echo(f"Wrote {folder}/ ({stack} stack): {', '.join(files)}")
    click.echo("Next:")
    click.echo(f"  mf providers lock {name}" + ("   # after listing its libraries in image/requirements.in"
                                               if stack == "none" else ""))
    click.echo(f"  pip install -e {folder}")
    click.echo(f"  mf providers check {name} --model MODEL")


@providers_command.command("lock")
@click.argument("name")
@click.option("--flavour", "flavours", multiple=True, metavar="FLAVOUR",
              help="Lock this flavour (cpu, cuda; repeatable). Default: cpu, or every flavour of the image it extends.")
@click.option("--dir", "package_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The package's folder. Default: the installed provider's, else ./mf-provider-NAME.")
def lock_command(name: str, flavours: tuple[str, ...], package_dir: Path | None) -> None:
    """Hash-lock a plugin's image recipe (requirements.in) for the image's Python and platform."""
    from ..provider_kit import lock

    for path in lock(name, list(flavours) or None, package_dir, progress=lambda m: click.echo(m, err=True)):
        click.echo(f"Wrote {path}")


MARK = {True: "✅", False: "❌", None: "➖"}


@providers_command.command("check")
@click.argument("name")
@click.option("--model", required=True, help="A model the provider loads (a local path; with --script, the model "
                                             "every model id the script passes is read as).")
@click.option("--model-class", default="AutoModelForCausalLM", show_default=True)
@click.option("--script", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Run this test script in the image instead (the guide's test_custom_provider.py, unchanged); "
                   "its ✅/❌ lines are the checks.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A job config whose provider_config the provider gets.")
@secret_option
@flavour_option
@json_option
def check_command(name: str, model: str, model_class: str, script: Path | None, config_file: Path | None,
                  secrets: tuple[str, ...], flavour: str | None, as_json: bool) -> None:
    """The guide's step 4 as a command: the interface on the host, then (in the provider's image, built
    where missing) validate_model_access, load_model, load_tokenizer and the pad token, each ✅ or ❌."""
    from ..provider_kit import host_checks

    records = host_checks(name, flavour)
    show = _printer(as_json)
    for record in records:
        show(record)
    if all(r["ok"] is not False for r in records):
        for record in _image_checks(name, model, model_class, script, config_file, secrets, flavour, as_json):
            show(record)
            records.append(record)
    failed = [r for r in records if r["ok"] is False]
    if not as_json:
        passed = sum(r["ok"] is True for r in records)
        click.echo(f"{passed} passed, {len(failed)} failed" + ("" if records[-1].get("where") != "host" or not failed
                                                              else " (on the host; the image was not built)"))
    if failed:
        sys.exit(1)


def _printer(as_json: bool) -> Any:
    def show(record: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            return
        seconds = f" ({record['seconds']:.2f} s)" if record.get("seconds") else ""
        detail = f": {record['detail']}" if record["detail"] else ""
        click.echo(f"{MARK[record['ok']]} {record['name']}{detail}{seconds}")
    return show


def _image_checks(name: str, model: str, model_class: str, script: Path | None, config_file: Path | None,
                  secrets: tuple[str, ...], flavour: str | None, as_json: bool) -> list[dict[str, Any]]:
    from providers.contract import LogEvent, StageEvent
    from providers.schemas import load_job_config

    from ..jobs import JobRequest, run_job

    options: dict[str, Any] = {}
    mounts: list[tuple[Path, str, bool]] = []
    if script is not None:
        target = f"/check/{script.name}"
        options = {"script": target, "swap_model": True}
        mounts.append((script.resolve(), target, True))
    config = load_job_config(config_file) if config_file else None
    request = JobRequest(provider=name, action="check", model=model, model_class=model_class, flavour=flavour,
                         provider_config=config.provider_config if config else {}, options=options, mounts=mounts,
                         secrets=parse_secrets(secrets, config.secrets if config else {}))

    def on_event(event: Any) -> None:  # the provider's logs and the stages, to stderr: stdout has the checks
        if isinstance(event, StageEvent) and event.message:
            click.echo(f"  {event.message}", err=True)
        elif isinstance(event, LogEvent) and not as_json:
            click.echo(f"  | {event.message}", err=True)

    def on_build(line: str) -> None:  # what is built, not the engine's every step
        if line.startswith(("building ", "staging ", "pulling ")):
            click.echo(f"  {line}", err=True)

    result = run_job(request, on_event=on_event, on_build=on_build)
    return [{**r, "where": "image"} for r in result.get("checks", [])]
