"""`mf serve`: an OpenAI-compatible server for a model, in its provider's image; `mf chat`: a terminal chat
with one."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .options import GpuRequest, MemorySize, ProviderName, flavour_option, json_option, registry_option, renderer_for


def _server_options(func: Any) -> Any:
    """The options that say which model to serve and how: shared by `mf serve` and `mf chat`."""
    options = [
        click.option("--provider", "-p", type=ProviderName(), default=None,
                     help="Provider name (default: huggingface for a RUN folder)."),
        click.option("--model", "-m", default=None, help="A model file or folder (default: the RUN's base model)."),
        click.option("--adapter", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="A LoRA adapter folder, loaded on --model (default: RUN/adapter)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="A JSON job config; its provider_config applies (e.g. n_ctx for gguf)."),
        click.option("--memory", default=None, type=MemorySize(), metavar="SIZE", help="Memory limit, e.g. 4g."),
        click.option("--cpus", default=None, type=click.FloatRange(0.01, 4096), metavar="N", help="CPU limit."),
        click.option("--gpus", default=None, type=GpuRequest(), metavar="all|N|device=0,1",
                     help="GPUs to pass. Default: all when the engine has an NVIDIA runtime."),
        registry_option("Pull a missing image from this registry."),
        click.option("--build", "force_build", is_flag=True, help="Build a missing image here."),
        flavour_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _serve_request(run: Path | None, provider: str | None, model: str | None, adapter: Path | None,
                   config_file: Path | None, **fields: Any) -> Any:
    from providers.schemas import load_job_config

    from ..serving import ServeRequest, from_run

    if run is not None:
        base, run_adapter = from_run(run)
        model = model or str(base)
        adapter = adapter or run_adapter
        provider = provider or "huggingface"
        fields.setdefault("model_id", None)
        if fields["model_id"] is None:
            fields["model_id"] = run.expanduser().resolve().name
    if model is None or provider is None:
        raise click.UsageError("give --provider and --model (or a finished training RUN folder)")
    config = load_job_config(config_file) if config_file else None
    return ServeRequest(provider=provider, model=model, adapter=adapter,
                        provider_config=dict(config.provider_config) if config else {}, **fields)


@click.command("serve")
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=Path))
@_server_options
@click.option("--model-id", default=None, help="The id clients name the model by (default: the model's file name).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Where the server listens on this machine; anything but loopback needs --expose.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free port.")
@click.option("--api-key", default=None, help="The key clients send (default: MF_SERVE_API_KEY, else a random one).")
@click.option("--expose", is_flag=True, help="Allow --host beyond loopback (needs --api-key).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser pages of this origin (repeatable). Default: none.")
@click.option("--max-tokens-cap", type=click.IntRange(1, 1_000_000), default=2048, show_default=True,
              help="The most tokens one request may generate, whatever it asks.")
@click.option("--no-merge", is_flag=True, help="Keep the LoRA adapter separate instead of merging it into the base.")
@click.option("--detach", is_flag=True, help="Return once the server answers; `mf jobs cancel` stops it.")
@json_option
def serve_command(run: Path | None, provider: str | None, model: str | None, adapter: Path | None,
                  config_file: Path | None, memory: str | None, cpus: float | None, gpus: str | None,
                  registry: str | None, force_build: bool, flavour: str | None, model_id: str | None, host: str,
                  port: int, api_key: str | None, expose: bool, cors_origins: tuple[str, ...], max_tokens_cap: int,
                  no_merge: bool, detach: bool, as_json: bool) -> None:
    """Serve a model over an OpenAI-compatible API, from its provider's image, on 127.0.0.1.

    \b
    mf serve --provider gguf --model ./run1-gguf/model-q8_0.gguf
    mf serve ./run1                                   # a finished train output: its base + adapter
    mf serve -p huggingface --model ./base --adapter ./run1/adapter --port 8081 --detach
    mf chat                                           # talk to it

    Every server has a key (--api-key, MF_SERVE_API_KEY, else a random one); mf serve prints the path of
    the file that holds it. One generation runs at a time; other requests wait their turn.
    """
    from ..serving import Ready, serve

    request = _serve_request(run, provider, model, adapter, config_file, model_id=model_id, host=host, port=port,
                             api_key=api_key, expose=expose, cors_origins=list(cors_origins),
                             max_tokens_cap=max_tokens_cap, merge_adapter=not no_merge, memory=memory, cpus=cpus,
                             gpus=gpus, flavour=flavour, registry=registry, build=force_build, detach=detach)
    renderer = renderer_for(as_json)

    def on_ready(ready: Ready) -> None:
        if as_json:
            click.echo(json.dumps({"event": "ready", "url": f"{ready.url}/v1", "model_id": ready.model_id,
                                   "key_file": str(ready.key_file), "job": ready.job,
                                   "ready_seconds": round(ready.seconds, 3)}))
            return
        click.echo(f"Serving {ready.model_id} at {ready.url}/v1 (ready in {ready.seconds:.2f} s)")
        click.echo(f"  API key: in {ready.key_file}")
        click.echo(f"  Talk to it: mf chat   OpenAI clients: "
                   f"base_url={ready.url}/v1, api_key=<that file's text>")
        click.echo(f"  Stop it: mf jobs cancel {ready.job}" if ready.job else "  Ctrl-C stops it.")

    from providers.errors import InterruptedJobError

    from ..runs import RunRecord

    record = RunRecord("serve", provider=request.provider, model=str(request.model),
                       config={"adapter": str(request.adapter) if request.adapter else None, "port": port})
    try:
        result = serve(request, renderer.on_event, renderer.on_build, on_ready, on_submit=record.submitted)
    except InterruptedJobError:
        record.finished({})  # Ctrl-C is how a server ends
        if as_json:
            click.echo(json.dumps({"event": "stopped"}))
        else:
            click.echo("Stopped: the server and its container are gone.", err=True)
        sys.exit(130)
    except BaseException as exc:
        record.failed(exc)
        raise
    if detach:
        record.detached(str(result["job"]))
    else:
        record.finished(result)
    if as_json and not detach:
        click.echo(json.dumps(result))


@click.command("chat")
@click.option("--to", default=None, metavar="JOB|URL", help="The server: a job id (`mf jobs list`) or a URL.")
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=Path))
@_server_options
@click.option("--api-key", default=None, help="The key of a server given by URL (default: MF_SERVE_API_KEY).")
@click.option("--system", default=None, help="A system prompt.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=None, help="Sampling temperature (default 0.7).")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="The most tokens per answer (default 512).")
def chat_command(to: str | None, run: Path | None, provider: str | None, model: str | None, adapter: Path | None,
                 config_file: Path | None, memory: str | None, cpus: float | None, gpus: str | None,
                 registry: str | None, force_build: bool, flavour: str | None, api_key: str | None,
                 system: str | None, temperature: float | None, max_tokens: int | None) -> None:
    """Chat with a model in the terminal: the server that runs (mf serve), or one started for this chat.

    \b
    mf chat                                        # the one server running on this machine
    mf chat --to docker-mf-gguf-serve-1a2b3c4d     # one of several
    mf chat --provider gguf --model ./m.gguf       # start a server for this chat; stopped when it ends
    """
    from .. import backends, cache_dir
    from ..chat import Chat, Client, history, wait_for_health
    from ..serving import KEY_ENV, Ready, pick_server, serve

    started_job: str | None = None
    if model is not None or run is not None or provider is not None:
        if to:
            raise click.UsageError("--to names a running server; leave it out to start one with --model")
        request = _serve_request(run, provider, model, adapter, config_file, model_id=None, host="127.0.0.1",
                                 port=0, api_key=None, memory=memory, cpus=cpus, gpus=gpus, flavour=flavour,
                                 registry=registry, build=force_build, detach=True)
        click.echo("starting a server for this chat (loading model) ...", err=True)
        ready: list[Ready] = []
        result = serve(request, lambda event: None, lambda line: None, ready.append)
        started_job = str(result["job"])
        url, key, model_id = ready[0].url, ready[0].key_file.read_text().strip(), ready[0].model_id
    else:
        server = pick_server(to)
        url, model_id = server.url, server.model_id
        key = api_key or os.environ.get(KEY_ENV) or ""
        if server.key_file is not None:
            key = server.key_file.read_text().strip()
        if not key:
            raise click.UsageError("give the server's key with --api-key (or MF_SERVE_API_KEY)")
    client = Client(url, key)
    try:
        wait_for_health(client, sys.stderr)
        if not model_id:
            model_id = client.models()[0]
        chat = Chat(client, model_id)
        if system:
            chat.conv.system = system
        if temperature is not None:
            chat.conv.settings["temperature"] = temperature
        if max_tokens is not None:
            chat.conv.settings["max_tokens"] = max_tokens
        save = history(cache_dir() / "chat-history")
        try:
            chat.loop()
        finally:
            save()
    finally:
        if started_job is not None:
            backends.for_job(started_job).cancel(started_job)
