"""`mf doctor`'s Slurm line on a machine with Slurm's client but no cluster: a skip that says why, not the
resolver's noise (sinfo looks for a controller in DNS when it finds no slurm.conf)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator import doctor
from orchestrator.backends import slurm

RESOLVER_NOISE = ("sinfo: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host\n"
                  "sinfo: error: fetch_config: DNS SRV lookup failed\n")


def _sinfo_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(["sinfo"], 1, "", RESOLVER_NOISE)

    monkeypatch.setattr(slurm, "_slurm", fake)


def test_no_slurm_conf_is_a_skip_that_names_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _sinfo_fails(monkeypatch)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    check = doctor.check_slurm()
    assert check.status == "skip"
    assert check.detail.startswith(f"no Slurm cluster configured (no {tmp_path / 'slurm.conf'}; set SLURM_CONF)")
    assert "res_nsearch" not in check.detail


def test_a_configured_cluster_that_fails_is_still_a_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _sinfo_fails(monkeypatch)
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=c\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    check = doctor.check_slurm()
    assert check.status == "warn" and check.detail.startswith("sinfo failed:") and "slurmctld" in check.fix
