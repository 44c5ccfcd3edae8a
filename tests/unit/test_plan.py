"""Every field of a JobPlan reaches every backend: the docker backend's engine arguments, the Slurm
backend's `docker run` line and the Kubernetes backend's Job. A field added to the plan without a check
here fails the first test."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.backends import docker
from orchestrator.plan import JobPlan, Mount, Ulimit

PLAN = JobPlan(
    image="modelforge/gguf:cpu-0123456789ab",
    image_reference="reg.example/team/modelforge/gguf@sha256:" + "a" * 64,
    command=["/job/spec.json"],
    spec_json='{"provider": "gguf"}',
    mounts=[Mount("/srv/models/m.gguf", "/models/m.gguf", True), Mount("/srv/out", "/output", False)],
    environment={"HF_HUB_OFFLINE": "1", "MF_IMAGE": "x"},
    user="4242:4243",
    pass_environment=["HF_TOKEN"],
    network="none",
    init=True,
    cap_drop=["ALL"],
    security_opt=["no-new-privileges"],
    read_only=True,
    tmpfs={"/tmp": "rw,nosuid,nodev,size=2g"},
    pids_limit=777,
    shm_size="3g",
    ulimits=[Ulimit("memlock", -1, -1)],
    memory="5g",
    cpus=3,
    gpus="2",
    labels={"org.modelforge.kind": "job"},
    stop_grace=99,
    stop_on_stdin_eof=True,
    egress=["api.example.com:443"],
    secrets={"API_KEY": "env:API_KEY"},
)

Check = Callable[[dict[str, Any], str], bool]

#: field -> (carried by the docker backend's create kwargs, carried by the Slurm backend's docker run line)
CHECKS: dict[str, tuple[Check, Check]] = {
    "image": (lambda k, c: True, lambda k, c: True),  # run_image: the digest reference wins when there is one
    "image_reference": (lambda k, c: True, lambda k, c: f" {PLAN.image_reference} /job/spec.json" in c),
    "command": (lambda k, c: k["command"] == ["/job/spec.json"], lambda k, c: c.endswith(" /job/spec.json")),
    "spec_json": (lambda k, c: True, lambda k, c: True),  # written to the spec mount's folder by each backend
    "mounts": (lambda k, c: [(m["Source"], m["Target"], m["ReadOnly"]) for m in k["mounts"]] ==
               [("/srv/models/m.gguf", "/models/m.gguf", True), ("/srv/out", "/output", False)],
               lambda k, c: "source=/srv/models/m.gguf,target=/models/m.gguf,readonly" in c
               and "source=/srv/out,target=/output " in c),
    "environment": (lambda k, c: k["environment"]["HF_HUB_OFFLINE"] == "1", lambda k, c: "--env HF_HUB_OFFLINE=1" in c),
    "user": (lambda k, c: k["user"] == "4242:4243", lambda k, c: "--user 4242:4243" in c),
    "pass_environment": (lambda k, c: k["environment"].get("HF_TOKEN") == "hf_secret",
                         lambda k, c: "--env=HF_TOKEN " in c and "hf_secret" not in c),
    "network": (lambda k, c: k["network_mode"] == "none", lambda k, c: "--network none" in c),
    "init": (lambda k, c: k["init"] is True, lambda k, c: " --init " in c),
    "cap_drop": (lambda k, c: k["cap_drop"] == ["ALL"], lambda k, c: "--cap-drop=ALL" in c),
    "security_opt": (lambda k, c: k["security_opt"] == ["no-new-privileges"],
                     lambda k, c: "--security-opt=no-new-privileges" in c),
    "read_only": (lambda k, c: k["read_only"] is True, lambda k, c: " --read-only " in c),
    "tmpfs": (lambda k, c: k["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=2g"},
              lambda k, c: "--tmpfs=/tmp:rw,nosuid,nodev,size=2g" in c),
    "pids_limit": (lambda k, c: k["pids_limit"] == 777, lambda k, c: "--pids-limit 777" in c),
    "shm_size": (lambda k, c: k["shm_size"] == "3g", lambda k, c: "--shm-size 3g" in c),
    "ulimits": (lambda k, c: [(u["Name"], u["Soft"], u["Hard"]) for u in k["ulimits"]] == [("memlock", -1, -1)],
                lambda k, c: "--ulimit=memlock=-1:-1" in c),
    "memory": (lambda k, c: k["mem_limit"] == k["memswap_limit"] == "5g",
               lambda k, c: "--memory 5g --memory-swap 5g" in c),
    "cpus": (lambda k, c: k["nano_cpus"] == 3_000_000_000, lambda k, c: "--cpus 3" in c),
    "gpus": (lambda k, c: k["device_requests"][0]["Count"] == 2,
             lambda k, c: '--gpus "device=${CUDA_VISIBLE_DEVICES}"' in c),
    "labels": (lambda k, c: k["labels"] == {"org.modelforge.kind": "job"},
               lambda k, c: "--label org.modelforge.kind=job" in c),
    "stop_grace": (lambda k, c: True, lambda k, c: "--stop-timeout 99" in c),  # docker: mf stops with this timeout
    "stop_on_stdin_eof": (lambda k, c: k["stdin_open"] is True and k["detach"] is False
                          and k["environment"]["MF_STOP_ON_STDIN_EOF"] == "1",
                          lambda k, c: "--interactive" in c and "MF_STOP_ON_STDIN_EOF=1" in c),
    # the proxy is started beside the container (DockerBackend.submit, the Slurm script's egress lines): the job
    # itself keeps no network (tests/docker/test_egress.py runs both for real)
    "egress": (lambda k, c: k["network_mode"] == "none", lambda k, c: "--network none" in c),
    # the value is read when the job starts and mounted as a file; neither backend's arguments ever hold it
    # (the Slurm backend refuses secrets: test_slurm_and_kubernetes_refuse_what_they_cannot_hold)
    "secrets": (lambda k, c: "API_KEY" not in str(k["environment"]), lambda k, c: "API_KEY" not in c),
}


def test_every_plan_field_has_a_check() -> None:
    assert {f.name for f in dataclasses.fields(JobPlan)} == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_each_backend_carries_the_field(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    kwargs = docker.create_kwargs(PLAN)
    line = docker.run_command(PLAN, '"$name"', gpus_from_allocation=True)
    docker_ok, slurm_ok = CHECKS[name]
    assert docker_ok(kwargs, line), f"the docker backend drops {name}"
    assert slurm_ok(kwargs, line), f"the Slurm backend drops {name}: {line}"


def test_the_secret_is_passed_by_name_only() -> None:
    line = docker.run_command(PLAN, '"$name"')
    assert "--env=HF_TOKEN" in line and "HF_TOKEN=" not in line


# -- the Kubernetes backend: the same walk over the Job it makes ----------------------------------------
K8S_PLAN = dataclasses.replace(PLAN, mounts=[Mount("pvc://models/m.gguf", "/models/m.gguf", True),
                                             Mount("pvc://runs/run1", "/output", False)])


def _k8s() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    from orchestrator.backends import kubernetes as k8s

    config_map, job, *rest = k8s.to_dicts(k8s.build_objects(K8S_PLAN, "mf-x", k8s.KubernetesOptions()))
    return config_map, job, rest


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


K8sCheck = Callable[[dict[str, Any], dict[str, Any], list[dict[str, Any]]], bool]
#: field -> how the Job carries it (node-level settings are recorded as annotations: see backends/kubernetes.py)
K8S_CHECKS: dict[str, K8sCheck] = {
    "image": lambda cm, job, rest: job["metadata"]["annotations"]["org.modelforge/image-tag"] == PLAN.image,
    "image_reference": lambda cm, job, rest: _container(job)["image"] == PLAN.image_reference,
    "command": lambda cm, job, rest: _container(job)["args"] == ["/job/spec.json"],
    "spec_json": lambda cm, job, rest: cm["data"]["spec.json"] == PLAN.spec_json,
    "mounts": lambda cm, job, rest: {(m["mountPath"], m.get("subPath"), m.get("readOnly"))
                                     for m in _container(job)["volumeMounts"]} >= {("/models/m.gguf", "m.gguf", True),
                                                                                     ("/output", "run1", False)},
    "environment": lambda cm, job, rest: {"name": "HF_HUB_OFFLINE", "value": "1"} in _container(job)["env"],
    "user": lambda cm, job, rest: (_container(job)["securityContext"]["runAsUser"],
                                   _container(job)["securityContext"]["runAsGroup"]) == (4242, 4243),
    "pass_environment": lambda cm, job, rest: any(e["name"] == "HF_TOKEN" and "valueFrom" in e
                                                  for e in _container(job)["env"]),
    "network": lambda cm, job, rest: [r["kind"] for r in rest] == ["NetworkPolicy"],
    "init": lambda cm, job, rest: True,  # PID 1 is the runtime, which handles SIGTERM itself
    "cap_drop": lambda cm, job, rest: _container(job)["securityContext"]["capabilities"]["drop"] == ["ALL"],
    "security_opt": lambda cm, job, rest: _container(job)["securityContext"]["allowPrivilegeEscalation"] is False,
    "read_only": lambda cm, job, rest: _container(job)["securityContext"]["readOnlyRootFilesystem"] is True,
    "tmpfs": lambda cm, job, rest: any(v.get("emptyDir") == {"sizeLimit": "2Gi"}
                                       for v in job["spec"]["template"]["spec"]["volumes"]),
    "pids_limit": lambda cm, job, rest: job["metadata"]["annotations"]["org.modelforge/pids-limit"] == "777",
    "shm_size": lambda cm, job, rest: {"medium": "Memory", "sizeLimit": "3Gi"} in [
        v.get("emptyDir") for v in job["spec"]["template"]["spec"]["volumes"]],
    "ulimits": lambda cm, job, rest: job["metadata"]["annotations"]["org.modelforge/ulimits"] == "memlock=-1:-1",
    "memory": lambda cm, job, rest: _container(job)["resources"]["limits"]["memory"] == "5Gi",
    "cpus": lambda cm, job, rest: _container(job)["resources"]["limits"]["cpu"] == "3",
    "gpus": lambda cm, job, rest: _container(job)["resources"]["limits"]["nvidia.com/gpu"] == "2",
    "labels": lambda cm, job, rest: job["metadata"]["labels"]["org.modelforge.kind"] == "job",
    "stop_grace": lambda cm, job, rest: job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 99,
    "stop_on_stdin_eof": lambda cm, job, rest: True,  # the cluster owns the job's life: mf deletes the Job
    # refused by KubernetesBackend.prepare, with why: test_slurm_and_kubernetes_refuse_what_they_cannot_hold
    "egress": lambda cm, job, rest: True,
    "secrets": lambda cm, job, rest: True,
}


def test_every_plan_field_has_a_kubernetes_check() -> None:
    assert {f.name for f in dataclasses.fields(JobPlan)} == set(K8S_CHECKS)


@pytest.mark.parametrize("name", sorted(K8S_CHECKS))
def test_the_kubernetes_backend_carries_the_field(name: str) -> None:
    assert K8S_CHECKS[name](*_k8s()), f"the Kubernetes backend drops {name}"


# -- make_plan: the request, the image and the inputs to a plan, with no engine -------------------------
def _make(monkeypatch: pytest.MonkeyPatch, **request: Any) -> JobPlan:
    from orchestrator import engine
    from orchestrator.jobs import JobRequest
    from orchestrator.plan import Inputs, make_plan

    def no_engine(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("make_plan asked the engine")

    monkeypatch.setattr(engine, "client", no_engine)
    req = JobRequest(**{"provider": "gguf", "action": "load", "model": "/models/m.gguf", **request})
    inputs = Inputs(model="/models/m.gguf", mounts=[Mount("/srv/m.gguf", "/models/m.gguf")], has_output=True,
                    options={"k": 1})
    gpus = req.gpus
    return make_plan(req, "gguf", "modelforge/gguf:cpu-x", None, "lock123", inputs, gpu_host=gpus is not None,
                     user=(1000, 1000), gpus=gpus)


def test_make_plan_offline_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    plan = _make(monkeypatch, prompt="Hi")
    spec = json.loads(plan.spec_json)
    assert spec["device_map"] == "cpu" and spec["output_dir"] == "/output" and spec["options"] == {"k": 1}
    assert spec["prompt"] == "Hi" and spec["model"] == "/models/m.gguf"
    assert plan.network == "none" and plan.pass_environment == [] and plan.environment["HF_HUB_OFFLINE"] == "1"
    assert plan.gpus is None and plan.ulimits == [] and plan.user == "1000:1000" and plan.stop_grace == 10
    assert plan.environment["MF_LOCK_HASH"] == "lock123" and plan.labels["org.modelforge.action"] == "load"
    assert "hf_secret" not in repr(plan)


def test_make_plan_online_gpu_train(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    plan = _make(monkeypatch, action="train", online=True, gpus="all", memory="4g")
    assert plan.network == "bridge" and plan.pass_environment == ["HF_TOKEN"] and "HF_HUB_OFFLINE" not in plan.environment
    assert plan.gpus == "all" and [u.name for u in plan.ulimits] == ["memlock", "stack"]
    assert plan.stop_grace == 120 and plan.memory == "4g" and '"device_map": "auto"' in plan.spec_json
    assert "hf_secret" not in repr(plan)


def test_slurm_and_kubernetes_refuse_what_they_cannot_hold() -> None:
    from orchestrator.backends.kubernetes import KubernetesBackend, KubernetesOptions
    from orchestrator.backends.slurm import SlurmBackend
    from providers.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"Secrets \(API_KEY\) reach Docker jobs only"):
        SlurmBackend().prepare(dataclasses.replace(PLAN, labels={}), detach=False)
    with pytest.raises(ConfigurationError, match="Kubernetes cannot hold this job to api.example.com:443: a NetworkPolicy"):
        KubernetesBackend(KubernetesOptions()).prepare(dataclasses.replace(PLAN, labels={}), detach=False)
    with pytest.raises(ConfigurationError, match=r"--secret \(API_KEY\) is for Docker jobs"):
        KubernetesBackend(KubernetesOptions()).prepare(dataclasses.replace(PLAN, labels={}, egress=[]), detach=False)
