"""Providers that call out (issue: the guide's Cloud API provider made safe), for real: the test plugin `cloud`
against a local OpenAI-style API on a docker network of its own, reached only through the job's egress proxy.
Each way out is tried from inside the job container."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import egress, images, recipes

from .conftest import SESSION_LABEL, job_containers, mf, sigint_as_at_a_terminal

CLOUD = "modelforge-cloud-provider"
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "cloud"
KEY = "sk-mf-test-7f3a9c0e51d2"


@pytest.fixture(scope="module")
def cloud_api(docker_client: Any) -> Iterator[dict[str, str]]:
    """The API on a network of its own, as api.cloud.test and other.cloud.test, ports 8080 and 8081."""
    base = images.ensure_base(recipes.BASE_RUNTIME, lambda line: None)
    network = docker_client.networks.create(f"mf-test-cloud-{os.getpid()}")
    container = docker_client.containers.create(
        base, ["python3", "/srv/cloud_api.py", "8080", "8081"], environment={"API_KEY": KEY},
        volumes={str(FIXTURES / "cloud_api.py"): {"bind": "/srv/cloud_api.py", "mode": "ro"}},
        network=network.name, name=f"mf-test-cloud-api-{os.getpid()}")
    network.disconnect(container)
    network.connect(container, aliases=["api.cloud.test", "other.cloud.test"])
    container.start()
    container.reload()
    try:
        yield {"network": network.name, "ip": container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]}
    finally:
        container.remove(force=True)
        network.remove()


@pytest.fixture
def cloud(use_plugins, cloud_api: dict[str, str], gguf_image: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    use_plugins(CLOUD)
    monkeypatch.setenv(egress.NETWORK_ENV, cloud_api["network"])
    monkeypatch.setenv("CLOUD_API_KEY", KEY)
    return cloud_api


def egress_containers(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": ["org.modelforge.kind=egress", SESSION_LABEL]})


def test_the_guides_cloud_provider_answers_through_the_proxy(cloud, docker_client: Any) -> None:
    res = mf("run", "--provider", "cloud", "load", "--model", "cloud-small", "--prompt", "Hi",
             "--secret", "CLOUD_API_KEY=env:CLOUD_API_KEY", "--json", timeout=600)
    assert res.code == 0, res.stderr
    assert res.last["text"] == " Paris (port 8080, prompt 'Hi')"
    logs = [e["message"] for e in res.events if e["event"] == "log"]
    assert "egress allowed GET api.cloud.test:8080" in logs  # validate: the model list
    assert "egress allowed POST api.cloud.test:8080" in logs  # the completion
    assert KEY not in res.stdout + res.stderr
    assert egress_containers(docker_client) == []


def test_only_the_declared_host_and_port_get_through(cloud, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text((FIXTURES / "probe.py").read_text().replace("@SERVER_IP@", cloud["ip"]).replace(
        "@KEY_SHA256@", hashlib.sha256(KEY.encode()).hexdigest()))
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    res = mf("providers", "check", "cloud", "--model", "cloud-small", "--script", str(probe),
             "--secret", f"CLOUD_API_KEY=file:{key_file}", timeout=600)
    lines = res.stdout.splitlines()
    for check in ("the declared host and port: 200", "CONNECT to the declared host and port: HTTP/1.1 200 Connection "
                  "Established", "another host refused: 403", "another port on the declared host refused: 403",
                  "a raw IP refused: 403", "CONNECT to another host refused: HTTP/1.1 403 Forbidden",
                  "the secret's file: 0o400 uid 1000", "the secret is not in the environment"):
        assert f"✅ {check}" in lines, res.stdout + res.stderr
    assert any(line.startswith("✅ a direct connection fails: ") for line in lines), res.stdout
    assert any(line.startswith("✅ a DNS lookup of example.com fails: ") for line in lines), res.stdout
    assert res.code == 0, res.stdout + res.stderr
    # each refusal is in the proxy's log, which mf shows as the job's log
    for refused in ("GET other.cloud.test:8080", "GET api.cloud.test:8081", f"GET {cloud['ip']}:8080",
                    "CONNECT other.cloud.test:443"):
        assert f"| egress refused {refused}: {refused.split()[1]} is not in the provider's network declaration" \
            in res.stderr, res.stderr


def test_the_secret_is_nowhere_but_its_file(cloud, docker_client: Any) -> None:
    from orchestrator.backends.docker import jobs_root

    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "--provider", "cloud", "load", "--model",
                             "cloud-small", "--prompt", "slow", "--secret", "CLOUD_API_KEY=env:CLOUD_API_KEY", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (containers := [c for c in job_containers(docker_client) if c.status == "running"]):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        job = containers[0]
        job.reload()
        attrs = job.attrs
        assert KEY not in json.dumps(attrs["Config"]["Env"]) + json.dumps(attrs["Config"]["Cmd"])
        assert KEY not in json.dumps(attrs["Config"]["Labels"]) + json.dumps(attrs["Args"])
        (mount,) = [m for m in attrs["Mounts"] if m["Destination"] == egress.SECRETS_DIR]
        assert mount["RW"] is False and mount["Source"].startswith(str(egress.secrets_root()))  # a tmpfs, not a disk
        assert KEY not in (jobs_root() / job.name / "spec.json").read_text()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert KEY not in out + err
    assert not Path(mount["Source"]).exists()  # gone with the job
    assert egress_containers(docker_client) == []


@pytest.mark.parametrize("how", ["ctrl-c", "killed mf", "oom"])
def test_the_proxy_goes_with_the_job(how: str, cloud, docker_client: Any) -> None:
    args = [sys.executable, "-m", "orchestrator", "run", "--provider", "cloud", "load", "--model", "cloud-small",
            "--prompt", "slow", "--secret", "CLOUD_API_KEY=env:CLOUD_API_KEY", "--json"]
    if how == "oom":
        res = mf(*args[3:], "--memory", "24m", timeout=300)
        assert res.code == 10, res.stderr  # the OOM killer, reported as such
    else:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=sigint_as_at_a_terminal)
        deadline = time.monotonic() + 120
        while not egress_containers(docker_client):  # the job and its proxy are up
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
        code = proc.wait(timeout=60)
        assert code == (130 if how == "ctrl-c" else -9)
    deadline = time.monotonic() + 60  # a killed mf: the job sees its stdin close and stops; the proxy dies with it
    while egress_containers(docker_client) or (how == "killed mf" and any(
            c.status == "running" for c in job_containers(docker_client))):
        assert time.monotonic() < deadline, [c.name for c in egress_containers(docker_client)]
        time.sleep(0.5)
    if how == "killed mf":
        for c in job_containers(docker_client):  # what the next `mf run` reaps
            c.remove(force=True)


def test_online_reaches_only_the_hubs_hosts(docker_client: Any, gguf_image: str) -> None:
    """No hub is reachable here: the point is the path. The job asks the proxy for huggingface.co:443 (allowed),
    and the proxy's attempt fails for want of the internet, which the job's log says."""
    res = mf("run", "--provider", "gguf", "validate", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:x.gguf",
             "--online", "--json", timeout=300)
    assert res.code != 0
    logs = [e["message"] for e in res.events if e["event"] == "log"]
    assert any(m.startswith("egress allowed CONNECT huggingface.co:443") or
               m.startswith("egress failed CONNECT huggingface.co:443") for m in logs), logs
    assert egress_containers(docker_client) == []


def test_a_detached_job_keeps_its_proxy_until_it_ends(cloud, docker_client: Any) -> None:
    res = mf("run", "--provider", "cloud", "load", "--model", "cloud-small", "--prompt", "slow", "--secret",
             "CLOUD_API_KEY=env:CLOUD_API_KEY", "--detach", "--json", timeout=300)
    assert res.code == 0, res.stderr
    job = res.last["job"]
    try:
        assert len(egress_containers(docker_client)) == 1  # started before mf returned
        logs = mf("jobs", "logs", job, "--follow", "--json", timeout=120)
        assert logs.code == 0, logs.stderr
        assert logs.last["text"] == " Paris (port 8080, prompt 'slow')"
        deadline = time.monotonic() + 30
        while egress_containers(docker_client):  # the job ended: its proxy with it
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        assert mf("jobs", "cancel", job).code == 0
