"""The Kubernetes backend: the same plan as a ``batch/v1`` Job, built with the official client's models.

Objects: a ConfigMap with the job spec, the Job (its pod runs the image **by digest**, hardened to the
Pod Security Standards "restricted" profile), and, for an offline job (the default), a NetworkPolicy that
denies the pod all egress (it needs a CNI that enforces NetworkPolicy: Calico, Cilium, ...). Data comes
from PersistentVolumeClaims: ``pvc://CLAIM/PATH`` for the model, dataset, output and HF cache.

How each plan field is carried (``tests/unit/test_plan.py`` checks this table against the plan):
user -> runAsUser/runAsGroup; network -> the NetworkPolicy; cap_drop -> capabilities.drop;
security_opt no-new-privileges -> allowPrivilegeEscalation: false; read_only -> readOnlyRootFilesystem;
tmpfs -> an emptyDir (sizeLimit); shm_size -> a memory-backed emptyDir at /dev/shm; memory, cpus, gpus ->
resources (nvidia.com/gpu); labels -> the Job's and pod's labels; stop_grace -> terminationGracePeriodSeconds;
environment -> env; pass_environment -> env from the Secret ``mf-hf-token`` (``kubectl create secret generic
mf-hf-token --from-literal=HF_TOKEN=...``), never the value. Set per node, not per pod, and so recorded as
annotations only: pids_limit (the kubelet's podPidsLimit) and ulimits (the container runtime's defaults).
init: the runtime handles SIGTERM itself as PID 1. stop_on_stdin_eof: off; the Job's life is the cluster's.

A training job on several nodes (``--nodes M``) is an Indexed Job (``completionMode: Indexed``, ``completions =
parallelism = M``, ``backoffLimit: 0``: one failed pod fails the Job) and a headless Service of the same name:
the pod's completion index is its node rank, and the rendezvous host is index 0's DNS name,
``NAME-0.NAME``. The offline NetworkPolicy then lets the pods reach each other and the cluster's DNS, and
nothing else. No operator is needed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from providers.errors import ConfigurationError, ContainerError, EngineError, InterruptedJobError

from ..outcome import Exit
from ..plan import UNPRIVILEGED_UID, Inputs, JobPlan, Mount
from .base import Backend, Lines

if TYPE_CHECKING:
    from ..images import Progress
    from ..jobs import JobRequest
    from ..recipes import ImageSpec

PVC = re.compile(r"^pvc://([a-z0-9]([-a-z0-9]*[a-z0-9])?)(/.*)?$")
TOKEN_SECRET = "mf-hf-token"  # noqa: S105 - the Secret's name, not a secret
#: the Kubernetes versions the manifests are validated against (kubernetes-validate --strict)
VALIDATED_VERSIONS = ("1.30.0", "1.37.0")
DEFAULT_TTL_SECONDS = 3600
#: torchrun's c10d rendezvous port on the first pod of a multi-node job
RENDEZVOUS_PORT = 29500
#: the pod's completion index in an Indexed Job (its node rank)
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
Sink = Callable[[str], None]


@dataclass
class KubernetesOptions:
    namespace: str = "default"
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int = DEFAULT_TTL_SECONDS
    dry_run: bool = False
    #: the dataset, output folder and HF cache as pvc://CLAIM/PATH (the model's pvc:// is the request's)
    dataset: str | None = None
    output: str | None = None
    hf_cache: str | None = None


def parse_pvc(uri: str) -> tuple[str, str]:
    """``pvc://claim/sub/path`` -> (claim, sub/path)."""
    match = PVC.match(uri)
    if not match:
        raise ConfigurationError(
            f"{uri} is not a PersistentVolumeClaim reference: a Kubernetes job reads and writes only volumes.",
            "Put the file on a PVC and pass pvc://CLAIM/PATH (a local path exists only on this machine).",
        )
    return match.group(1), (match.group(3) or "/").strip("/")


