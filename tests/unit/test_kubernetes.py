"""The Kubernetes backend without a cluster (none can run on these machines): every manifest it makes is
validated offline against pinned Kubernetes schemas (kubernetes-validate --strict), checked against the
Pod Security Standards "restricted" profile field by field, and the submit / follow / cancel flow is run
against a fake of the client's API objects. tests/kubernetes/ runs real jobs when KUBECONFIG names a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client.exceptions import ApiException

from orchestrator import jobs
from orchestrator.backends import kubernetes as k8s
from orchestrator.plan import JobPlan, Mount, Ulimit
from providers.errors import ConfigurationError, EngineError, InterruptedJobError, ModelAccessError, OutOfMemoryError

DIGEST = "reg.example/team/modelforge/gguf@sha256:" + "b" * 64


def _plan(action: str = "validate", gpus: str | None = None, online: bool = False) -> JobPlan:
    mounts = [Mount("pvc://models/smollm2", "/models/smollm2", True), Mount("pvc://hf/cache", "/cache/huggingface",
                                                                            not online)]
    if action == "train":
        mounts += [Mount("pvc://data/d.jsonl", "/data/d.jsonl", True), Mount("pvc://runs/run1", "/output", False)]
    return JobPlan(
        image="modelforge/huggingface:cpu-0123456789ab", image_reference=DIGEST, command=["/job/spec.json"],
        spec_json='{"provider": "huggingface"}', mounts=mounts, environment={"HF_HUB_OFFLINE": "1"}, user="1000:1000",
        pass_environment=["HF_TOKEN"] if online else [], network="bridge" if online else "none",
        tmpfs={"/tmp": "rw,nosuid,nodev,size=2g"}, memory="8g", cpus=2, gpus=gpus,
        ulimits=[Ulimit("memlock", -1, -1)] if gpus else [],
        labels={"org.modelforge.kind": "job", "org.modelforge.provider": "huggingface",
                "org.modelforge.action": action}, stop_grace=120 if action == "train" else 10)


CASES = [pytest.param(action, gpus, online, id=f"{action}-{'gpu' if gpus else 'cpu'}-{'online' if online else 'offline'}")
         for action in ("validate", "load", "train") for gpus in (None, "1") for online in (False, True)]


@pytest.mark.parametrize(("action", "gpus", "online"), CASES)
@pytest.mark.parametrize("version", k8s.VALIDATED_VERSIONS)
def test_every_manifest_validates_strictly(action: str, gpus: str | None, online: bool, version: str) -> None:
    objects = k8s.to_dicts(k8s.build_objects(_plan(action, gpus, online), "mf-hf-train-abc123", k8s.KubernetesOptions()))
    assert [o["kind"] for o in objects] == ["ConfigMap", "Job"] + ([] if online else ["NetworkPolicy"])
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any unknown or malformed field


def _nodes_plan(nodes: int, gpus: str | None) -> JobPlan:
    plan = _plan("train", gpus)
    per_node = int(gpus) if gpus else 1
    plan.spec_json = ('{"provider": "huggingface", "options": {"distributed": '
                      f'{{"nproc_per_node": {per_node}, "nnodes": {nodes}}}}}}}')
    return plan


@pytest.mark.parametrize("nodes", [1, 2, 4])
@pytest.mark.parametrize("gpus", [None, "8"])
@pytest.mark.parametrize("version", k8s.VALIDATED_VERSIONS)
def test_a_multi_node_job_is_an_indexed_job_and_a_headless_service(nodes: int, gpus: str | None, version: str) -> None:
    """--nodes M: completions = parallelism = M, the completion index is MF_NODE_RANK, the rendezvous is
    index 0's DNS name through the headless Service, and the offline NetworkPolicy lets the pods reach each
    other and DNS only. Strictly valid, and still Pod Security "restricted"."""
    name = "mf-hf-train-abc123"
    objects = k8s.to_dicts(k8s.build_objects(_nodes_plan(nodes, gpus), name, k8s.KubernetesOptions()))
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    kinds = [o["kind"] for o in objects]
    job = objects[1]
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    if nodes == 1:
        assert kinds == ["ConfigMap", "Job", "NetworkPolicy"] and "completionMode" not in job["spec"]
        assert "MF_NODE_RANK" not in env and "subdomain" not in pod
        return
    assert kinds == ["ConfigMap", "Job", "Service", "NetworkPolicy"]
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"],
            job["spec"]["backoffLimit"]) == ("Indexed", nodes, nodes, 0)
    assert pod["subdomain"] == name
    assert env["MF_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    assert env["MF_RDZV_HEAD"]["value"] == f"{name}-0.{name}" and env["MF_RDZV_PORT"]["value"] == "29500"
    assert env["MF_LOCAL_ADDR"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    service = objects[2]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert service["selector"] == {"org.modelforge.job-name": name}
    egress = objects[3]["spec"]["egress"]
    assert egress[0]["to"] == [{"podSelector": {"matchLabels": {"org.modelforge.job-name": name}}}]
    assert {p["port"] for p in egress[1]["ports"]} == {53} and "ports" not in egress[0]
    if gpus:
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert_pod_security_restricted(job)


def assert_pod_security_restricted(job: dict[str, Any]) -> None:
    """The Pod Security Standards' "restricted" profile, field by field, and "baseline" under it."""
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    sc = container["securityContext"]
    # restricted: privilege escalation off, all capabilities dropped, non-root, seccomp RuntimeDefault
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000 and sc["runAsGroup"] == 1000
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # baseline: no host namespaces, ports, paths or privileged containers
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert "privileged" not in sc and not container.get("ports")
    assert all("hostPath" not in v for v in pod["volumes"])


