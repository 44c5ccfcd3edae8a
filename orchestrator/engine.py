"""The one module that talks to the Docker engine; everything else asks it."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from providers.errors import ConfigurationError, EngineError, ImageError

from . import LABEL_PREFIX

_client: Any = None
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def client() -> Any:
    """A connected docker SDK client, or EngineError with how to start the engine."""
    global _client
    if _client is not None:
        return _client
    import docker
    from docker.errors import DockerException

    try:
        candidate = docker.from_env(timeout=_timeout())
        candidate.ping()
    except DockerException as exc:
        reason = str(exc).split("\n")[0]
        raise EngineError(f"Cannot reach the Docker engine ({reason[:160]}).") from None
    _client = candidate
    return _client


def _timeout() -> int:
    """Seconds an engine call may take: MF_DOCKER_TIMEOUT, else 120."""
    raw = os.environ.get("MF_DOCKER_TIMEOUT", "120")
    if not raw.isdigit() or int(raw) < 1:
        raise EngineError(f"MF_DOCKER_TIMEOUT={raw!r} is not a number of seconds.",
                          "Set it to a whole number such as 120, or unset it.")
    return int(raw)


def _unix_socket() -> str | None:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def _get(path: str) -> tuple[int, Any]:
    """A read-only GET on the engine's API over its unix socket, with the standard library: the questions
    `mf providers` and `mf run` ask first (is the image there? is there an NVIDIA runtime?) do not wait for
    the docker SDK's import (~0.07 s of requests and urllib3)."""
    import http.client
    import json

    found = _unix_socket()
    assert found is not None
    sock_path: str = found
    timeout = _timeout()

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(sock_path)

    connection = UnixConnection("localhost")
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise EngineError(f"Cannot reach the Docker engine ({str(exc)[:160]}).") from None
    finally:
        connection.close()
    try:
        return response.status, json.loads(body) if body else None
    except ValueError:
        return response.status, None


def has_nvidia_runtime() -> bool:
    if _unix_socket() is not None:
        status, info = _get("/info")
        if status == 200 and isinstance(info, dict):
            return "nvidia" in (info.get("Runtimes") or {})
    runtimes = client().info().get("Runtimes") or {}
    return "nvidia" in runtimes


_DRIVER_VERSION = re.compile(r"\s(\d{3,}\.\d+(?:\.\d+)?)\s")


def host_driver_version(proc_file: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The NVIDIA driver of the host the engine runs on, when that host is this one (a local socket):
    from the kernel module's version file, else nvidia-smi; None where neither says."""
    if _unix_socket() is None:
        return None
    with contextlib.suppress(OSError):
        found = _DRIVER_VERSION.search(proc_file.read_text())
        if found:
            return found.group(1)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],  # noqa: S603
                             capture_output=True, text=True, check=False, timeout=_timeout())
        first = out.stdout.strip().splitlines()[:1]
        return first[0].strip() if first else None
    return None


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def engine_version() -> str:
    return str(client().version().get("Version", "?"))


def image_exists(tag: str) -> bool:
    if _unix_socket() is not None:
        from urllib.parse import quote

        status, _ = _get(f"/images/{quote(tag, safe='/:')}/json")
        if status in (200, 404):
            return status == 200
    from docker.errors import ImageNotFound

    try:
        client().images.get(tag)
        return True
    except ImageNotFound:
        return False


def image_attrs(tag: str) -> dict[str, Any] | None:
    from docker.errors import ImageNotFound

    try:
        return dict(client().images.get(tag).attrs)
    except ImageNotFound:
        return None


