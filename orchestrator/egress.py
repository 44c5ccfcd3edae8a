"""Providers that call out, made safe: a job's declared egress and its secrets, on the host.

**Egress.** A provider class may declare ``network = ["host:port", ...]``. Its job still runs with no network
(``--network none``); `mf` starts the egress proxy (``images/egress/``: a standard-library CONNECT and
absolute-URI proxy on the ModelForge base) beside it, in the job's PID namespace, so the proxy ends with the job
however the job ends. The two meet at a Unix socket in a folder of the job's, mounted into both; the runtime in
the job forwards ``127.0.0.1:3128`` (``HTTPS_PROXY`` and ``HTTP_PROXY``) to it. The proxy connects to exactly the
declared pairs and refuses the rest; with no route and no resolver in the job, a direct connection, a raw IP and
a DNS lookup fail there. ``--online`` is the same path to the Hugging Face hub's hosts (:data:`HUB_HOSTS`), unless
``--network open`` gives the job the bridge network as before. The proxy's network is ``bridge``, or
``MF_EGRESS_NETWORK``.

**Secrets.** ``--secret NAME=env:VAR|file:PATH``: the plan carries the reference, never the value; the docker
backend reads the value when it starts the job and writes it to a tmpfs folder (``/dev/shm``) mounted read-only
at ``/run/secrets``, the file 0400 and the job user's, removed with the job. ``HF_TOKEN`` with ``--online``
travels the same way (``HF_TOKEN_PATH``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from providers.errors import ConfigurationError, ImageError
from providers.secrets import check_name as check_secret_name

from . import LABEL_PREFIX, engine, project_labels, recipes
from .outcome import iter_lines

EGRESS_DIR = recipes.IMAGES_DIR / "egress"
#: What --online reaches, as documented by huggingface_hub: the hub's API and file CDNs (LFS and Xet storage).
HUB_HOSTS = [
    "huggingface.co:443",
    "cdn-lfs.huggingface.co:443",
    "cdn-lfs-us-1.huggingface.co:443",
    "cdn-lfs-eu-1.huggingface.co:443",
    "cas-bridge.xethub.hf.co:443",
    "cas-server.xethub.hf.co:443",
    "transfer.xethub.hf.co:443",
]
PROXY_PORT = 3128
SOCKET_DIR = "/run/mf-egress"
SECRETS_DIR = "/run/secrets"
#: The proxy runs as nobody: a uid apart from the job's, so the job cannot signal or trace it.
PROXY_USER = "65534:65534"
NETWORK_ENV = "MF_EGRESS_NETWORK"
KIND = "egress"


# -- what a job may reach --------------------------------------------------------------------------
def job_egress(cls: Any, online: bool, network: str | None) -> tuple[str, list[str]]:
    """The job's docker network mode and the host:port pairs its proxy allows (none: no proxy)."""
    from providers.protocol import declared_network

    if network not in (None, "open"):
        raise ConfigurationError(f"--network {network!r} is not a choice.", "Leave it out, or pass --network open.")
    if network == "open":
        if not online and not declared_network(cls):
            raise ConfigurationError("--network open gives a job the whole network; this one asks for none.",
                                     "Pass --online with it, or leave it out.")
        return "bridge", []
    allowed = list(declared_network(cls))
    if online:
        allowed += [h for h in getattr(cls, "online_network", HUB_HOSTS) if h not in allowed]
    return "none", allowed


def proxy_environment() -> dict[str, str]:
    url = f"http://127.0.0.1:{PROXY_PORT}"
    return {"MF_EGRESS_SOCKET": f"{SOCKET_DIR}/proxy.sock", "HTTPS_PROXY": url, "HTTP_PROXY": url,
            "https_proxy": url, "http_proxy": url, "NO_PROXY": "", "no_proxy": ""}


# -- secrets ------------------------------------------------------------------------------------------
def parse_secret(text: str) -> tuple[str, str]:
    """``NAME=env:VAR`` or ``NAME=file:PATH`` -> (NAME, reference); the reference is checked, the value not kept."""
    name, sep, source = text.partition("=")
    kind, colon, where = source.partition(":")
    if not sep or not colon or kind not in ("env", "file") or not where:
        raise ConfigurationError(f"--secret {text.split('=', 1)[0]}=...: write NAME=env:VAR or NAME=file:PATH.",
                                 "e.g. --secret CLOUD_API_KEY=env:CLOUD_API_KEY")
    check_secret_name(name)
    if kind == "file":
        where = str(Path(where).expanduser().resolve())
    reference = f"{kind}:{where}"
    read_secret(name, reference)  # now, before any container: a missing file or variable is one line
    return name, reference


