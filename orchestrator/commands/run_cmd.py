"""`mf run --provider NAME ACTION --model M`: one job in the provider's image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from providers.protocol import ACTIONS
from providers.runtime.train_config import STRATEGIES, TASK_MODEL_CLASS, TASKS

from .options import (
    GpuRequest,
    MemorySize,
    ProviderName,
    flavour_option,
    json_option,
    parse_secrets,
    registry_option,
    renderer_for,
    secret_option,
)


def _prompt(value: str | None) -> str | None:
    """An empty prompt is refused when the line is parsed: it leaves nothing to complete."""
    if value is not None and not value.strip():
        raise click.BadParameter("an empty prompt leaves the model nothing to complete; give it text, or leave "
                                 "--prompt out to load the model without generating", param_hint="'--prompt'")
    return value


@click.command("run")
@click.option("--provider", "-p", required=True, type=ProviderName(), help="Provider name (see `mf providers`).")
@click.argument("action", type=click.Choice(ACTIONS), metavar="ACTION")
@click.option("--model", "-m", required=True, help="A model file or folder, or a hub reference org/repo:file.")
@click.option("--model-class", default=None, help="Model class, e.g. AutoModelForCausalLM.")
@click.option("--prompt", default=None, callback=lambda ctx, param, value: _prompt(value),
              help="With load: generate a completion of this prompt.")
@click.option("--max-new-tokens", type=click.IntRange(1, 8192), default=32, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 5), default=0.0, show_default=True,
              help="Sampling temperature; 0 is greedy.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A JSON job config: provider_config, model_class, options.")
@click.option("--output", "-o", "output_arg", default=None, metavar="DIR",
              help="Folder the job writes its results to (pvc://CLAIM/PATH with --backend kubernetes).")
@click.option("--dataset", "-d", "dataset_arg", default=None, metavar="FILE",
              help="With train: a JSONL dataset of {prompt, completion}, {text} or {messages} records.")
@click.option("--task", type=click.Choice(TASKS), default=None,
              help="With train: what the model learns (default text-generation; or the --config's train.task).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help="With train: sft (LoRA), qlora (LoRA on a 4-bit base), dpo (preference pairs; rlhf is DPO too).")
@click.option("--nproc", type=click.IntRange(1, 256), default=None, metavar="N",
              help="With train: N data-parallel ranks in the job's container (torchrun; gloo on the CPU, NCCL on GPUs). "
                   "Default: one per GPU given as a count (--gpus N), else 1.")
@click.option("--nodes", type=click.IntRange(1, 1024), default=None, metavar="M",
              help="With train on --backend slurm or kubernetes: M nodes, --nproc ranks on each (one container per node).")
@click.option("--resume", is_flag=True, help="With train: continue from the last complete checkpoint in --output.")
@click.option("--overwrite", is_flag=True, help="With train: replace a finished run in --output.")
@click.option("--online", is_flag=True, help="Let the job reach the Hugging Face hub (its hosts only, through the job's "
                                             "egress proxy; HF_TOKEN as a secret file).")
@click.option("--network", "network", type=click.Choice(["open"]), default=None,
              help="With --online: the whole network (the bridge) instead of the hub's hosts only. The escape hatch.")
@secret_option
@click.option("--gpus", default=None, type=GpuRequest(), metavar="all|N|device=0,1",
              help="GPUs to pass. Default: all when the engine has an NVIDIA runtime.")
@click.option("--memory", default=None, type=MemorySize(), metavar="SIZE", help="Memory limit for the job container, e.g. 4g.")
@click.option("--cpus", default=None, type=click.FloatRange(0.01, 4096), metavar="N",
              help="CPUs the job may use, e.g. 1 or 1.5 (Docker --cpus; Slurm --cpus-per-task; a Kubernetes CPU limit). "
                   "Jobs size their thread pools to it. Default: every CPU, fewer threads while others use them.")
@registry_option("Pull a missing image from this registry (default: MF_REGISTRY, else the config).")
@click.option("--build", "force_build", is_flag=True, help="Build a missing image here even when a registry is set.")
@click.option("--backend", type=click.Choice(["docker", "slurm", "kubernetes"]), default="docker", show_default=True,
              help="Where the job runs: this machine's Docker engine, a Slurm cluster (sbatch), or Kubernetes (a Job).")
@click.option("--partition", default=None, help="With --backend slurm: the partition.")
@click.option("--time", "time_limit", default=None, metavar="HH:MM:SS", help="With --backend slurm: the time limit.")
@click.option("--namespace", default=None, help="With --backend kubernetes: the namespace (default: default).")
@click.option("--deadline", type=click.IntRange(1), default=None, metavar="SECONDS",
              help="With --backend kubernetes: the Job's activeDeadlineSeconds.")
@click.option("--hf-cache", default=None, metavar="pvc://CLAIM/PATH", help="With --backend kubernetes: the HF cache.")
@click.option("--dry-run", is_flag=True, help="With --backend kubernetes: print the manifests as YAML; submit nothing.")
@click.option("--detach", is_flag=True,
              help="Print the job id once it has started and return; `mf jobs logs|cancel` follow or stop it.")
@flavour_option
@json_option
def run_command(provider: str, action: str, model: str, model_class: str | None, prompt: str | None,
                max_new_tokens: int, temperature: float, config_file: Path | None, output_arg: str | None,
                dataset_arg: str | None, task: str | None, strategy: str | None, nproc: int | None, nodes: int | None,
                resume: bool,
                overwrite: bool,
                online: bool, network: str | None, secrets: tuple[str, ...], gpus: str | None,
                memory: str | None, cpus: float | None, registry: str | None, force_build: bool, backend: str,
                partition: str | None,
                time_limit: str | None, namespace: str | None, deadline: int | None, hf_cache: str | None,
                dry_run: bool, detach: bool, flavour: str | None, as_json: bool) -> None:
    """Run ACTION (validate, load or train) with a provider, inside its container image.

    \b
    mf run --provider gguf validate --model ./models/SmolLM2-135M-Instruct.Q4_1.gguf
    mf run --provider gguf load --model ./models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt "The capital of France is"
    mf run --provider huggingface train --model ./smollm2-hf --dataset data.jsonl --output ./run1 --config job.json
    mf run -p huggingface train --model ./smollm2-hf --dataset prefs.jsonl --output ./run2 --strategy dpo
    mf run -p huggingface train --model ./t5 --dataset docs.jsonl --output ./run3 --task summarization
    mf run --backend slurm -p huggingface train ... --nodes 2 --gpus 4 --output /shared/run4

    A --config file is JSON: {"provider_config": {...}, "model_class": "...", "train": {"max_steps": 10, ...}}.
    """
    from providers.schemas import load_job_config

    from ..jobs import JobRequest, run_job

    backend_options: Any = None
    if backend != "kubernetes" and (namespace or deadline or hf_cache or dry_run):
        raise click.UsageError("--namespace, --deadline, --hf-cache and --dry-run go with --backend kubernetes")
    if backend != "slurm" and (partition or time_limit):
        raise click.UsageError("--partition and --time go with --backend slurm")
    if backend == "kubernetes":
        from ..backends.kubernetes import KubernetesOptions

        # the dataset, output folder and HF cache are volumes there: pvc://CLAIM/PATH
        backend_options = KubernetesOptions(namespace=namespace or "default", active_deadline_seconds=deadline,
                                            dry_run=dry_run, dataset=dataset_arg, output=output_arg,
                                            hf_cache=hf_cache)
    elif backend == "slurm":
        from ..backends.slurm import SlurmOptions

        if gpus is not None and not gpus.isdigit():
            raise click.BadParameter("with --backend slurm, give a GPU count (e.g. --gpus 1): Slurm allocates them",
                                     param_hint="'--gpus'")
        backend_options = SlurmOptions(partition=partition, time_limit=time_limit, gpus=int(gpus) if gpus else None)
    local = backend != "kubernetes"
    config = load_job_config(config_file) if config_file else None
    extra: dict[str, Any] = {}
    if config is not None:
        extra.update(provider_config=config.provider_config, train=dict(config.train),
                     quantization_config=config.quantization_config)
    extra["secrets"] = parse_secrets(secrets, config.secrets if config is not None else {})
    if config is not None and config.dataset and not dataset_arg and action == "train":
        dataset_arg = config.dataset  # a ModelForge config names its dataset
    if (nproc is not None or nodes is not None) and action != "train":
        raise click.UsageError("--nproc and --nodes go with the train action")
    if nodes is not None and nodes > 1 and backend == "docker":
        raise click.UsageError("--nodes needs a cluster (--backend slurm or kubernetes); on this machine, "
                               "--nproc N runs N ranks in one container")
    if nproc is None and action == "train" and gpus is not None and gpus.isdigit() and int(gpus) > 1:
        nproc = int(gpus)  # one rank per GPU
    if task or strategy:
        if action != "train":
            raise click.UsageError("--task and --strategy go with the train action")
        extra["train"] = {**extra.get("train", {}), **({"task": task} if task else {}),
                          **({"strategy": strategy} if strategy else {})}
    train_task = extra.get("train", {}).get("task", "text-generation") if action == "train" else None
    if train_task and model_class and model_class != TASK_MODEL_CLASS.get(train_task, model_class):
        raise click.BadParameter(f"{train_task} trains {TASK_MODEL_CLASS[train_task]}; leave --model-class out",
                                 param_hint="'--model-class'")
    request = JobRequest(
        provider=provider,
        action=action,
        model=model,
        model_class=model_class or (TASK_MODEL_CLASS.get(train_task) if train_task else None)
        or (config.model_class if config else None) or "AutoModelForCausalLM",
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        online=online,
        network=network,
        output=Path(output_arg) if output_arg and local else None,
        flavour=flavour,
        gpus=gpus,
        dataset=Path(dataset_arg) if dataset_arg and local else None,
        resume=resume,
        overwrite=overwrite,
        memory=memory,
        cpus=cpus,
        registry=registry,
        build=force_build,
        backend=backend,
        backend_options=backend_options,
        detach=detach,
        nproc=nproc or 1,
        nodes=nodes or 1,
        **extra,
    )
    renderer = renderer_for(as_json)
    if config is not None and config.notes:
        from providers.contract import StageEvent

        notes = list(config.notes)
        if config.model and config.model != model:
            notes.append(f"the config's model_name {config.model} is not used: --model {model} is what runs")
        for note in notes:
            renderer.on_event(StageEvent(name="config", message=note))
    from ..runs import recorded

    with recorded(action, provider=provider, model=model, dataset=dataset_arg, output=output_arg, backend=backend,
                  config={k: v for k, v in extra.items() if v and k != "secrets"}, enabled=not dry_run) as record:
        if as_json:
            outcome = run_job(request, on_event=renderer.on_event, on_build=renderer.on_build,
                              on_submit=record.submitted)
        else:
            from ..render import LayerProgress

            with LayerProgress() as layers:
                outcome = run_job(request, on_event=renderer.on_event, on_build=renderer.on_build, on_layer=layers,
                                  on_submit=record.submitted)
        if outcome.get("detached"):
            record.detached(str(outcome["job"]))
        else:
            record.finished(outcome)
    if outcome.get("dry_run"):
        click.echo(outcome["manifests"], nl=False)
        return
    if outcome.get("detached"):
        click.echo(json.dumps(outcome) if as_json else
                   f"{outcome['job']} submitted; follow it with `mf jobs logs {outcome['job']} --follow`")
