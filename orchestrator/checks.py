"""The first stage of a job: the request checked on the host, before any image is built or container
started. The provider and its action; and, for backends that run on this machine's files (docker, Slurm),
the model, dataset and output folder, their permissions and the output's free space.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from providers.common.hub import parse_hub_reference
from providers.contract import DATA_DIR, MODEL_DIR
from providers.errors import ConfigurationError, ModelAccessError, ModelForgeError, ProviderError
from providers.provider_factory import get_provider_class
from providers.runtime.actions import check_action_supported
from providers.runtime.checkpoints import check_output_folder, estimate_training_bytes
from providers.runtime.train_config import TrainConfig, load_dataset_records

from . import engine
from .plan import UNPRIVILEGED_UID, Inputs, Mount

if TYPE_CHECKING:
    from .jobs import JobRequest
    from .recipes import ImageSpec


@dataclass(frozen=True)
class Provider:
    name: str  # as registered (lower case)
    cls: Any

    @property
    def requires_gpu(self) -> bool:
        return bool(getattr(self.cls, "requires_gpu", False))


def check_provider(request: JobRequest) -> Provider:
    """The provider's class (an unknown name lists the known ones), and whether it does the action."""
    cls = get_provider_class(request.provider)
    name = request.provider.strip().lower()
    check_action_supported(name, cls, request.action)
    return Provider(name, cls)


def check_gpu_provider(provider: Provider, action: str, gpu_host: bool) -> None:
    if provider.requires_gpu and action in ("load", "train", "serve", "check") and not gpu_host:
        raise ProviderError(
            f"The {provider.name} provider needs an NVIDIA GPU for {action}; this Docker engine has no NVIDIA runtime.",
            "Run on a GPU host with the NVIDIA container toolkit, or use --provider huggingface.",
        )


def check_driver_floor(spec: ImageSpec, driver: str | None) -> None:
    """Refuse, before any container, a GPU job whose image needs a newer NVIDIA driver than the host has."""
    from . import recipes

    floor = spec.driver_floor
    if floor is None or driver is None or engine.version_tuple(driver) >= engine.version_tuple(floor):
        return
    raise ConfigurationError(
        f"This host's NVIDIA driver is {driver}; the {spec.provider} {spec.flavour} image needs {floor} or newer "
        "(its CUDA runtime's floor).",
        "Update the NVIDIA driver, or run on the CPU with --gpus none"
        + (" --flavour cpu." if "cpu" in recipes.flavours(spec.provider) else "."),
    )


# -- the job's files on this machine --------------------------------------------------------------------
def hf_cache_dir() -> Path:
    """The host's Hugging Face cache: $HF_HOME, else ~/.cache/huggingface."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "huggingface"


def job_user() -> tuple[int, int]:
    """Who the job runs as: the invoking user, or the images' unprivileged user when `mf` runs as root."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return UNPRIVILEGED_UID, UNPRIVILEGED_UID
    return uid, gid


def resolve_model(model: str, remote: bool = False) -> tuple[str, Mount | None]:
    """The model as the container sees it, and the mount that makes it visible (None for a hub ref, and for a
    provider that calls out (``remote``): an id it resolves itself, such as a cloud API's model name)."""
    path = Path(model).expanduser()
    if path.exists():
        real = path.resolve()  # a symlink is followed: the real file is mounted, read-only
        if not os.access(real, os.R_OK):
            raise ModelAccessError(f"Cannot read {model}: permission denied.", "Check the file's permissions.")
        check_job_user_can_read(real)
        target = f"{MODEL_DIR}/{real.name}"
        return target, Mount(str(real), target, read_only=True)
    if parse_hub_reference(model) is not None or remote:
        return model, None
    raise ModelAccessError(
        f"Model not found: {model}",
        "Check the path, or pass a hub reference such as org/repo:model.gguf.",
    )


def check_job_user_can_read(path: Path) -> None:
    """When `mf` runs as root the job runs as uid 1000: files only root can read would fail inside."""
    if os.getuid() != 0:
        return
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        st = item.stat()
        need = 0o005 if item.is_dir() else 0o004
        if st.st_uid != UNPRIVILEGED_UID and st.st_mode & need != need:
            raise ModelAccessError(
                f"{item} is readable only by its owner, and jobs started by root run as uid {UNPRIVILEGED_UID}.",
                f"Make it readable (chmod -R a+rX {path}) or run mf as a regular user.",
            )


def check_training_request(request: JobRequest) -> dict[str, Any]:
    """Everything a train job needs, checked on the host before any image is built or container started."""
    if request.dataset is None:
        raise ConfigurationError("Training needs a dataset.", "Pass --dataset data.jsonl.")
    if request.output is None:
        raise ConfigurationError("Training needs an output folder.", "Pass --output DIR.")
    config = TrainConfig.parse(request.train)
    check_training_fits(request, config)
    summary, _ = load_dataset_records(request.dataset.expanduser(), config)
    check_output_folder(request.output.expanduser(), resume=request.resume, overwrite=request.overwrite)
    check_output_space(request, config, summary.records)
    return config.model_dump()


