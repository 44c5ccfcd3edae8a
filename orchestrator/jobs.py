"""Running one job in its provider's image: resolve, mount, start, stream events, clean up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.errors import DockerException

from providers.actions import check_action_supported
from providers.contract import (
    DATA_DIR,
    HF_HOME,
    JOB_DIR,
    JOB_SPEC_PATH,
    MODEL_DIR,
    OUTPUT_DIR,
    ErrorEvent,
    JobSpec,
    LogEvent,
    ResultEvent,
    decode_event,
    event_payload,
)
from providers.errors import (
    ConfigurationError,
    ContainerError,
    InterruptedJobError,
    ModelAccessError,
    OutOfMemoryError,
    ProviderError,
    error_from_kind,
)
from providers.hub import parse_hub_reference
from providers.provider_factory import get_provider_class
from providers.training import TrainConfig, check_output_folder, estimate_training_bytes, load_dataset_records

from . import engine, images, registry, runstate
from .plan import JobPlan, Mount, Ulimit

#: Who a job runs as when `mf` itself runs as root: the images' unprivileged `mf` user.
UNPRIVILEGED_UID = 1000
#: How long a stopped job may take to exit before it is killed: training saves a checkpoint first.
STOP_GRACE_SECONDS = {"train": 120}
DEFAULT_STOP_GRACE_SECONDS = 10
PIDS_LIMIT = 1024

EventSink = Callable[[Any], None]


@dataclass
class JobRequest:
    """What the user asked for, in host terms."""

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
    registry: str | None = None
    build: bool = False
    #: action options passed through to the job (mf export's steps)
    options: dict[str, Any] = field(default_factory=dict)
    #: more bind mounts: (host path, path in the container, read-only)
    mounts: list[tuple[Path, str, bool]] = field(default_factory=list)
    #: where the job runs: docker (this machine's engine) or slurm (a cluster; see backends/slurm.py)
    backend: str = "docker"
    slurm: Any = None  # backends.slurm.SlurmOptions
    kubernetes: Any = None  # backends.kubernetes.KubernetesOptions
    #: with --backend kubernetes: the dataset, output folder and HF cache as pvc://CLAIM/PATH
    pvc_dataset: str | None = None
    pvc_output: str | None = None
    pvc_hf_cache: str | None = None


@dataclass
class Mounts:
    model: str
    mounts: list[Any] = field(default_factory=list)


def hf_cache_dir() -> Path:
    """The host's Hugging Face cache: $HF_HOME, else ~/.cache/huggingface."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "huggingface"


def _bind(source: Path, target: str, read_only: bool) -> Mount:
    return Mount(source=str(source), target=target, read_only=read_only)


def resolve_model(model: str) -> tuple[str, Any | None]:
    """The model as the container sees it, and the mount that makes it visible (None for a hub ref)."""
    path = Path(model).expanduser()
    if path.exists():
        real = path.resolve()  # a symlink is followed: the real file is mounted, read-only
        if not os.access(real, os.R_OK):
            raise ModelAccessError(f"Cannot read {model}: permission denied.", "Check the file's permissions.")
        check_job_user_can_read(real)
        target = f"{MODEL_DIR}/{real.name}"
        return target, _bind(real, target, read_only=True)
    if parse_hub_reference(model) is not None:
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
    summary, _ = load_dataset_records(request.dataset.expanduser())
    check_output_folder(request.output.expanduser(), resume=request.resume, overwrite=request.overwrite)
    check_output_space(request, config, summary.records)
    return config.model_dump()


def _job_user() -> tuple[int, int]:
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return UNPRIVILEGED_UID, UNPRIVILEGED_UID
    return uid, gid


def _make_output(output: Path) -> Path:
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


def _give_to_job(output: Path, uid: int, gid: int) -> None:
    """When mf runs as root the unprivileged job user writes here, and reads its earlier checkpoints
    on --resume; everything is handed back to root when the job ends (or by the next mf, if this one dies)."""
    if os.getuid() == 0:
        runstate.hand_back(output, uid, gid)


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


