"""The host's side of egress and secrets, where no container is needed: declarations, --secret, --network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import egress
from providers.errors import ConfigurationError
from providers.protocol import declared_network


def mf(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize("value, why", [
    (["api.example.com"], "network entry 'api.example.com' is not \"host:port\""),
    (["api.example.com:0"], "network entry 'api.example.com:0' is not \"host:port\""),
    (["https://api.example.com:443"], "is not \"host:port\""),
    ("api.example.com:443", "network must be a list of \"host:port\" strings, not str"),
])
def test_a_malformed_network_declaration_says_what_is_wrong(value: object, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        declared_network(type("P", (), {"network": value}))


def test_a_well_formed_declaration() -> None:
    cls = type("P", (), {"network": ["API.example.com:443", "[::1]:8080", "10.0.0.1:80"]})
    assert declared_network(cls) == ["api.example.com:443", "[::1]:8080", "10.0.0.1:80"]


def test_mf_providers_names_the_malformed_plugin(use_plugins) -> None:
    use_plugins("modelforge-bad-network", "modelforge-cloud-provider")
    rows = {row["name"]: row for row in json.loads(mf("providers", "--json").stdout)}
    assert rows["leaky"]["note"] == (
        "broken plugin: Plugin modelforge-bad-network (provider 'leaky') has a malformed declaration: network entry "
        "'api.example.com' is not \"host:port\" (a host name or address, a port 1-65535).")
    assert rows["cloud"]["network"] == ["api.cloud.test:8080"] and rows["cloud"]["secrets"] == ["CLOUD_API_KEY"]
    assert "reaches api.cloud.test:8080 (egress proxy)" in rows["cloud"]["note"]


@pytest.mark.parametrize("secret, message", [
    ("CLOUD_API_KEY=file:/nonexistent/key", "Error: --secret CLOUD_API_KEY=file:/nonexistent/key: no such file."),
    ("CLOUD_API_KEY=env:MF_TEST_UNSET_VARIABLE", "Error: --secret CLOUD_API_KEY=env:MF_TEST_UNSET_VARIABLE: the "
     "variable MF_TEST_UNSET_VARIABLE is not set."),
    ("../etc=env:HOME", "Error: Secret name '../etc' is not a plain name"),
    ("a/b=env:HOME", "Error: Secret name 'a/b' is not a plain name"),
    ("KEY=s3cr3t", "Error: --secret KEY=...: write NAME=env:VAR or NAME=file:PATH."),
])
def test_bad_secrets_are_one_line_before_any_container(use_plugins, secret: str, message: str) -> None:
    use_plugins("modelforge-cloud-provider")
    proc = mf("run", "--provider", "cloud", "load", "--model", "m", "--secret", secret, DOCKER_HOST="unix:///nonexistent")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1
    assert "s3cr3t" not in proc.stderr  # a value written inline is not echoed


def test_a_declared_secret_that_was_not_passed(use_plugins) -> None:
    use_plugins("modelforge-cloud-provider")
    proc = mf("run", "--provider", "cloud", "load", "--model", "m", DOCKER_HOST="unix:///nonexistent")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("Error: The cloud provider needs the secret CLOUD_API_KEY, which was not passed. "
                                   "Pass it: --secret CLOUD_API_KEY=env:VAR or --secret CLOUD_API_KEY=file:PATH.")


def test_online_is_the_hubs_hosts_unless_open() -> None:
    plain = type("P", (), {})
    assert egress.job_egress(plain, online=False, network=None) == ("none", [])
    assert egress.job_egress(plain, online=True, network=None) == ("none", egress.HUB_HOSTS)
    assert egress.job_egress(plain, online=True, network="open") == ("bridge", [])
    calls = type("C", (), {"network": ["api.x.com:443"]})
    assert egress.job_egress(calls, online=True, network=None) == ("none", ["api.x.com:443", *egress.HUB_HOSTS])
    with pytest.raises(ConfigurationError, match="--network open gives a job the whole network"):
        egress.job_egress(plain, online=False, network="open")


def test_secrets_are_written_0400_in_a_tmpfs_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_SECRETS_TMPFS", str(tmp_path))
    monkeypatch.setenv("MF_TEST_SECRET", "v4lue")
    folder = egress.write_secrets("job1", {"API_KEY": "env:MF_TEST_SECRET"}, f"{os.getuid()}:{os.getgid()}")
    assert (folder / "API_KEY").stat().st_mode & 0o777 == 0o400 and folder.stat().st_mode & 0o777 == 0o500
    assert (folder / "API_KEY").read_text() == "v4lue"
    egress.remove_secrets(folder)
    assert not folder.exists()


def test_the_docker_backend_moves_hf_token_to_a_secret_file() -> None:
    from orchestrator.backends.docker import DockerBackend
    from orchestrator.plan import JobPlan

    plan = JobPlan(image="i", command=[], spec_json="{}", mounts=[], environment={}, user="1000:1000",
                   pass_environment=["HF_TOKEN"], network="none")
    plan = DockerBackend().prepare(plan, detach=False)
    assert plan.pass_environment == [] and plan.secrets == {"HF_TOKEN": "env:HF_TOKEN"}
    assert plan.environment["HF_TOKEN_PATH"] == "/run/secrets/HF_TOKEN"