def _quantity(docker_size: str) -> str:
    match = re.match(r"^(\d+(?:\.\d+)?)([bkmg]?)$", docker_size.lower())
    if not match:
        return docker_size
    number, unit = match.group(1), match.group(2)
    return number if unit in ("", "b") else f"{number}{unit.upper()}i"


def _label_value(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")
    return cleaned


def job_name(plan: JobPlan, suffix: str) -> str:
    provider = plan.labels.get("org.modelforge.provider", "job")
    action = plan.labels.get("org.modelforge.action", "run")
    return re.sub(r"[^a-z0-9-]", "-", f"mf-{provider}-{action}-{suffix}".lower())[:52].strip("-")


def build_objects(plan: JobPlan, name: str, options: KubernetesOptions, spec_path: str = "/job/spec.json") -> list[Any]:
    """The ConfigMap, the Job and (offline) the NetworkPolicy, as kubernetes client models."""
    from kubernetes import client as k8s

    if not plan.image_reference or "@sha256:" not in plan.image_reference:
        raise ConfigurationError(
            f"{plan.image} has no registry digest: a cluster pulls images by digest from a registry.",
            "Push it (mf images push) and pull or verify it here, so the signed release names its digest.",
        )
    uid, gid = (int(part) for part in plan.user.split(":"))
    labels = {key: _label_value(value) for key, value in plan.labels.items() if _label_value(value)}
    labels["org.modelforge.job-name"] = name
    annotations = {"org.modelforge/pids-limit": str(plan.pids_limit),
                   "org.modelforge/ulimits": ",".join(f"{u.name}={u.soft}:{u.hard}" for u in plan.ulimits) or "-",
                   "org.modelforge/image-tag": plan.image}

    # the plan's tmpfs mounts become emptyDirs of the same size; /dev/shm a memory-backed one
    tmp_path, tmp_options = next(iter(plan.tmpfs.items()), ("/tmp", "size=1g"))  # nosec B108
    tmp_size = re.search(r"size=([0-9.]+[bkmg]?)", tmp_options)
    volumes = [
        k8s.V1Volume(name="job-spec", config_map=k8s.V1ConfigMapVolumeSource(name=f"{name}-spec")),
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(
            size_limit=_quantity(tmp_size.group(1)) if tmp_size else "1Gi")),
        k8s.V1Volume(name="shm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory",
                                                                     size_limit=_quantity(plan.shm_size))),
    ]
    mounts = [k8s.V1VolumeMount(name="job-spec", mount_path=spec_path.rsplit("/", 1)[0], read_only=True),
              k8s.V1VolumeMount(name="tmp", mount_path=tmp_path),
              k8s.V1VolumeMount(name="shm", mount_path="/dev/shm")]  # nosec B108 - the pod's own emptyDir
    claims: dict[str, bool] = {}
    for mount in plan.mounts:
        claim, sub = parse_pvc(mount.source)
        claims[claim] = claims.get(claim, True) and mount.read_only
        mounts.append(k8s.V1VolumeMount(name=f"pvc-{claim}"[:63], mount_path=mount.target, sub_path=sub or None,
                                        read_only=mount.read_only))
    volumes += [k8s.V1Volume(name=f"pvc-{claim}"[:63], persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
        claim_name=claim, read_only=read_only)) for claim, read_only in claims.items()]

    env = [k8s.V1EnvVar(name=key, value=value) for key, value in sorted(plan.environment.items())]
    env += [k8s.V1EnvVar(name=var, value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(
        name=TOKEN_SECRET, key=var, optional=True))) for var in plan.pass_environment]
    nodes = int(((json.loads(plan.spec_json).get("options") or {}).get("distributed") or {}).get("nnodes", 1))
    if nodes > 1:  # each pod's node rank, the rendezvous at index 0, this pod's address (see the docstring)
        env += [
            k8s.V1EnvVar(name="MF_NODE_RANK", value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(
                field_path=f"metadata.annotations['{INDEX_ANNOTATION}']"))),
            k8s.V1EnvVar(name="MF_RDZV_HEAD", value=f"{name}-0.{name}"),
            k8s.V1EnvVar(name="MF_RDZV_PORT", value=str(RENDEZVOUS_PORT)),
            k8s.V1EnvVar(name="MF_RDZV_ID", value=name),
            k8s.V1EnvVar(name="MF_LOCAL_ADDR", value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(
                field_path="status.podIP"))),
        ]
    limits: dict[str, str] = {}
    if plan.memory:
        limits["memory"] = _quantity(plan.memory)
    if plan.cpus:
        limits["cpu"] = f"{plan.cpus:g}"
    if plan.gpus:
        limits["nvidia.com/gpu"] = plan.gpus if plan.gpus.isdigit() else "1"
    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    container = k8s.V1Container(
        name="job", image=plan.image_reference, args=[spec_path], env=env, volume_mounts=mounts,
        image_pull_policy="IfNotPresent",
        resources=k8s.V1ResourceRequirements(limits=limits or None, requests=dict(limits) or None),
        security_context=k8s.V1SecurityContext(
            allow_privilege_escalation="no-new-privileges" not in plan.security_opt,
            capabilities=k8s.V1Capabilities(drop=list(plan.cap_drop)),
            read_only_root_filesystem=plan.read_only, run_as_non_root=True, run_as_user=uid, run_as_group=gid,
            seccomp_profile=seccomp),
    )
    pod = k8s.V1PodSpec(
        restart_policy="Never", automount_service_account_token=False, containers=[container], volumes=volumes,
        termination_grace_period_seconds=plan.stop_grace, subdomain=name if nodes > 1 else None,
        security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=uid, run_as_group=gid,
                                                  fs_group=gid, seccomp_profile=seccomp),
    )
    job = k8s.V1Job(
        api_version="batch/v1", kind="Job",
        metadata=k8s.V1ObjectMeta(name=name, namespace=options.namespace, labels=labels, annotations=annotations),
        spec=k8s.V1JobSpec(
            backoff_limit=0, active_deadline_seconds=options.active_deadline_seconds,
            completion_mode="Indexed" if nodes > 1 else None, completions=nodes if nodes > 1 else None,
            parallelism=nodes if nodes > 1 else None,
            ttl_seconds_after_finished=options.ttl_seconds_after_finished,
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod)),
    )
    config_map = k8s.V1ConfigMap(
        api_version="v1", kind="ConfigMap",
        metadata=k8s.V1ObjectMeta(name=f"{name}-spec", namespace=options.namespace, labels=labels),
        data={spec_path.rsplit("/", 1)[1]: plan.spec_json})
    objects: list[Any] = [config_map, job]
    selector = {"org.modelforge.job-name": name}
    if nodes > 1:  # the pods' DNS names, NAME-INDEX.NAME, ready or not (the rendezvous comes before readiness)
        objects.append(k8s.V1Service(
            api_version="v1", kind="Service",
            metadata=k8s.V1ObjectMeta(name=name, namespace=options.namespace, labels=labels),
            spec=k8s.V1ServiceSpec(cluster_ip="None", selector=selector, publish_not_ready_addresses=True,
                                   ports=[k8s.V1ServicePort(name="rendezvous", port=RENDEZVOUS_PORT)])))
    if plan.network == "none":
        egress = []
        if nodes > 1:  # the job's own pods (rendezvous, gloo/NCCL) and the cluster's DNS, nothing else
            egress = [k8s.V1NetworkPolicyEgressRule(to=[k8s.V1NetworkPolicyPeer(
                          pod_selector=k8s.V1LabelSelector(match_labels=selector))]),
                      k8s.V1NetworkPolicyEgressRule(
                          to=[k8s.V1NetworkPolicyPeer(namespace_selector=k8s.V1LabelSelector(
                              match_labels={"kubernetes.io/metadata.name": "kube-system"}))],
                          ports=[k8s.V1NetworkPolicyPort(protocol=proto, port=53) for proto in ("UDP", "TCP")])]
        objects.append(k8s.V1NetworkPolicy(
            api_version="networking.k8s.io/v1", kind="NetworkPolicy",
            metadata=k8s.V1ObjectMeta(name=f"{name}-no-egress", namespace=options.namespace, labels=labels),
            spec=k8s.V1NetworkPolicySpec(pod_selector=k8s.V1LabelSelector(match_labels=selector),
                                         policy_types=["Egress"], egress=egress)))
    return objects