def check_training_fits(request: JobRequest, config: TrainConfig) -> None:
    """The task and strategy against the provider (``training_tasks``) and the model (its config.json)."""
    from providers.runtime.tasks import recipe_for

    supported = training_tasks(get_provider_class(request.provider))
    name = request.provider.strip().lower()
    if config.task not in supported:
        raise ConfigurationError(f"The {name} provider trains {', '.join(supported)}, not {config.task}.",
                                 "Use --provider huggingface for that task.")
    if config.strategy not in supported[config.task]:
        raise ConfigurationError(
            f"The {name} provider trains {config.task} with {', '.join(supported[config.task])}, "
            f"not {config.strategy}.", "Pick one of those with --strategy, or use --provider huggingface.")
    model = Path(request.model).expanduser()
    if config.quant and model.suffix == ".gguf":
        raise ConfigurationError(
            f"{config.strategy} loads the base model through bitsandbytes, and {model.name} is a GGUF file "
            "(already quantized by llama.cpp).", "Train on the model's Hugging Face folder (config.json and "
            "safetensors), or use --strategy sft.")
    config_json = model / "config.json"
    if model.is_dir() and config_json.is_file():
        try:
            data = json.loads(config_json.read_text())
        except (OSError, ValueError):
            return  # validate reports an unreadable config.json in the image, with the provider's words
        why = recipe_for(config).fits_model(data if isinstance(data, dict) else {})
        if why:
            raise ConfigurationError(f"{model.name}: {why}.", "Pick the --task that fits the model, or another model.")


def training_tasks(provider_cls: Any) -> dict[str, tuple[str, ...]]:
    """What a provider trains: its ``training_tasks`` (task -> strategies); a provider that says nothing
    trains text generation with LoRA (sft, qlora)."""
    declared = getattr(provider_cls, "training_tasks", None)
    return dict(declared) if declared else {"text-generation": ("sft", "qlora")}


def _free_bytes(path: Path) -> int:
    probe = path.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def check_output_space(request: JobRequest, config: TrainConfig, records: int) -> None:
    """Refuse a training run whose checkpoints and adapter cannot fit, before any container starts."""
    assert request.output is not None
    model = Path(request.model).expanduser()
    need = estimate_training_bytes(model if model.is_dir() else None, config, records)
    free = _free_bytes(request.output)
    if need["total"] > free:
        raise ConfigurationError(
            f"Not enough space for the run in {request.output}: it needs about {_mb(need['total'])} "
            f"({need['checkpoints']} checkpoint(s) of {_mb(need['checkpoint'])} and a {_mb(need['adapter'])} adapter), "
            f"and {_mb(free)} are free.",
            "Free some space, pick another --output, or raise save_steps in the train config.",
        )


def distributed_options(request: JobRequest) -> dict[str, Any]:
    """The spec's ``distributed`` options of a job of several ranks (the entrypoint launches them with
    torchrun: providers/runtime/distributed.py); each node learns its own rank and the rendezvous host from
    its scheduler. ``MF_RDZV_TIMEOUT`` shortens how long the first node waits for the others."""
    if request.nproc * request.nodes <= 1:
        return {}
    dist: dict[str, Any] = {"nproc_per_node": request.nproc, "nnodes": request.nodes}
    if request.nodes > 1 and os.environ.get("MF_RDZV_TIMEOUT", "").isdigit():
        dist["rendezvous_timeout"] = int(os.environ["MF_RDZV_TIMEOUT"])
    return {"distributed": dist}


def calls_out(provider: str) -> bool:
    """Whether the provider declares hosts it connects to (``network``): its models may live there."""
    from providers.protocol import declared_network

    try:
        return bool(declared_network(get_provider_class(provider)))
    except (ModelForgeError, ValueError):
        return False


def local_inputs(request: JobRequest) -> Inputs:
    """The model, the extra mounts and (for train) the dataset as bind mounts of this machine's files, each
    checked; the HF cache and the output folder are mounted later, when the image is there."""
    model, model_mount = resolve_model(request.model, remote=calls_out(request.provider))
    inputs = Inputs(model=model, mounts=[model_mount] if model_mount is not None else [],
                    options=dict(request.options), has_output=request.output is not None)
    inputs.mounts += [Mount(str(source), target, read_only) for source, target, read_only in request.mounts]
    if request.action == "train":
        inputs.options["train"] = check_training_request(request)
        if model_mount is not None:  # recorded in the run's manifest, so `mf export RUN` finds the base model
            inputs.options["model_source"] = str(Path(request.model).expanduser().resolve())
        assert request.dataset is not None
        dataset = request.dataset.expanduser().resolve()
        inputs.mounts.append(Mount(str(dataset), f"{DATA_DIR}/{dataset.name}", read_only=True))
        inputs.options.update(dataset=f"{DATA_DIR}/{dataset.name}", resume=request.resume, overwrite=request.overwrite)
        inputs.options.update(distributed_options(request))
    return inputs


def make_output(output: Path) -> Path:
    """The output folder, created; one line when it cannot be, or cannot be written."""
    output = output.expanduser().absolute()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"Cannot create the output folder {output}: {exc.strerror}.",
                                 "Pick a folder you can write to with --output.") from None
    if not os.access(output, os.W_OK):
        raise ConfigurationError(f"The output folder {output} is not writable.",
                                 "Pick a folder you can write to with --output.")
    return output
