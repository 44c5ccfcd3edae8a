"""`mf serve` and `mf chat` on the host: a serve job is a job like every other (``jobs.run_job``: the
provider's image, its hardening, `mf jobs`), with three additions made here:

- a state folder of its own under ``~/.cache/modelforge/servers/NAME`` (0700): the API key (0600; mounted
  read-only into the container as a file: never in argv, the environment or ``docker inspect``), and the
  folder for the server's Unix socket (mounted read-write at /serve);
- the relay (``relay.py``), a process that publishes that socket on 127.0.0.1:PORT: the container keeps
  ``--network none``;
- labels on the container (the URL, the state folder) by which `mf chat` and `mf jobs` find the server.

The docker backend's ``finish`` stops the relay and removes the state folder, however the server ends.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.errors import ConfigurationError, ModelAccessError

from . import LABEL_PREFIX, cache_dir

URL_LABEL = f"{LABEL_PREFIX}.serve-url"
STATE_LABEL = f"{LABEL_PREFIX}.serve-state"
MODEL_ID_LABEL = f"{LABEL_PREFIX}.serve-model"
KEY_ENV = "MF_SERVE_API_KEY"
#: where the container finds the key and the socket folder (providers/runtime/serve.py)
KEY_IN_JOB = "/run/mf-serve/api-key"
SOCKET_DIR_IN_JOB = "/serve"
ADAPTER_IN_JOB = "/adapter"
READY_TIMEOUT_SECONDS = 600.0


def servers_root() -> Path:
    return cache_dir() / "servers"


@dataclass
class ServeRequest:
    provider: str
    model: Path | str
    adapter: Path | None = None
    model_id: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    expose: bool = False
    cors_origins: list[str] = field(default_factory=list)
    max_tokens_cap: int = 2048
    merge_adapter: bool = True
    provider_config: dict[str, Any] = field(default_factory=dict)
    memory: str | None = None
    cpus: float | None = None
    gpus: str | None = None
    flavour: str | None = None
    registry: str | None = None
    build: bool = False
    detach: bool = False


def from_run(run: Path) -> tuple[Path, Path]:
    """A finished train output: its base model (as the run's manifest records it) and its adapter."""
    run = run.expanduser()
    manifest = run / "manifest.json"
    if not manifest.is_file():
        raise ConfigurationError(f"{run} is not a finished training run (it has no manifest.json).",
                                 "Finish it first (mf run ... train --resume), or pass --model and --adapter.")
    base = json.loads(manifest.read_text(encoding="utf-8")).get("model_source")
    if not base:
        raise ConfigurationError(f"The run in {run} does not record its base model's folder.",
                                 "Pass the base model with --model and the adapter with --adapter.")
    return Path(base), run / "adapter"


def check_request(req: ServeRequest) -> None:
    """What can be refused before anything starts."""
    if req.host not in ("127.0.0.1", "localhost", "::1") and not req.expose:
        raise ConfigurationError(
            f"--host {req.host} would let other machines reach the server; mf serve listens on 127.0.0.1 only.",
            "If you mean it, add --expose and --api-key KEY (anyone who can reach the port and has the key can "
            "use the model); or use an SSH tunnel to 127.0.0.1.")
    if req.expose and not (req.api_key or os.environ.get(KEY_ENV)):
        raise ConfigurationError("--expose needs a key you chose (--api-key or MF_SERVE_API_KEY), so that the "
                                 "clients of other machines can be given it.", "Add --api-key KEY.")
    key = req.api_key or os.environ.get(KEY_ENV)
    if key is not None and (len(key) < 8 or any(c.isspace() for c in key)):  # noqa: PLR2004
        raise ConfigurationError("The API key must be at least 8 characters, without spaces.",
                                 "Give a longer --api-key, or leave it out for a random one.")
    if req.adapter is not None and not (req.adapter.expanduser() / "adapter_config.json").is_file():
        raise ModelAccessError(f"{req.adapter} is not a LoRA adapter (no adapter_config.json).",
                               "Pass the adapter/ folder of a finished run with --adapter.")


def default_model_id(req: ServeRequest) -> str:
    model = Path(str(req.model))
    name = model.stem if model.suffix == ".gguf" else model.name or str(req.model)
    if req.adapter is not None:
        adapter = req.adapter.expanduser().resolve()
        name += "+" + (adapter.parent.name if adapter.name == "adapter" else adapter.name)
    return name


class ServerState:
    """The server's folder on this machine: key, socket folder, the relay's pid."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def create(cls, key: str | None, job_uid: tuple[int, int]) -> ServerState:
        root = servers_root()
        root.mkdir(parents=True, exist_ok=True)
        folder = root / f"serve-{secrets.token_hex(4)}"
        folder.mkdir(mode=0o700)
        state = cls(folder)
        state.key_file.write_text((key or secrets.token_urlsafe(32)) + "\n", encoding="utf-8")
        os.chmod(state.key_file, 0o600)
        state.socket_dir.mkdir(mode=0o700)
        if os.getuid() == 0:  # the job runs as the images' unprivileged user: it reads the key, makes the socket
            for path in (folder, state.key_file, state.socket_dir):
                os.chown(path, *job_uid)
        return state

    @property
    def key_file(self) -> Path:
        return self.folder / "api-key"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "sock"

    @property
    def socket(self) -> Path:
        return self.socket_dir / "server.sock"

    def key(self) -> str:
        return self.key_file.read_text(encoding="utf-8").strip()

    def start_relay(self, host: str, port: int, owner_pid: int | None) -> tuple[subprocess.Popen[bytes], int]:
        """Start the relay; its port (the one asked, or a free one for 0), or one line when it cannot listen."""
        relay = subprocess.Popen(  # noqa: S603 - our own module, with this interpreter
            [sys.executable, "-m", "orchestrator.relay", "--host", host, "--port", str(port),
             "--socket", str(self.socket), "--state", str(self.folder), "--owner-pid", str(owner_pid or 0)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                         os.environ.get("PYTHONPATH")]))})
        assert relay.stdout is not None
        line = relay.stdout.readline().decode().strip()
        relay.stdout.close()
        if not line.startswith("listening "):
            relay.wait()
            why = line.removeprefix("error: ") or f"the relay exited with {relay.returncode}"
            raise ConfigurationError(f"Cannot serve on {why}.",
                                     "Pick another port with --port (0: any free port), or stop what uses it.")
        return relay, int(line.rsplit(":", 1)[1])

    def remove(self) -> None:
        stop_relay(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)


def stop_relay(folder: Path) -> None:
    try:
        pid = int((folder / "relay.pid").read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def cleanup(labels: dict[str, str]) -> None:
    """What a serve container leaves on this machine, once it has ended: the relay and the state folder."""
    folder = labels.get(STATE_LABEL)
    if folder and Path(folder).parent == servers_root():
        ServerState(Path(folder)).remove()


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("127.0.0.1", "localhost") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def health(host: str, port: int, timeout: float = 2.0) -> int:
    """The status of GET /health (0 when nothing answers)."""
    wildcard = host in ("0.0.0.0", "::", "localhost")  # noqa: S104 # nosec B104 - asked through loopback
    conn = http.client.HTTPConnection("127.0.0.1" if wildcard else host.strip("[]"), port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def wait_ready(host: str, port: int, ended: Callable[[], bool], timeout: float = READY_TIMEOUT_SECONDS) -> bool:
    """Poll /health until it answers 200 (True), or the job has ended (False)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if health(host, port) == 200:  # noqa: PLR2004
            return True
        if ended():
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    raise ConfigurationError(f"The server did not answer /health within {timeout:.0f} s.",
                             "`mf jobs logs` shows what it did; a big model may need more memory.")


# -- the servers running on this machine -------------------------------------------------------------
@dataclass
class RunningServer:
    job: str
    url: str
    model_id: str
    key_file: Path | None
    provider: str


def running_servers() -> list[RunningServer]:
    from . import engine

    rows = []
    for container in engine.job_containers(action="serve", host=socket.gethostname()):
        if container.status != "running":
            continue
        labels = container.labels
        state = labels.get(STATE_LABEL)
        rows.append(RunningServer(job=f"docker-{container.name}", url=labels.get(URL_LABEL, ""),
                                  model_id=labels.get(MODEL_ID_LABEL, ""),
                                  key_file=Path(state) / "api-key" if state else None,
                                  provider=labels.get(f"{LABEL_PREFIX}.provider", "")))
    return rows


def pick_server(to: str | None) -> RunningServer:
    """The server `mf chat` talks to: the one running, or the one --to names (its job id or URL)."""
    if to and to.startswith(("http://", "https://")):
        return RunningServer(job="", url=to.rstrip("/").removesuffix("/v1"), model_id="", key_file=None, provider="")
    servers = running_servers()
    if to:
        chosen = [s for s in servers if to in (s.job, s.job.removeprefix("docker-"), s.url)]
        if not chosen:
            raise ConfigurationError(f"No running server is called {to}.",
                                     "`mf jobs list` shows the servers; --to takes a job id or a URL.")
        return chosen[0]
    if not servers:
        raise ConfigurationError("No server is running on this machine.",
                                 "Start one with `mf serve --provider P --model M`, or give `mf chat` "
                                 "--provider and --model to start one for this chat.")
    if len(servers) > 1:
        names = ", ".join(f"{s.job} ({s.url})" for s in servers)
        raise ConfigurationError(f"{len(servers)} servers are running: {names}.", "Pick one with --to JOB|URL.")
    return servers[0]


# -- starting one -------------------------------------------------------------------------------------
@dataclass
class Ready:
    """What `mf serve` prints once /health answers."""

    url: str
    model_id: str
    key_file: Path
    job: str | None
    seconds: float  # from the call to /health's first 200


def serve(req: ServeRequest, on_event: Callable[[Any], None], on_build: Callable[[str], None],
          on_ready: Callable[[Ready], None], on_layer: Callable[[dict[str, Any]], None] = lambda e: None,
          on_submit: Callable[[str], None] = lambda job: None) -> dict[str, Any]:
    """Run the server: followed until Ctrl-C / SIGTERM (then its result, or the interrupt), or detached (the
    job's id once /health answers)."""
    from providers.contract import StageEvent

    from . import checks
    from .jobs import JobRequest, run_job

    started = time.perf_counter()
    check_request(req)
    model_id = req.model_id or default_model_id(req)
    state = ServerState.create(req.api_key or os.environ.get(KEY_ENV), checks.job_user())
    relay = None
    try:
        if req.adapter is not None:
            checks.check_job_user_can_read(req.adapter.expanduser().resolve())
        relay, port = state.start_relay(req.host, req.port, None if req.detach else os.getpid())
        url = url_for(req.host, port)
        hosts = [] if req.expose else [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
        options: dict[str, Any] = {"serve": {
            "model_id": model_id, "socket": f"{SOCKET_DIR_IN_JOB}/{state.socket.name}", "key_file": KEY_IN_JOB,
            "allowed_hosts": hosts, "cors_origins": list(req.cors_origins), "max_tokens_cap": req.max_tokens_cap}}
        mounts: list[tuple[Path, str, bool]] = [(state.socket_dir, SOCKET_DIR_IN_JOB, False),
                                                (state.key_file, KEY_IN_JOB, True)]
        if req.adapter is not None:
            mounts.append((req.adapter.expanduser().resolve(), ADAPTER_IN_JOB, True))
            options.update(adapter=ADAPTER_IN_JOB, merge_adapter=req.merge_adapter)
        request = JobRequest(provider=req.provider, action="serve", model=str(req.model),
                             provider_config=dict(req.provider_config), memory=req.memory, cpus=req.cpus,
                             gpus=req.gpus, flavour=req.flavour, registry=req.registry, build=req.build,
                             detach=req.detach, options=options, mounts=mounts,
                             labels={URL_LABEL: url, STATE_LABEL: str(state.folder), MODEL_ID_LABEL: model_id})
        ready = Ready(url=url, model_id=model_id, key_file=state.key_file, job=None, seconds=0.0)

        def on_job_event(event: Any) -> None:
            on_event(event)
            if isinstance(event, StageEvent) and event.name == "serve":  # the server is about to listen
                if wait_ready(req.host, port, ended=lambda: False, timeout=30):
                    ready.seconds = time.perf_counter() - started
                    on_ready(ready)

        result = run_job(request, on_event=on_job_event, on_build=on_build, on_layer=on_layer, on_submit=on_submit)
        if not result.get("detached"):
            return result
        job = str(result["job"])
        ready.job = job
        if not wait_ready(req.host, port, ended=lambda: not _job_running(job)):
            _raise_job_error(job)
        ready.seconds = time.perf_counter() - started
        on_ready(ready)
        return {**result, "url": url, "model_id": model_id, "key_file": str(state.key_file),
                "ready_seconds": round(ready.seconds, 3)}
    except BaseException:
        if relay is not None and relay.poll() is None:
            relay.terminate()
        state.remove()
        raise
    finally:
        if not req.detach:
            state.remove()


def _job_running(job: str) -> bool:
    from . import backends

    return bool(backends.for_job(job).is_running(job))


def _raise_job_error(job: str) -> None:
    """A detached server that ended before /health answered: its own error, and nothing left behind."""
    from . import backends
    from .outcome import EventLines

    backend = backends.for_job(job)
    events = EventLines(lambda event: None)
    backend.read_events(job, events)
    backend.finish(job)
    events.raise_error()
    raise ConfigurationError("The server stopped before it answered /health.",
                             "Run mf serve without --detach to see its output.")