def to_dicts(objects: list[Any]) -> list[dict[str, Any]]:
    from kubernetes.client import ApiClient

    return [ApiClient().sanitize_for_serialization(obj) for obj in objects]


def to_yaml(objects: list[Any]) -> str:
    import yaml

    return yaml.safe_dump_all(to_dicts(objects), sort_keys=False)


# -- submitting and following -----------------------------------------------------------------------
class Cluster:
    """The calls the backend makes, on the official client (kubeconfig credentials). Tests pass a fake."""

    def __init__(self) -> None:
        from kubernetes import client, config

        try:
            config.load_kube_config()
        except Exception as exc:  # no kubeconfig, or a broken one
            raise EngineError(f"Cannot load a kubeconfig ({str(exc).splitlines()[0][:160]}).",
                              "Set KUBECONFIG to your cluster's config (or ~/.kube/config).") from None
        self.core, self.batch, self.net = client.CoreV1Api(), client.BatchV1Api(), client.NetworkingV1Api()


def _api_error(exc: Any, what: str) -> Exception:
    status = getattr(exc, "status", None)
    reason = " ".join(str(getattr(exc, "reason", "") or exc).split())[:160]
    if status in (401, 403):
        return EngineError(f"The cluster refused to {what} ({status} {reason}).",
                           "Check your kubeconfig's credentials and your RBAC rights in the namespace.")
    if status == 404:
        return ConfigurationError(f"Cannot {what}: not found ({reason}).", "Check the namespace (--namespace).")
    return EngineError(f"Cannot {what} ({status or ''} {reason}).".replace("( ", "("),
                       "Check that the cluster's API is reachable (`mf doctor`).")