def _iter_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if pending.strip():
        yield pending.decode("utf-8", errors="replace")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_driver_floor(spec: images.ImageSpec, driver: str | None) -> None:
    """Refuse, before any container, a GPU job whose image needs a newer NVIDIA driver than the host has."""
    floor = spec.driver_floor
    if floor is None or driver is None or engine.version_tuple(driver) >= engine.version_tuple(floor):
        return
    raise ConfigurationError(
        f"This host's NVIDIA driver is {driver}; the {spec.provider} {spec.flavour} image needs {floor} or newer "
        "(its CUDA runtime's floor).",
        "Update the NVIDIA driver, or run on the CPU with --gpus none"
        + (" --flavour cpu." if "cpu" in images.flavours(spec.provider) else "."),
    )


def run_job(request: JobRequest, on_event: EventSink, on_build: images.Progress,
            on_layer: Callable[[dict[str, Any]], None] = lambda event: None) -> dict[str, Any]:
    """Run ``request`` in its provider's image; return the result payload or raise the job's error."""
    provider_cls = get_provider_class(request.provider)
    provider_name = request.provider.strip().lower()
    check_action_supported(provider_name, provider_cls, request.action)
    if request.backend == "kubernetes":
        return _run_on_kubernetes(request, provider_name, on_event)
    model_in_container, model_mount = resolve_model(request.model)
    options: dict[str, Any] = dict(request.options)
    if request.action == "train":
        options["train"] = check_training_request(request)
        if model_mount is not None:  # recorded in the run's manifest, so `mf export RUN` finds the base model
            options["model_source"] = str(Path(request.model).expanduser().resolve())

    gpu_host = engine.has_nvidia_runtime()
    if request.backend == "docker" and request.gpus not in (None, "none") and not gpu_host:
        raise ConfigurationError(
            f"--gpus {request.gpus} asks for GPUs, but this Docker engine has no NVIDIA runtime "
            "(`mf doctor` shows what it found).",
            "Install the NVIDIA Container Toolkit and restart the engine "
            "(docs.nvidia.com/datacenter/cloud-native/container-toolkit), or run without --gpus.",
        )
    if getattr(provider_cls, "requires_gpu", False) and request.action in ("load", "train") and not gpu_host:
        raise ProviderError(
            f"The {provider_name} provider needs an NVIDIA GPU for {request.action}; this Docker engine has no NVIDIA runtime.",
            "Run on a GPU host with the NVIDIA container toolkit, or use --provider huggingface.",
        )

    spec = images.image_spec(provider_name, request.flavour, gpu_host)
    if request.backend == "docker" and gpu_host and request.gpus != "none":
        check_driver_floor(spec, engine.host_driver_version())
    image = registry.obtain(spec, on_build, on_layer, request.registry, request.build)

    uid, gid = _job_user()
    for folder in runstate.recover_abandoned_outputs():
        on_event(LogEvent(level="warning", message=f"handed {folder} back to its owner (the mf running its job was killed)"))
    mounts = [model_mount] if model_mount is not None else []
    mounts += [_bind(source, target, read_only) for source, target, read_only in request.mounts]
    hf_home = hf_cache_dir()
    hf_home.mkdir(parents=True, exist_ok=True)
    mounts.append(_bind(hf_home, str(HF_HOME), read_only=not request.online))
    output = _make_output(request.output) if request.output is not None else None
    with contextlib.ExitStack() as held:
        if output is not None:
            lock = runstate.OutputLock(output).acquire({"provider": provider_name, "action": request.action})
            held.callback(lock.release)
            if lock.recovered:
                on_event(LogEvent(level="warning", message=(
                    f"took over {output.name}'s lock from a run that ended without releasing it "
                    f"(mf pid {lock.recovered.get('pid')} on {lock.recovered.get('host')})")))
            if os.getuid() == 0:
                held.enter_context(runstate.handback_record(output, 0, 0))
                held.callback(runstate.hand_back, output, 0, 0)
                _give_to_job(output, uid, gid)
            mounts.append(_bind(output, str(OUTPUT_DIR), read_only=False))
        return _run_container(request, provider_name, spec, image, model_in_container, mounts, options, gpu_host,
                              uid, gid, output, on_event, lock if output is not None else None)