def build_image(
    context: io.BufferedIOBase,
    tag: str,
    *,
    buildargs: dict[str, str],
    labels: dict[str, str],
    on_line: Callable[[str], None],
    nocache: bool = False,
    target: str | None = None,
) -> None:
    """Build from a tar ``context`` with the classic builder and no network; stream its output. ``target``
    stops at that stage."""
    stream = client().api.build(
        fileobj=context,
        custom_context=True,
        tag=tag,
        buildargs=buildargs,
        labels=labels,
        network_mode="none",
        rm=True,
        forcerm=True,
        nocache=nocache,
        target=target,
        decode=True,
    )
    tail: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            raise build_failure(tag, chunk["error"], tail)
        text = _ANSI.sub("", chunk.get("stream", ""))  # the classic builder colours a step's stderr
        for line in text.splitlines():
            if line.strip():
                tail.append(line)
                on_line(line.rstrip())
    if not image_exists(tag):
        raise ImageError(f"Building {tag} ended without an image: {' | '.join(tail[-3:])}")


def build_failure(tag: str, error: str, tail: list[str]) -> ImageError:
    """One line for a failed build. The engine's error only says a step failed; the cause is in the step's
    own output (``tail``), and a full disk needs another remedy than a hash mismatch."""
    seen = " ".join([error, *tail[-60:]]).lower()
    if "no space left on device" in seen:
        return ImageError(
            f"Building {tag} failed: the Docker engine's disk is full.",
            "Free space for the engine (mf images prune drops superseded images; docker system prune the "
            "rest), then build again: finished layers are kept.",
        )
    causes = [line.strip() for line in tail[-60:] if line.lstrip().startswith(("ERROR", "error:"))]
    detail = causes[0] if causes else error.strip()
    return ImageError(
        f"Building {tag} failed: {detail[:300]}",
        "A hash mismatch means a lock or a staged wheel was changed: re-lock (make lock-NAME) or "
        "delete .cache/wheelhouse and build again.",
    )


def create_container(image: str, name: str, **create_kwargs: Any) -> Any:
    """A created (not started) container; the caller removes it."""
    from docker.errors import APIError

    create_kwargs.setdefault("detach", True)
    try:
        return client().containers.create(image, name=name, **create_kwargs)
    except APIError as exc:
        if exc.status_code != 400:  # noqa: PLR2004 - the engine's "bad request": a limit it cannot give
            raise
        why = str(exc.explanation or exc).strip().rstrip(".")
        raise ConfigurationError(f"The Docker engine refused the job's container: {why}.",
                                 "Ask for what this engine has (--cpus, --memory, --gpus).") from None


def find_container(name: str) -> Any | None:
    from docker.errors import NotFound

    try:
        return client().containers.get(name)
    except NotFound:
        return None


def job_containers(**labels: str) -> list[Any]:
    """This project's job containers, running or not, with these labels (``detached="1"``, ...)."""
    filters = [f"{LABEL_PREFIX}.kind=job"] + [f"{LABEL_PREFIX}.{key.replace('_', '-')}={value}"
                                              for key, value in labels.items()]
    return list(client().containers.list(all=True, filters={"label": filters}))


def gpu_device_requests(gpus: str | None) -> list[Any]:
    """Device requests for ``--gpus`` (``all``, a count, or ``device=0,1``); none without an NVIDIA runtime."""
    from docker.types import DeviceRequest

    if gpus is None or gpus == "none":
        return []
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if gpus.startswith("device="):
        return [DeviceRequest(device_ids=gpus.removeprefix("device=").split(","), capabilities=[["gpu"]])]
    return [DeviceRequest(count=int(gpus), capabilities=[["gpu"]])]


def remove_orphaned_jobs() -> list[str]:
    """Remove job containers whose `mf` process is gone (killed before it could clean up)."""
    removed = []
    for container in client().containers.list(all=True, filters={"label": f"{LABEL_PREFIX}.kind=job"}):
        labels = container.labels
        if labels.get(f"{LABEL_PREFIX}.host") != socket.gethostname() or f"{LABEL_PREFIX}.owner-pid" not in labels:
            continue  # another machine's, or a scheduler's (Slurm) job that no mf owns
        try:
            os.kill(int(labels.get(f"{LABEL_PREFIX}.owner-pid", "0")), 0)
            continue  # its mf is alive
        except ProcessLookupError:
            pass
        except (PermissionError, ValueError):
            continue
        with contextlib.suppress(Exception):
            container.remove(force=True)
            removed.append(container.name)
    return removed
