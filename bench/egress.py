"""Providers that call out: what the egress proxy costs.

- Start-up: `mf run -p gguf validate` (no network) against the same job with `--online` (its egress proxy
  started beside it; the job itself connects nowhere), alternating, medians.
- Throughput: 100 MB from a local HTTP server on a docker network, downloaded by the same urllib code from
  inside a container: directly (a container on that network) and through a job's egress proxy (the cloud test
  plugin's job, `mf providers check --script`), alternating, medians of MB/s. Each side first fetches 1 MB, so the
  timing starts once the way is open (the proxy starts beside the job, and the job's first connection waits for it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import GGUF, ROOT, alternate, median, status, timed

STARTUP_TARGET_S = 0.3
THROUGHPUT_TARGET = 0.9
MB = 100
DOWNLOAD = """
import time, urllib.request
urllib.request.urlopen("http://api.cloud.test:8080/big?mb=1", timeout=60).read()  # the way is open (the proxy is up)
t = time.perf_counter(); n = 0
with urllib.request.urlopen("http://api.cloud.test:8080/big?mb={mb}", timeout=120) as r:
    while chunk := r.read(1 << 20):
        n += len(chunk)
s = time.perf_counter() - t
print(f"✅ download: {{n / s / 1e6:.1f}} MB/s {{n}} bytes")
"""


def _server(client: Any) -> tuple[Any, Any, str]:
    from orchestrator import images, recipes

    base = images.ensure_base(recipes.BASE_RUNTIME, lambda line: None)
    network = client.networks.create(f"mf-bench-cloud-{os.getpid()}")
    server = client.containers.create(
        base, ["python3", "/srv/cloud_api.py", "8080"], environment={"API_KEY": "bench"},
        volumes={str(ROOT / "tests" / "fixtures" / "cloud" / "cloud_api.py"): {"bind": "/srv/cloud_api.py", "mode": "ro"}},
        network=network.name)
    network.disconnect(server)
    network.connect(server, aliases=["api.cloud.test"])
    server.start()
    return network, server, base


def bench_egress(reps: int) -> dict[str, Any]:
    import docker

    mf = [sys.executable, "-m", "orchestrator"]
    runs = alternate(reps, {
        "no network": lambda: timed([*mf, "run", "-p", "gguf", "validate", "--model", str(GGUF), "--json"])[0],
        "egress proxy": lambda: timed([*mf, "run", "-p", "gguf", "validate", "--model", str(GGUF), "--online",
                                       "--json"])[0],
    })
    client = docker.from_env()
    network, server, base = _server(client)
    site = Path(tempfile.mkdtemp(prefix="mf-bench-plugins-"))
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--target", str(site), str(ROOT / "tests" / "plugins" / "cloud_provider")], check=True)
        script = site / "download.py"
        script.write_text(DOWNLOAD.format(mb=MB))
        env = {**os.environ, "PYTHONPATH": str(site), "MODELFORGE_LOAD_PLUGINS": "modelforge-cloud-provider",
               "MF_EGRESS_NETWORK": network.name, "CLOUD_API_KEY": "bench"}

        def direct() -> float:
            out = client.containers.run(base, ["python3", "-c", DOWNLOAD.format(mb=MB)], network=network.name,
                                        remove=True).decode()
            return float(re.search(r"([0-9.]+) MB/s", out).group(1))  # type: ignore[union-attr]

        def proxied() -> float:
            proc = subprocess.run([*mf, "providers", "check", "cloud", "--model", "cloud-small", "--script", str(script),
                                   "--secret", "CLOUD_API_KEY=env:CLOUD_API_KEY"], env=env, capture_output=True,
                                  text=True, check=False)
            found = re.search(r"download: ([0-9.]+) MB/s", proc.stdout)
            if found is None:
                raise SystemExit(f"proxied download failed: {proc.stdout[-800:]} {proc.stderr[-800:]}")
            return float(found.group(1))

        proxied()  # builds the plugin's image once, outside the timing
        speeds = alternate(max(3, reps), {"direct": direct, "proxied": proxied})
    finally:
        server.remove(force=True)
        network.remove()
        for image in client.images.list(name="modelforge/cloud"):
            client.images.remove(image.id, force=True)
    plain, proxy = median(runs["no network"]), median(runs["egress proxy"])
    return {"startup_no_network_s": round(plain, 3), "startup_egress_s": round(proxy, 3),
            "startup_extra_s": round(proxy - plain, 3), "direct_mb_s": round(median(speeds["direct"]), 1),
            "proxied_mb_s": round(median(speeds["proxied"]), 1),
            "throughput_ratio": round(median(speeds["proxied"]) / median(speeds["direct"]), 3), "mb": MB}


def rows(r: dict[str, Any]) -> list[str]:
    return [
        f"| job start-up with an egress proxy, extra over no network (s) | {r['startup_egress_s']:.3f} | "
        f"{r['startup_no_network_s']:.3f} | +{r['startup_extra_s']:.3f} s | <= +{STARTUP_TARGET_S} "
        f"| {status(r['startup_extra_s'], STARTUP_TARGET_S, False)} |",
        f"| {r['mb']} MB download through the egress proxy (MB/s) | {r['proxied_mb_s']:.1f} | {r['direct_mb_s']:.1f} "
        f"(direct) | {r['throughput_ratio']:.2f}x | >= {THROUGHPUT_TARGET} "
        f"| {status(r['throughput_ratio'], THROUGHPUT_TARGET, True)} |",
    ]
