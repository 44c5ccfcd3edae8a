"""Real jobs on a real Kubernetes cluster, when there is one: KUBECONFIG names it, MF_REGISTRY is a registry
its nodes pull from (the gguf image pushed and its release verified here), and MF_K8S_MODEL names the demo
model on a PersistentVolumeClaim (pvc://CLAIM/PATH/SmolLM2-135M-Instruct.Q4_1.gguf). No control plane can run
on this project's CI machines, so these are skipped there; the manifests and the flow are tested offline in
tests/unit/test_kubernetes.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(not (os.environ.get("KUBECONFIG") and os.environ.get("MF_REGISTRY")
                            and os.environ.get("MF_K8S_MODEL")),
                       reason="no Kubernetes cluster: set KUBECONFIG, MF_REGISTRY and MF_K8S_MODEL to run these"),
]


def _mf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, timeout=900,
                          env=os.environ.copy())


def test_gguf_validate_runs_as_a_job() -> None:
    res = _mf("run", "--backend", "kubernetes", "-p", "gguf", "validate", "--model", os.environ["MF_K8S_MODEL"],
              "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["parameters"] == 134_515_008


def test_gguf_load_answers_paris() -> None:
    res = _mf("run", "--backend", "kubernetes", "-p", "gguf", "load", "--model", os.environ["MF_K8S_MODEL"],
              "--prompt", "The capital of France is", "--json")
    assert res.returncode == 0, res.stderr
    assert "Paris" in json.loads(res.stdout.splitlines()[-1])["text"]
