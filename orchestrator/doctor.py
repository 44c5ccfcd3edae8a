"""`mf doctor`: is this machine ready to run ModelForge jobs? One check a line, with the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from providers.errors import EngineError

from . import engine, label
from .checks import hf_cache_dir

DISK_WARN_GB = 30
DISK_FAIL_GB = 5
SHM_WARN_GB = 1.0


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_engine() -> tuple[Check, dict[str, Any] | None]:
    try:
        info = engine.client().info()
        return Check("docker engine", "ok", f"reachable, version {engine.engine_version()}"), info
    except EngineError as exc:
        return Check("docker engine", "fail", exc.message, "sudo scripts/ensure-docker.sh (or start Docker)"), None


def check_gpus(info: dict[str, Any] | None) -> list[Check]:
    if info is None:
        return [Check("nvidia runtime", "skip", "engine not reachable")]
    if "nvidia" not in (info.get("Runtimes") or {}):
        return [Check("nvidia runtime", "warn", "absent: jobs use the cpu flavours; GPU-only providers are refused",
                      "install the NVIDIA Container Toolkit on a GPU host to use GPUs")]
    checks = [Check("nvidia runtime", "ok", "present")]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [*checks, Check("gpus", "warn", "nvidia-smi not found on the host", "install the NVIDIA driver")]
    out = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],  # noqa: S603
                         capture_output=True, text=True, check=False)
    gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if not gpus:
        return [*checks, Check("gpus", "fail", "nvidia-smi lists no GPU", "check the driver: nvidia-smi")]
    driver = gpus[0].rsplit(",", 1)[-1].strip()
    checks.append(Check("gpus", "ok", f"{len(gpus)}: {'; '.join(gpus)}"))
    for tag, floor in _cuda_floors().items():
        ok = engine.version_tuple(driver) >= engine.version_tuple(floor)
        checks.append(Check(f"driver for {tag}", "ok" if ok else "fail",
                            f"driver {driver}, image needs >= {floor}",
                            "" if ok else "update the NVIDIA driver"))
    return checks


def _cuda_floors() -> dict[str, str]:
    floors = {}
    for image in engine.client().images.list(filters={"label": label("driver-floor")}):
        for tag in image.tags:
            floors[tag] = image.labels[label("driver-floor")]
    return floors


def check_disk(info: dict[str, Any] | None) -> Check:
    root = Path(info.get("DockerRootDir", "/var/lib/docker")) if info else Path("/var/lib/docker")
    where = root if root.exists() else Path("/")
    free = shutil.disk_usage(where).free
    status = "fail" if free < DISK_FAIL_GB * 1e9 else "warn" if free < DISK_WARN_GB * 1e9 else "ok"
    return Check("disk for images", status, f"{_gb(free)} free at {where}",
                 "" if status == "ok" else "free space, or `mf images prune` to drop superseded images")


SHM = "/dev/shm"  # nosec B108 # noqa: S108 - reading its size, not writing there


def check_shm() -> Check:
    shm = Path(SHM)
    if not shm.exists():
        return Check(SHM, "warn", "missing", "mount a tmpfs at /dev/shm")
    size = shutil.disk_usage(shm).total
    status = "ok" if size >= SHM_WARN_GB * 1e9 else "warn"
    return Check(SHM, status, f"{_gb(size)} on the host (jobs get their own 1 GB)",
                 "" if status == "ok" else "enlarge /dev/shm for data loaders outside containers")


def check_hf_cache() -> Check:
    cache = hf_cache_dir()
    if not cache.exists():
        return Check("hf cache", "ok", f"{cache} (not created yet; mf creates it)")
    uid = os.getuid()
    foreign = []
    for n, path in enumerate(cache.rglob("*")):
        if n > 20000:
            break
        try:
            if path.lstat().st_uid != uid:
                foreign.append(path)
        except OSError:
            continue
    if foreign and uid != 0:
        return Check("hf cache", "warn", f"{cache}: {len(foreign)} entries not owned by you (e.g. {foreign[0]})",
                     f"sudo chown -R {uid}:{os.getgid()} {cache}")
    return Check("hf cache", "ok", f"{cache}, owned by uid {uid}")


def check_token() -> Check:
    token_file = hf_cache_dir() / "token"
    if os.environ.get("HF_TOKEN"):
        return Check("hf token", "ok", "HF_TOKEN is set (passed to jobs only with --online)")
    if token_file.exists():
        return Check("hf token", "ok", f"a token file exists in {token_file.parent} (jobs never read it; "
                     "set HF_TOKEN to pass a token with --online)")
    return Check("hf token", "warn", "no HF token: gated models cannot be downloaded",
                 "export HF_TOKEN=... (from your hub account settings)")


def check_slurm() -> Check:
    """The Slurm backend: is a controller reachable, with which partitions and GPUs per node."""
    from .backends import slurm

    try:
        proc = slurm._slurm("sinfo", "--noheader", "--format=%P|%D|%G|%a", check=False)
    except EngineError:
        return Check("slurm", "skip", "no Slurm client on this machine (only needed for --backend slurm)")
    if proc.returncode != 0:
        conf = Path(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")
        if not conf.exists():  # sinfo then tries a DNS lookup for a controller and fails with resolver noise
            return Check("slurm", "skip", f"no Slurm cluster configured (no {conf}; set SLURM_CONF) "
                                          "(only needed for --backend slurm)")
        return Check("slurm", "warn", f"sinfo failed: {' '.join(proc.stderr.split())[:120]}",
                     "check SLURM_CONF and that slurmctld is reachable")
    parts = []
    for line in proc.stdout.strip().splitlines():
        partition, nodes, gres, avail = (line.split("|") + ["", "", "", ""])[:4]
        gpus = ",".join(g for g in gres.split(",") if g.startswith("gpu")) or "no GPUs"
        parts.append(f"{partition} ({nodes} node(s), {gpus}, {avail})")
    return Check("slurm", "ok", "reachable: " + "; ".join(parts))


def check_kubernetes() -> Check:
    """The Kubernetes backend: the API from the kubeconfig, its namespace, GPU nodes."""
    if not (os.environ.get("KUBECONFIG") or (Path.home() / ".kube" / "config").exists()):
        return Check("kubernetes", "skip", "no kubeconfig (only needed for --backend kubernetes)")
    import importlib.util

    if importlib.util.find_spec("kubernetes") is None:
        return Check("kubernetes", "warn", "a kubeconfig, but no kubernetes client beside mf",
                     "pip install 'modelforge[kubernetes]'")
    try:
        from .backends.kubernetes import Cluster

        cluster = Cluster()
        nodes = cluster.core.list_node().items
    except Exception as exc:  # the client raises many kinds; the line says which
        return Check("kubernetes", "warn", f"API not reachable: {' '.join(str(exc).split())[:120]}",
                     "check KUBECONFIG and the cluster")
    gpus = 0
    for node in nodes:
        allocatable: dict[str, str] = (node.status.allocatable if node.status else None) or {}
        gpus += int(allocatable.get("nvidia.com/gpu", "0"))
    return Check("kubernetes", "ok", f"reachable: {len(nodes)} node(s), {gpus} allocatable nvidia.com/gpu")


def run_checks() -> list[Check]:
    engine_check, info = check_engine()
    return [engine_check, *check_gpus(info), check_disk(info), check_shm(), check_hf_cache(), check_token(),
            check_slurm(), check_kubernetes()]


# -- `mf doctor --model`: the hardware a fit estimate (orchestrator/fit.py) is measured against ----------------------

@dataclass
class Hardware:
    """What a job could use here, in bytes: GPUs (total and free), RAM (the host's and the engine's view), free disk
    where models, caches and outputs go, and /dev/shm."""

    gpus: list[dict[str, Any]]
    ram_total: int
    ram_available: int
    engine_ram_total: int | None
    cpus: int
    disk_free: dict[str, int]
    shm_bytes: int | None

    @property
    def device(self) -> str:
        return "gpu" if self.gpus else "cpu"

    @property
    def budget(self) -> int:
        """The memory one job may fill: the freest GPU's free memory, else the RAM available to the engine (the
        host's available memory, or less when the engine runs in a smaller VM)."""
        if self.gpus:
            return max(int(g["memory_free"]) for g in self.gpus)
        if self.engine_ram_total:
            return min(self.ram_available, self.engine_ram_total)
        return self.ram_available

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "device": self.device, "budget": self.budget}


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo's fields, in bytes."""
    fields: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return fields