def read_secret(name: str, reference: str) -> str:
    kind, _, where = reference.partition(":")
    if kind == "env":
        value = os.environ.get(where)
        if value is None:
            raise ConfigurationError(f"--secret {name}=env:{where}: the variable {where} is not set.",
                                     f"Set it (export {where}=...), or pass the secret from a file (file:PATH).")
        return value
    try:
        return Path(where).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"--secret {name}=file:{where}: no such file.", "Pass the path of the file "
                                 "that holds the secret.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"--secret {name}=file:{where}: cannot read it ({type(exc).__name__}).",
                                 "Pass a readable text file.") from None


def check_declared_secrets(cls: Any, provider: str, given: dict[str, str]) -> None:
    from providers.protocol import declared_secrets

    missing = [name for name in declared_secrets(cls) if name not in given]
    if missing:
        raise ConfigurationError(f"The {provider} provider needs the secret {missing[0]}, which was not passed.",
                                 f"Pass it: --secret {missing[0]}=env:VAR or --secret {missing[0]}=file:PATH.")


def secrets_root() -> Path:
    """A tmpfs on the host: the values never touch a disk."""
    for candidate in (os.environ.get("MF_SECRETS_TMPFS"), "/dev/shm", os.environ.get("XDG_RUNTIME_DIR")):  # noqa: S108 # nosec B108
        if candidate and Path(candidate).is_dir() and os.access(candidate, os.W_OK):
            return Path(candidate)
    raise ConfigurationError("No tmpfs to hold the job's secrets (/dev/shm is missing or not writable).",
                             "Mount a tmpfs at /dev/shm, or set MF_SECRETS_TMPFS to one.")


def write_secrets(job: str, secrets: dict[str, str], user: str) -> Path:
    """The job's secrets folder: one 0400 file per secret, owned by the job's user, in a 0500 folder."""
    folder = secrets_root() / f"mf-secrets-{job}"
    folder.mkdir(mode=0o700)
    uid, gid = (int(part) for part in user.split(":"))
    try:
        for name, reference in secrets.items():
            path = folder / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(read_secret(name, reference))
            if os.getuid() == 0:
                os.chown(path, uid, gid)
        os.chmod(folder, 0o500)
        if os.getuid() == 0:
            os.chown(folder, uid, gid)
    except BaseException:
        remove_secrets(folder)
        raise
    return folder


def remove_secrets(folder: Path) -> None:
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o700)
    shutil.rmtree(folder, ignore_errors=True)


# -- the proxy's image ---------------------------------------------------------------------------------
def image_tag() -> str:
    digest = hashlib.sha256()
    for part in ((EGRESS_DIR / "Dockerfile").read_bytes(), (EGRESS_DIR / "egress_proxy.py").read_bytes(),
                 recipes.BASE_RUNTIME.tag.encode()):
        digest.update(hashlib.sha256(part).digest())
    return f"{recipes.REPOSITORY}/egress:{digest.hexdigest()[:12]}"


def ensure_image(progress: Callable[[str], None]) -> str:
    """The proxy's image, built from images/egress/ where missing (seconds: one file on the base)."""
    from .images import ensure_base

    tag = image_tag()
    if engine.image_exists(tag):
        return tag
    base = ensure_base(recipes.BASE_RUNTIME, progress)
    progress(f"building {tag} (the egress proxy)")
    with tempfile.TemporaryDirectory(prefix="mf-egress-") as tmp:
        context = Path(tmp) / "context.tar"
        with tarfile.open(context, "w") as tar:
            for name in ("Dockerfile", "egress_proxy.py"):
                data = (EGRESS_DIR / name).read_bytes()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        with context.open("rb") as fh:
            engine.build_image(fh, tag, buildargs={"BASE": base}, labels=project_labels(KIND), on_line=progress)
    if not engine.image_exists(tag):
        raise ImageError(f"Building the egress proxy's image {tag} failed.", "Run `mf images build base` and retry.")
    return tag