def submit(cluster: Any, objects: list[Any], namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    config_map, job, *rest = objects
    try:
        cluster.core.create_namespaced_config_map(namespace, config_map)
        for item in rest:  # the Service of a multi-node job, the NetworkPolicy of an offline one
            create = (cluster.core.create_namespaced_service if item.kind == "Service"
                      else cluster.net.create_namespaced_network_policy)
            create(namespace, item)
        cluster.batch.create_namespaced_job(namespace, job)
    except ApiException as exc:
        raise _api_error(exc, f"create the job {job.metadata.name}") from None


def delete(cluster: Any, name: str, namespace: str, wait_seconds: float = 60) -> None:
    """Delete the Job (foreground: its pods go first) and its ConfigMap, Service and NetworkPolicy; wait for
    the pods."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    for call, target in ((cluster.batch.delete_namespaced_job, name),
                         (cluster.core.delete_namespaced_config_map, f"{name}-spec"),
                         (cluster.core.delete_namespaced_service, name),
                         (cluster.net.delete_namespaced_network_policy, f"{name}-no-egress")):
        try:
            call(target, namespace, body=k8s.V1DeleteOptions(propagation_policy="Foreground"))
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(exc, f"delete {target}") from None
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"org.modelforge.job-name={name}").items
        if not pods:
            return
        time.sleep(0.5)


def _pod(cluster: Any, name: str, namespace: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"org.modelforge.job-name={name}").items
        for pod in pods:
            index = (getattr(pod.metadata, "annotations", None) or {}).get(INDEX_ANNOTATION, "0")
            if index != "0":  # a multi-node job's events come from its first pod
                continue
            if pod.status.phase in ("Running", "Succeeded", "Failed"):
                return pod
            waiting = [s.state.waiting for s in (pod.status.container_statuses or []) if s.state and s.state.waiting]
            for state in waiting:
                if state.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"):
                    raise ContainerError(f"The job's pod cannot start: {state.reason}: {(state.message or '')[:160]}",
                                         "Check the image reference and the registry credentials of the namespace.")
        time.sleep(0.5)
    raise ContainerError(f"The job's pod did not start within {timeout:.0f} s.",
                         "Check the cluster's capacity (kubectl describe job) or raise the deadline.")


def _lines(stream: Any) -> Iterator[str]:
    pending = b""
    for chunk in stream.stream(amt=4096) if hasattr(stream, "stream") else stream:
        pending += chunk if isinstance(chunk, bytes) else chunk.encode()
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            if raw.strip():
                yield raw.decode("utf-8", errors="replace")
    if pending.strip():
        yield pending.decode("utf-8", errors="replace")


def follow(cluster: Any, name: str, namespace: str, on_line: Sink, start_timeout: float = 600) -> tuple[int, bool]:
    """Stream the pod's log lines; return (exit code, OOM-killed) once its container has terminated."""
    pod = _pod(cluster, name, namespace, start_timeout)
    stream = cluster.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="job", follow=True,
                                                  _preload_content=False)
    for line in _lines(stream):
        on_line(line)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = cluster.core.read_namespaced_pod(pod.metadata.name, namespace)
        for status in current.status.container_statuses or []:
            terminated = status.state.terminated if status.state else None
            if terminated is not None:
                return int(terminated.exit_code), terminated.reason == "OOMKilled"
        time.sleep(0.5)
    raise ContainerError(f"The pod of {name} stopped logging but did not terminate.", "Check it with kubectl.")