@pytest.mark.parametrize(("action", "gpus", "online"), CASES)
def test_the_pod_meets_pod_security_restricted(action: str, gpus: str | None, online: bool) -> None:
    _, job, *policy = k8s.to_dicts(k8s.build_objects(_plan(action, gpus, online), "mf-x", k8s.KubernetesOptions()))
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert_pod_security_restricted(job)
    # and what the docker backend does besides
    assert sc["readOnlyRootFilesystem"] is True and pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == k8s.DEFAULT_TTL_SECONDS
    assert container["image"] == DIGEST
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "2Gi"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models/smollm2"]["readOnly"] is True and mounts["/models/smollm2"]["subPath"] == "smollm2"
    assert mounts["/cache/huggingface"]["readOnly"] is (not online)
    assert volumes["pvc-models"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    if action == "train":
        assert mounts["/output"]["readOnly"] is False
    limits = container["resources"]["limits"]
    assert limits["memory"] == "8Gi" and limits["cpu"] == "2"
    assert limits.get("nvidia.com/gpu") == gpus
    env = {e["name"]: e for e in container["env"]}
    if online:
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == k8s.TOKEN_SECRET and "value" not in env["HF_TOKEN"]
        assert policy == []
    else:
        assert "HF_TOKEN" not in env
        [deny] = policy
        assert deny["spec"] == {"podSelector": {"matchLabels": {"org.modelforge.job-name": "mf-x"}},
                                "policyTypes": ["Egress"], "egress": []}


def test_an_image_without_a_digest_is_refused() -> None:
    plan = _plan()
    plan.image_reference = None
    with pytest.raises(ConfigurationError, match="has no registry digest"):
        k8s.build_objects(plan, "mf-x", k8s.KubernetesOptions())


def test_a_local_path_is_refused_in_one_line(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--backend", "kubernetes", "-p", "gguf",
                           "validate", "--model", str(model)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"Error: {model} is not a PersistentVolumeClaim reference: a Kubernetes job reads and writes only volumes. "
        "Put the file on a PVC and pass pvc://CLAIM/PATH (a local path exists only on this machine)."]


# -- the flow, against a fake of the client's API objects ---------------------------------------------
class FakeCluster:
    def __init__(self, log: list[str], exit_code: int = 0, reason: str = "Completed",
                 fail_create: int | None = None, log_hangs: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.pods: list[Any] = []
        self._log, self._exit, self._reason, self._fail = log, exit_code, reason, fail_create
        self._hangs = log_hangs
        self.core = SimpleNamespace(
            create_namespaced_config_map=self._rec("create_config_map"),
            delete_namespaced_config_map=self._rec("delete_config_map"),
            create_namespaced_service=self._rec("create_service"), delete_namespaced_service=self._rec("delete_service"),
            list_namespaced_pod=self._list_pods, read_namespaced_pod_log=self._read_log,
            read_namespaced_pod=self._read_pod)
        self.batch = SimpleNamespace(create_namespaced_job=self._create_job, delete_namespaced_job=self._delete_job)
        self.net = SimpleNamespace(create_namespaced_network_policy=self._rec("create_network_policy"),
                                   delete_namespaced_network_policy=self._rec("delete_network_policy"))

    def _rec(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, kwargs.get("body", args[1] if len(args) > 1 else None)))
        return call

    def _create_job(self, namespace: str, job: Any) -> None:
        self.calls.append(("create_job", job))
        if self._fail:
            raise ApiException(status=self._fail, reason="Forbidden")
        state = SimpleNamespace(terminated=SimpleNamespace(exit_code=self._exit, reason=self._reason), waiting=None)
        self.pods = [SimpleNamespace(metadata=SimpleNamespace(name=f"{job.metadata.name}-pod"),
                                     status=SimpleNamespace(phase="Running",
                                                            container_statuses=[SimpleNamespace(state=state)]))]

    def _delete_job(self, name: str, namespace: str, body: Any = None) -> None:
        self.calls.append(("delete_job", body.propagation_policy))
        self.pods = []

    def _list_pods(self, namespace: str, label_selector: str) -> Any:
        self.calls.append(("list_pods", label_selector))
        return SimpleNamespace(items=self.pods)

    def _read_log(self, name: str, namespace: str, **kwargs: Any) -> Any:
        assert kwargs["follow"] is True
        if self._hangs:
            raise KeyboardInterrupt  # the user presses Ctrl-C while the log streams
        return [(line + "\n").encode() for line in self._log]

    def _read_pod(self, name: str, namespace: str) -> Any:
        return self.pods[0]


RESULT = '{"v": 1, "event": "result", "provider": "gguf", "action": "validate", "parameters": 1}'
ERROR = '{"v": 1, "event": "error", "kind": "model_access", "message": "m.gguf is truncated", "hint": "Download it."}'


def _run(cluster: FakeCluster, detach: bool = False) -> tuple[dict[str, Any], list[Any]]:
    """The plan through the same stages as every backend's (jobs.execute), on a fake cluster."""
    events: list[Any] = []
    backend = k8s.KubernetesBackend(k8s.KubernetesOptions(), cluster=cluster)
    return jobs.execute(backend, _plan(), None, events.append, detach=detach), events


def test_submit_then_follow_the_log_in_order() -> None:
    cluster = FakeCluster(['{"v": 1, "event": "stage", "name": "validate", "message": ""}', RESULT])
    result, events = _run(cluster)
    assert [c[0] for c in cluster.calls][:3] == ["create_config_map", "create_network_policy", "create_job"]
    assert [e.event for e in events] == ["stage", "result"]
    assert result["parameters"] == 1 and result["image"] == "modelforge/huggingface:cpu-0123456789ab"


def test_the_jobs_error_and_an_oom_kill_come_back() -> None:
    with pytest.raises(ModelAccessError, match="m.gguf is truncated") as info:
        _run(FakeCluster([ERROR], 3, "Error"))
    assert info.value.reported  # shown once, as the event it came as
    with pytest.raises(OutOfMemoryError):
        _run(FakeCluster([], 137, "OOMKilled"))


def test_a_refused_create_is_one_line_about_rbac() -> None:
    with pytest.raises(EngineError) as info:
        _run(FakeCluster([], fail_create=403))
    assert info.value.message.startswith("The cluster refused to create the job mf-huggingface-validate-")
    assert info.value.message.endswith(" (403 Forbidden).")
    assert "RBAC" in info.value.hint


def test_ctrl_c_deletes_the_job_in_the_foreground_and_waits_for_its_pod() -> None:
    cluster = FakeCluster([], log_hangs=True)
    with pytest.raises(InterruptedJobError, match="mf-huggingface-validate-[0-9a-f]+ and its pod were deleted"):
        _run(cluster)
    names = [c[0] for c in cluster.calls]
    assert ("delete_job", "Foreground") in cluster.calls
    assert names.index("delete_job") < names.index("delete_config_map") < names.index("delete_network_policy")
    assert names[-1] == "list_pods" and cluster.pods == []


def test_detach_submits_and_returns() -> None:
    cluster = FakeCluster([RESULT])
    result, events = _run(cluster, detach=True)
    assert result["job"].startswith("k8s-default/mf-huggingface-validate-") and result["detached"] is True
    assert "list_pods" not in [c[0] for c in cluster.calls] and events == []