# -- the proxy beside a job ------------------------------------------------------------------------------
def socket_folder(job_folder: Path, user: str) -> Path:
    """The folder the proxy's socket lives in: the proxy's user writes it, the job's user enters it."""
    folder = job_folder / "egress"
    folder.mkdir(mode=0o711)
    os.chmod(folder, 0o711)  # noqa: S103 # nosec B103 - entered, not listed, by the job's user; the socket is the proxy's
    if os.getuid() == 0:
        os.chown(folder, *(int(p) for p in PROXY_USER.split(":")))
    return folder


def proxy_user() -> str:
    """nobody when mf can hand the socket folder to it (root); else mf's own user, like the job's."""
    return PROXY_USER if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def start_proxy(image: str, job_container: Any, folder: Path, allowed: list[str], labels: dict[str, str]) -> Any:
    """The proxy container, in the job's PID namespace (it dies with the job), removed when it stops."""
    from docker.types import Mount as DockerMount

    network = os.environ.get(NETWORK_ENV) or "bridge"
    proxy_labels = {**labels, f"{LABEL_PREFIX}.kind": KIND, f"{LABEL_PREFIX}.egress-of": job_container.name}
    return engine.client().containers.run(
        image, [f"{SOCKET_DIR}/proxy.sock", *allowed], name=f"{job_container.name}-egress", detach=True,
        auto_remove=True, user=proxy_user(), network=network, pid_mode=f"container:{job_container.id}",
        mounts=[DockerMount(target=SOCKET_DIR, source=str(folder), type="bind", read_only=False)],
        read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=512, mem_limit="128m",
        labels=proxy_labels,
    )


_SHOWN = {"allowed": "info", "refused": "warning", "failed": "warning"}


def log_events(lines: list[str]) -> list[dict[str, Any]]:
    """The proxy's JSON lines that a user reads, as ``log`` events (the listening and closing lines are not)."""
    events = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            verdict = entry.get("egress")
            if verdict in _SHOWN:
                reason = f": {entry['reason']}" if entry.get("reason") and verdict != "allowed" else ""
                events.append({"v": 1, "event": "log", "level": _SHOWN[verdict],
                               "message": f"egress {verdict} {entry.get('method', '')} {entry.get('target', '')}{reason}"})
    return events


class EgressProxy:
    """The egress proxy beside a followed job: started in a thread (the job's start does not wait for it), its
    decisions streamed as they come, so that they reach the user as log events before the job's result."""

    def __init__(self, image: str, job_container: Any, folder: Path, allowed: list[str], labels: dict[str, str]) -> None:
        self._lines: list[str] = []
        self._shown = 0
        self._lock = threading.Lock()
        self._container: Any = None
        self._failure: BaseException | None = None
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(image, job_container, folder, allowed, labels),
                                        name="mf-egress-proxy", daemon=True)
        self._thread.start()

    def _run(self, image: str, job_container: Any, folder: Path, allowed: list[str], labels: dict[str, str]) -> None:
        try:
            try:
                self._container = start_proxy(image, job_container, folder, allowed, labels)
            finally:
                self.started.set()
            for raw in iter_lines(self._container.logs(stdout=True, stderr=False, stream=True, follow=True)):
                with self._lock:
                    self._lines.append(raw)
        except BaseException as exc:  # the job then fails to connect, and says so; mf reports why here
            self._failure = exc

    def new_events(self, final: bool = False) -> list[dict[str, Any]]:
        from docker.errors import DockerException

        if final and self._container is not None:  # what the stream has not delivered yet
            with contextlib.suppress(DockerException):
                snapshot = self._container.logs(stdout=True, stderr=False).decode("utf-8", errors="replace").splitlines()
                with self._lock:
                    if len(snapshot) > len(self._lines):
                        self._lines = snapshot
        with self._lock:
            fresh, self._shown = self._lines[self._shown:], len(self._lines)
        events = log_events(fresh)
        if final and self._failure is not None:
            events.append({"v": 1, "event": "log", "level": "error",
                           "message": f"the egress proxy did not start: {self._failure}"})
        return events

    def stop(self) -> None:
        from docker.errors import DockerException

        self._thread.join(timeout=10)
        if self._container is not None:  # it ends with the job (its PID namespace); this is for a job that never ran
            with contextlib.suppress(DockerException):
                self._container.remove(force=True)