def gpu_memory(info: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each GPU the engine's NVIDIA runtime would pass to a job, with its memory, from nvidia-smi; none without
    the runtime."""
    if info is None or "nvidia" not in (info.get("Runtimes") or {}):
        return []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    out = subprocess.run([smi, "--query-gpu=index,name,memory.total,memory.free",  # noqa: S603
                          "--format=csv,noheader,nounits"], capture_output=True, text=True, check=False)
    gpus = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
            gpus.append({"index": int(parts[0]), "name": parts[1], "memory_total": int(parts[2]) * 2**20,
                         "memory_free": int(parts[3]) * 2**20})
    return gpus


def free_disk(path: Path) -> int:
    """Free bytes where ``path`` is or would be (its closest existing parent)."""
    probe = path.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def probe_hardware() -> Hardware:
    from . import cache_dir

    try:
        info: dict[str, Any] | None = engine.client().info()
    except EngineError:
        info = None
    meminfo = read_meminfo()
    shm = Path(SHM)
    folders = {"hf cache": hf_cache_dir(), "mf cache": cache_dir(), "outputs (here)": Path.cwd()}
    return Hardware(
        gpus=gpu_memory(info),
        ram_total=meminfo.get("MemTotal", 0),
        ram_available=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
        engine_ram_total=int(info["MemTotal"]) if info and info.get("MemTotal") else None,
        cpus=int(info.get("NCPU") or 0) if info else os.cpu_count() or 1,
        disk_free={f"{name}: {path}": free_disk(path) for name, path in folders.items()},
        shm_bytes=shutil.disk_usage(shm).total if shm.exists() else None,
    )


def fit_report(model: Path, hardware: Hardware, *, strategy: str | None = None, batch_size: int | None = None,
               max_seq_length: int | None = None) -> dict[str, Any]:
    """`mf doctor --model`'s answer: the hardware, the model, the training and inference estimates (for the given
    settings, the rest picked to fit) and the settings it would pick."""
    from . import fit

    info = fit.read_model(model)
    device: fit.Device = "gpu" if hardware.device == "gpu" else "cpu"
    strat: fit.Strategy | None = "lora" if strategy == "lora" else "qlora" if strategy == "qlora" else None
    rec = fit.recommend(info, device, hardware.budget, strategy=strat, batch_size=batch_size,
                        max_seq_length=max_seq_length)
    return {
        "hardware": hardware.as_dict(),
        "model": info.as_dict(),
        "estimate": {"training": rec.training.as_dict(), "inference": rec.inference.as_dict()},
        "recommended": rec.as_dict(),
    }


def cgroup_memory_peak_file(pid: int, proc: Path = Path("/proc"), root: Path = Path("/sys/fs/cgroup")) -> Path | None:
    """The file holding the memory high-water mark of process ``pid``'s cgroup (a job container's PID 1, seen from
    the host): ``memory.max_usage_in_bytes`` on cgroup v1 (the memory controller's hierarchy), ``memory.peak`` on
    cgroup v2 (kernel 5.19 and newer). None when neither is there."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = root / "memory" / path.lstrip("/") / "memory.max_usage_in_bytes"
            if v1.exists():
                return v1
        elif controllers == "":
            v2 = root / path.lstrip("/") / "memory.peak"
            if v2.exists():
                return v2
    return None