def _run_container(request: JobRequest, provider_name: str, spec: images.ImageSpec, image: str,
                   model_in_container: str, mounts: list[Any], options: dict[str, Any], gpu_host: bool,
                   uid: int, gid: int, output: Path | None, on_event: EventSink,
                   lock: runstate.OutputLock | None) -> dict[str, Any]:
    if request.action == "train" and request.dataset is not None:
        dataset = request.dataset.expanduser().resolve()
        mounts.append(_bind(dataset, f"{DATA_DIR}/{dataset.name}", read_only=True))
        options.update(dataset=f"{DATA_DIR}/{dataset.name}", resume=request.resume, overwrite=request.overwrite)

    job = JobSpec(
        provider=provider_name,
        action=request.action,  # type: ignore[arg-type]
        model=model_in_container,
        model_class=request.model_class,
        provider_config=request.provider_config,
        quantization_config=request.quantization_config,
        prompt=request.prompt,
        max_new_tokens=request.max_new_tokens,
        temperature=request.temperature,
        online=request.online,
        output_dir=str(OUTPUT_DIR) if output is not None else None,
        device_map="auto" if gpu_host else "cpu",
        options=options,
    )
    environment = {
        "HOME": "/tmp",  # nosec B108
        "HF_HOME": str(HF_HOME),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        # The host's token file is never read inside; a token comes in only as HF_TOKEN with --online.
        "HF_TOKEN_PATH": "/tmp/.no-hf-token",  # nosec B108
        "MF_IMAGE": image,
        "MF_LOCK_HASH": spec.lock_hash,
    }
    if not request.online:
        environment["HF_HUB_OFFLINE"] = "1"
    if os.environ.get("MF_DEBUG"):
        environment["MF_DEBUG"] = "1"
    gpus = request.gpus if request.gpus is not None else ("all" if gpu_host else None)
    if request.backend == "slurm" and request.slurm is not None and request.slurm.gpus:
        gpus = str(request.slurm.gpus)
    plan = JobPlan(
        image=image,
        image_reference=registry.verified_reference(image),
        command=[str(JOB_SPEC_PATH)],
        spec_json=job.to_json(),
        mounts=list(mounts),
        environment=environment,
        # the token is passed by name from mf's environment, so it is never written into a file or argv
        pass_environment=["HF_TOKEN"] if request.online and os.environ.get("HF_TOKEN") else [],
        user=f"{uid}:{gid}",
        network="bridge" if request.online else "none",
        tmpfs={"/tmp": "rw,nosuid,nodev,size=2g"},  # nosec B108
        pids_limit=PIDS_LIMIT,
        memory=request.memory,
        gpus=gpus if gpus != "none" else None,
        # what NVIDIA recommends for training in containers: pinned memory and deep stacks
        ulimits=[Ulimit("memlock", -1, -1), Ulimit("stack", 67108864, 67108864)] if gpus and gpus != "none" else [],
        labels=engine.project_labels("job", provider=provider_name, action=request.action,
                                     owner_pid=str(os.getpid()), host=socket.gethostname(),
                                     session=os.environ.get("MF_SESSION", "")),
        stop_grace=STOP_GRACE_SECONDS.get(request.action, DEFAULT_STOP_GRACE_SECONDS),
    )
    if request.backend == "slurm":
        return _run_on_slurm(plan, request, output, on_event)
    if request.backend == "kubernetes":
        return _follow_on_kubernetes(plan, request, on_event)
    for name in engine.remove_orphaned_jobs():
        on_event(LogEvent(level="warning", message=f"removed the orphaned job container {name} (its mf was killed)"))
    job_dir = Path(tempfile.mkdtemp(prefix="mf-job-"))
    try:
        os.chmod(job_dir, 0o755)  # nosec B103 # noqa: S103 - the job user (another uid) reads the spec; nothing secret
        spec_file = job_dir / "spec.json"
        spec_file.write_text(plan.spec_json, encoding="utf-8")
        os.chmod(spec_file, 0o644)
        plan.mounts.append(Mount(str(job_dir), str(JOB_DIR), True))
        with engine.job_container(plan.run_image, **plan.docker_create_kwargs()) as container:
            if lock is not None:
                lock.update(job=container.name)
            return _follow(container, image, on_event, plan.stop_grace)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _run_on_kubernetes(request: JobRequest, provider_name: str, on_event: EventSink) -> dict[str, Any]:
    """The job's inputs and outputs are PersistentVolumeClaims; the image comes by digest from the registry."""
    from .backends.kubernetes import parse_pvc

    def pvc_mount(uri: str, target: str, read_only: bool) -> Mount:
        parse_pvc(uri)  # one line for anything that is not pvc://CLAIM/PATH
        return Mount(source=uri, target=target, read_only=read_only)

    mounts: list[Mount] = []
    if request.model.startswith("pvc://"):
        name = request.model.rstrip("/").rsplit("/", 1)[-1]
        model_in_container = f"{MODEL_DIR}/{name}"
        mounts.append(pvc_mount(request.model, model_in_container, True))
    elif parse_hub_reference(request.model) is not None and request.online:
        model_in_container = request.model
    else:
        parse_pvc(request.model)
        model_in_container = request.model
    options: dict[str, Any] = dict(request.options)
    output: Path | None = None
    if request.action == "train":
        options["train"] = TrainConfig.parse(request.train).model_dump()
        if not request.pvc_dataset or not request.pvc_output:
            raise ConfigurationError("Training on Kubernetes needs --dataset and --output as pvc://CLAIM/PATH.",
                                     "Put them on PersistentVolumeClaims the job can mount.")
    if request.pvc_dataset:
        target = f"{DATA_DIR}/{request.pvc_dataset.rstrip('/').rsplit('/', 1)[-1]}"
        mounts.append(pvc_mount(request.pvc_dataset, target, True))
        options.update(dataset=target, resume=request.resume, overwrite=request.overwrite)
    if request.pvc_output:
        mounts.append(pvc_mount(request.pvc_output, str(OUTPUT_DIR), False))
        output = Path(OUTPUT_DIR)
    if request.pvc_hf_cache:
        mounts.append(pvc_mount(request.pvc_hf_cache, str(HF_HOME), not request.online))
    gpu_job = request.gpus not in (None, "none")
    spec = images.image_spec(provider_name, request.flavour, gpu_host=gpu_job)
    return _run_container(request, provider_name, spec, spec.tag, model_in_container, mounts, options, gpu_job,
                          UNPRIVILEGED_UID, UNPRIVILEGED_UID, output, on_event, None)


