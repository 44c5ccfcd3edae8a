"""A multi-node Kubernetes job's pods, run for real under Docker (no cluster can run on these machines):
the manifests `mf run --backend kubernetes --nodes 2` makes, each pod of the Indexed Job started as a
container with exactly its pod spec (command, environment with the completion index and the pod's IP filled
in as the kubelet would, user, read-only root, volumes), on a user-defined network where index 0 answers
to the name the headless Service gives it. They must find each other and train one model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from orchestrator.backends import kubernetes as k8s
from orchestrator.jobs import JobRequest
from orchestrator.plan import make_plan

from .test_distributed import _config
from .test_huggingface_image import write_dataset

DIGEST = "registry.example/modelforge/huggingface@sha256:" + "c" * 64
SUBNET = "172.31.77"


def _manifests(hf_image: str, model: str, config: Path) -> tuple[str, list[dict[str, Any]]]:
    """What mf submits for 2 nodes (the plan made by the same code as `mf run`; only the digest is made up)."""
    from orchestrator import recipes
    from providers.schemas import load_job_config

    options = k8s.KubernetesOptions(dataset="pvc://data/data.jsonl", output="pvc://runs/run1")
    backend = k8s.KubernetesBackend(options, cluster=object())
    request = JobRequest(provider="huggingface", action="train", model=f"pvc://models/{model}", backend="kubernetes",
                         backend_options=options, nodes=2, train=dict(load_job_config(config).train))
    inputs = backend.inputs(request)
    spec = recipes.image_spec("huggingface", "cpu", False)
    plan = make_plan(request, "huggingface", hf_image, DIGEST, spec.lock_hash, inputs, False, backend.user(), None)
    plan = backend.prepare(plan, False)
    name = "mf-huggingface-train-pods"
    return name, k8s.to_dicts(k8s.build_objects(plan, name, options))


def _run_pod(client: Any, network: Any, job: dict[str, Any], config_map: dict[str, Any], index: int, name: str,
             claims: dict[str, Path], folder: Path) -> Any:
    """One pod of the Indexed Job as a container, field by field."""
    pod = job["spec"]["template"]["spec"]
    [spec] = pod["containers"]
    ip = f"{SUBNET}.{10 + index}"
    env = {}
    for var in spec["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[var["name"]] = ip
        elif "job-completion-index" in var["valueFrom"].get("fieldRef", {}).get("fieldPath", ""):
            env[var["name"]] = str(index)
    volumes = {v["name"]: v for v in pod["volumes"]}
    spec_dir = folder / f"spec-{index}"
    spec_dir.mkdir()
    for key, text in config_map["data"].items():
        (spec_dir / key).write_text(text)
    binds, tmpfs, shm = {}, {}, "64m"
    for mount in spec["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            binds[str(spec_dir)] = {"bind": mount["mountPath"], "mode": "ro"}
        elif volume.get("emptyDir", {}).get("medium") == "Memory":
            shm = volume["emptyDir"]["sizeLimit"].replace("Gi", "g").replace("Mi", "m")
        elif "emptyDir" in volume:
            tmpfs[mount["mountPath"]] = f"size={volume['emptyDir']['sizeLimit'].replace('Gi', 'g')}"
        else:
            source = claims[volume["persistentVolumeClaim"]["claimName"]] / mount.get("subPath", "")
            binds[str(source)] = {"bind": mount["mountPath"], "mode": "ro" if mount.get("readOnly") else "rw"}
    sc = spec["securityContext"]
    container = client.containers.create(
        job["metadata"]["annotations"]["org.modelforge/image-tag"], command=spec["args"], environment=env,
        user=f"{sc['runAsUser']}:{sc['runAsGroup']}", read_only=sc["readOnlyRootFilesystem"],
        cap_drop=sc["capabilities"]["drop"], security_opt=["no-new-privileges"], volumes=binds, tmpfs=tmpfs,
        shm_size=shm, name=f"mf-k8s-pod-{index}-{os.getpid()}", labels={"org.modelforge.test": "k8s-pods"})
    client.networks.get("bridge").disconnect(container)
    network.connect(container, ipv4_address=ip, aliases=[f"{name}-{index}.{pod['subdomain']}"])
    container.start()
    return container


def test_the_indexed_jobs_pods_find_each_other_and_train_one_model(hf_image: str, smollm2_hf: Path, tmp_path: Path,
                                                                   docker_client: Any) -> None:
    write_dataset(tmp_path / "data.jsonl", n=16)
    name, objects = _manifests(hf_image, smollm2_hf.name, _config(tmp_path / "job.json", max_steps=2))
    config_map, job, service, _policy = objects
    assert service["spec"]["clusterIP"] == "None" and job["spec"]["completions"] == 2
    run = tmp_path / "run1"
    run.mkdir()
    run.chmod(0o777)  # the pod's user (an unprivileged uid) writes the output claim
    claims = {"models": smollm2_hf.parent, "data": tmp_path, "runs": tmp_path}
    network = docker_client.networks.create(f"mf-k8s-pods-{os.getpid()}", driver="bridge", ipam={
        "Config": [{"Subnet": f"{SUBNET}.0/24"}]})
    pods: list[Any] = []
    try:
        pods = [_run_pod(docker_client, network, job, config_map, index, name, claims, tmp_path) for index in (0, 1)]
        codes = [pod.wait(timeout=600)["StatusCode"] for pod in pods]
        logs = [pod.logs(stdout=True, stderr=False).decode() for pod in pods]
        assert codes == [0, 0], [pod.logs().decode()[-3000:] for pod in pods]
    finally:
        for pod in pods:
            pod.remove(force=True)
        network.remove()
    events = [json.loads(line) for line in logs[0].splitlines() if line.startswith("{")]
    result = events[-1]
    assert result["event"] == "result", events[-3:]
    assert (result["world_size"], result["ranks_per_node"], result["nodes"]) == (2, 1, 2)
    assert logs[1].strip() == ""  # only index 0 speaks for the job
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "ranks_per_node": 1, "nodes": 2}
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