class KubernetesBackend(Backend):
    """The job's inputs and outputs are PersistentVolumeClaims; the image comes by digest from the registry.
    Job ids are ``k8s-NAMESPACE/NAME``."""

    name = "kubernetes"
    options_type = KubernetesOptions

    def __init__(self, options: KubernetesOptions | None = None, cluster: Any = None) -> None:
        import importlib.util

        if cluster is None and importlib.util.find_spec("kubernetes") is None:
            raise ConfigurationError("The Kubernetes backend needs the official kubernetes client, which is not "
                                     "installed beside mf.", "pip install 'modelforge[kubernetes]'")
        super().__init__(options)
        self._cluster = cluster  # the official client's APIs, made when first needed (tests pass a fake)
        self._grace = 10

    @property
    def prefix(self) -> str:
        return "k8s-"

    @property
    def cluster(self) -> Any:
        if self._cluster is None:
            self._cluster = Cluster()
        return self._cluster

    def _split(self, job: str) -> tuple[str, str]:
        namespace, _, name = job.removeprefix(self.prefix).rpartition("/")
        return namespace or self.options.namespace, name

    def inputs(self, request: JobRequest) -> Inputs:
        from providers.common.hub import parse_hub_reference
        from providers.contract import DATA_DIR, HF_HOME, MODEL_DIR, OUTPUT_DIR
        from providers.runtime.train_config import TrainConfig

        def pvc_mount(uri: str, target: str, read_only: bool) -> Mount:
            parse_pvc(uri)  # one line for anything that is not pvc://CLAIM/PATH
            return Mount(source=uri, target=target, read_only=read_only)

        options = self.options
        inputs = Inputs(model=request.model, options=dict(request.options), has_output=bool(options.output))
        if request.model.startswith("pvc://"):
            inputs.model = f"{MODEL_DIR}/{request.model.rstrip('/').rsplit('/', 1)[-1]}"
            inputs.mounts.append(pvc_mount(request.model, inputs.model, True))
        elif not (parse_hub_reference(request.model) is not None and request.online):
            parse_pvc(request.model)
        if request.action == "train":
            from ..checks import check_training_fits

            config = TrainConfig.parse(request.train)
            check_training_fits(request, config)  # the provider's tasks; the model's fit is checked in the job
            inputs.options["train"] = config.model_dump()
            from ..checks import distributed_options

            inputs.options.update(distributed_options(request))
            if not options.dataset or not options.output:
                raise ConfigurationError("Training on Kubernetes needs --dataset and --output as pvc://CLAIM/PATH.",
                                         "Put them on PersistentVolumeClaims the job can mount.")
        if options.dataset:
            target = f"{DATA_DIR}/{options.dataset.rstrip('/').rsplit('/', 1)[-1]}"
            inputs.mounts.append(pvc_mount(options.dataset, target, True))
            inputs.options.update(dataset=target, resume=request.resume, overwrite=request.overwrite)
        if options.output:
            inputs.mounts.append(pvc_mount(options.output, str(OUTPUT_DIR), False))
        if options.hf_cache:
            inputs.mounts.append(pvc_mount(options.hf_cache, str(HF_HOME), not request.online))
        return inputs

    def gpu_host(self, request: JobRequest) -> bool:
        return request.gpus not in (None, "none")

    def image(self, spec: ImageSpec, request: JobRequest, progress: Progress,
              on_layer: Callable[[dict[str, Any]], None]) -> tuple[str, str | None]:
        from .. import registry

        return spec.tag, registry.digest_reference(spec, request.registry)

    def user(self) -> tuple[int, int]:
        return UNPRIVILEGED_UID, UNPRIVILEGED_UID

    def prepare(self, plan: JobPlan, detach: bool) -> JobPlan:
        if plan.egress:
            # A NetworkPolicy selects pods and ports, not host names, and a sidecar proxy shares the pod's network
            # with the job: nothing in plain Kubernetes keeps the job from bypassing it. Refused, not pretended.
            raise ConfigurationError(
                f"Kubernetes cannot hold this job to {', '.join(plan.egress[:2])}{', ...' if len(plan.egress) > 2 else ''}: "
                "a NetworkPolicy allows ports and addresses, not host names (that needs an FQDN-aware CNI such as "
                "Cilium's toFQDNs), and a proxy sidecar shares the job's network.",
                "Run it with --backend docker or slurm (a proxy on a job with no network), or, with --online, "
                "--network open to give the pod the cluster's egress.")
        if plan.secrets:
            raise ConfigurationError(
                f"--secret ({', '.join(sorted(plan.secrets))}) is for Docker jobs; on Kubernetes a job's secrets are "
                "Kubernetes Secrets.", "Create the Secret with kubectl and run the job with --backend docker, or "
                "leave --secret out (HF_TOKEN comes from the Secret mf-hf-token).")
        plan.stop_on_stdin_eof = False  # the cluster owns the job's life; Ctrl-C deletes the Job
        plan.labels.pop("org.modelforge.owner-pid", None)
        plan.labels["org.modelforge.backend"] = "kubernetes"
        return plan

    def _name(self, plan: JobPlan) -> str:
        import secrets

        return job_name(plan, secrets.token_hex(3))

    def dry_run(self, plan: JobPlan) -> dict[str, Any] | None:
        if not self.options.dry_run:
            return None
        return {"manifests": to_yaml(build_objects(plan, self._name(plan), self.options)), "dry_run": True}

    def submit(self, plan: JobPlan, output: Any) -> str:
        name = self._name(plan)
        objects = build_objects(plan, name, self.options)
        self._grace = plan.stop_grace
        submit(self.cluster, objects, self.options.namespace)
        return f"{self.prefix}{self.options.namespace}/{name}"

    def follow(self, job: str, on_line: Lines) -> Exit:
        namespace, name = self._split(job)
        code, oom = follow(self.cluster, name, namespace, on_line)
        return Exit(code, oom, "")

    def cancel(self, job: str, wait: bool = False) -> None:
        namespace, name = self._split(job)
        delete(self.cluster, name, namespace, wait_seconds=self._grace + 30 if wait else 0)

    def interrupted(self, job: str) -> InterruptedJobError:
        return InterruptedJobError(f"Stopped: the Kubernetes job {self._split(job)[1]} and its pod were deleted.",
                                   "Run the command again to start over.")