def _follow_on_kubernetes(plan: JobPlan, request: JobRequest, on_event: EventSink) -> dict[str, Any]:
    import secrets

    from .backends import kubernetes

    options = request.kubernetes or kubernetes.KubernetesOptions()
    plan.stop_on_stdin_eof = False  # the cluster owns the job's life; Ctrl-C deletes the Job
    plan.labels.pop("org.modelforge.owner-pid", None)
    plan.labels["org.modelforge.backend"] = "kubernetes"
    spec = images.image_spec(plan.labels["org.modelforge.provider"], request.flavour,
                             gpu_host=request.gpus not in (None, "none"))
    plan.image_reference = registry.digest_reference(spec, request.registry)
    name = kubernetes.job_name(plan, secrets.token_hex(3))
    if options.dry_run:
        return {"manifests": kubernetes.to_yaml(kubernetes.build_objects(plan, name, options)), "dry_run": True}
    events = _EventLines(on_event, plan.image)

    with _sigterm_as_interrupt():
        exit_code, oom = kubernetes.run(plan, name, options, events)
    if options.detach:
        return {"job": f"k8s-{options.namespace}/{name}", "backend": "kubernetes", "detached": True}
    return _outcome(events.result, events.error, exit_code, oom, "", plan.image)


def _run_on_slurm(plan: JobPlan, request: JobRequest, output: Path | None, on_event: EventSink) -> dict[str, Any]:
    """The same plan as a Slurm job: its spec folder on shared storage, its events read from the job's file."""
    from .backends import slurm

    options = request.slurm or slurm.SlurmOptions()
    plan.stop_on_stdin_eof = False  # Slurm owns the job's life: scancel stops it, not a closed stdin
    # no mf process owns the container (a detached job outlives mf): the local orphan reaper leaves it alone
    plan.labels.pop("org.modelforge.owner-pid", None)
    plan.labels["org.modelforge.backend"] = "slurm"
    folder = slurm.new_job_dir()
    plan.mounts.append(Mount(str(folder / "job"), str(JOB_DIR), True))
    events = _EventLines(on_event, plan.image)

    timings: dict[str, float] = {}
    with _sigterm_as_interrupt():
        job_id, exit_code = slurm.run(plan, folder, options, events, output, timings)
    if os.environ.get("MF_TIMINGS") and timings.get("running"):  # for `make bench`; the event stream stays the same
        split = {"sbatch": timings["submitted"] - timings["start"], "scheduling": timings["running"] - timings["submitted"],
                 "container_and_job": max(0.0, timings["first_event"] - timings["running"]),
                 "streaming_after_first_event": timings["end"] - max(timings["first_event"], timings["running"])}
        print("mf-timings " + json.dumps(split), file=sys.stderr)
    if options.detach:
        return {"job": f"slurm-{job_id}", "backend": "slurm", "folder": str(folder), "detached": True}
    stderr_log = folder / "stderr.log"
    stderr_tail = "\n".join(stderr_log.read_text(errors="replace").splitlines()[-15:]) if stderr_log.exists() else ""
    return _outcome(events.result, events.error, exit_code, False, stderr_tail, plan.image)


class _EventLines:
    """Decodes a job's stdout, line by line, into contract events (the same on every backend): each is
    shown as it comes; the result and the error are kept for the job's outcome."""

    def __init__(self, on_event: EventSink, image: str) -> None:
        self.on_event = on_event
        self.image = image
        self.result: dict[str, Any] | None = None
        self.error: ErrorEvent | None = None

    def __call__(self, line: str) -> None:
        try:
            event = decode_event(line)
        except ValueError:
            return  # not ours: the entrypoint keeps stdout for events, so this is rare noise
        if isinstance(event, ResultEvent):  # which build ran it: the provider, the flavour, the content tag
            event = event.model_copy(update={"image": self.image})
        self.on_event(event)
        if isinstance(event, ResultEvent):
            self.result = event_payload(event)
        elif isinstance(event, ErrorEvent):
            self.error = event


def _follow(container: Any, image: str, on_event: EventSink, grace: int) -> dict[str, Any]:
    events = _EventLines(on_event, image)
    with _sigterm_as_interrupt(), contextlib.ExitStack() as held:
        try:
            # Held until mf returns or dies: its end is the job's signal to stop (see providers.runtime).
            stdin = container.attach_socket(params={"stdin": 1, "stream": 1})
            held.callback(stdin.close)
            container.start()
            for line in _iter_lines(container.logs(stdout=True, stderr=False, stream=True, follow=True)):
                events(line)
            status = container.wait()
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                container.stop(timeout=grace)
            raise InterruptedJobError("Stopped: the job was interrupted and its container removed.",
                                      "Run the command again to start over.") from None
    exit_code = int(status.get("StatusCode", -1))
    try:
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        stderr_tail = container.logs(stdout=False, stderr=True, tail=15).decode("utf-8", errors="replace").strip()
    except DockerException:
        raise ContainerError(
            f"The job container {container.short_id} was removed from outside mf while it ran (exit {exit_code}).",
            "Run the command again, and leave its container alone until it ends.",
            exit_status=exit_code, image=image,
        ) from None
    return _outcome(events.result, events.error, exit_code, oom, stderr_tail, image)


def _outcome(result: dict[str, Any] | None, error: ErrorEvent | None, exit_code: int, oom: bool, stderr_tail: str,
             image: str) -> dict[str, Any]:
    """The job's result, or its error raised as the same one-line error on every backend."""
    if error is not None and not oom:
        exc = error_from_kind(error.kind, error.message, error.hint)
        exc.reported = True  # its error event has been shown already
        raise exc
    if exit_code == 0 and result is not None:
        return result
    if oom or exit_code == 137:
        raise OutOfMemoryError(
            "The job ran out of memory and was killed." if oom
            else "The job was killed (exit 137), most likely for lack of memory.",
            exit_status=exit_code, image=image, stderr_tail=stderr_tail,
        )
    if exit_code == 130:
        raise InterruptedJobError("Stopped: the job was interrupted.", "Run the command again to start over.")
    last = stderr_tail.splitlines()[-1] if stderr_tail else "no output"
    raise ContainerError(
        f"The job container exited with {exit_code} without a result: {last[:200]}",
        "Rerun with MF_DEBUG=1 to see the container's output.",
        exit_status=exit_code, image=image, stderr_tail=stderr_tail,
    )
