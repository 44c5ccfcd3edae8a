"""The entrypoint of every provider image: ``python -m providers.runtime [SPEC]`` runs ``main``.

Reads the job spec, runs the action with the registered provider, and speaks the contract
on stdout. Anything else that writes to stdout (a library's print, a C extension) is moved to
stderr first, so the event stream stays clean.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from ..contract import JOB_SPEC_PATH, JobSpec
from ..errors import InterruptedJobError, ModelAccessError, ModelForgeError
from ..events import EventLogHandler, EventWriter
from ..log import logger

DEBUG_ENV = "MF_DEBUG"
#: Set by `mf` when it holds the job's stdin open for the run's life (an attached run).
STOP_ON_STDIN_EOF_ENV = "MF_STOP_ON_STDIN_EOF"


def _private_stdout() -> Any:
    """Keep the real stdout for events and point file descriptor 1 at stderr."""
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    return os.fdopen(events_fd, "w", buffering=1, encoding="utf-8")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_when_stdin_closes() -> None:
    """`mf` keeps the job's stdin open while it follows the job; its end means `mf` is gone (killed, its
    machine lost): stop as for SIGTERM, so a training job saves a checkpoint and nothing runs unattended."""

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        logger.warning("mf stopped following this job (its input closed): stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="mf-stdin-watch", daemon=True).start()


def _write_result_file(output_dir: str, payload: dict[str, Any]) -> None:
    """Write result.json atomically: a half-written file is never left under the final name."""
    target = Path(output_dir) / "result.json"
    tmp = target.with_name(f".result.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def run_job(job: JobSpec, events: EventWriter) -> dict[str, Any]:
    from ..provider_factory import create_provider
    from .actions import run_action

    if job.action == "check":  # creating the provider is one of the checks
        from .check import run_check

        return run_check(job, events)
    provider = create_provider(job.provider, job.provider_config)
    return run_action(provider, job, events)


def _launch(dist: dict[str, Any], spec_path: Path, out: Any, events: EventWriter, job: JobSpec) -> int:
    """The launcher of a job of several ranks (see ``distributed.py``): its exit code, and when no rank
    ended the event stream, the one error that says which rank failed and how."""
    from ..contract import EXIT_CODES
    from .distributed import launch

    code, how, cause = launch(dist, str(spec_path), out)
    if code == 0 and (how == "result" or int(dist.get("node_rank", 0)) > 0):  # rank 0 speaks for the job
        return 0
    if how is not None and how != "result":
        return EXIT_CODES.get(how, 1)
    why = cause or f"torchrun exited with {code}"
    if why.startswith("the rendezvous"):
        events.error("container", f"{job.provider} {job.action}: {why}.",
                     "Each node needs the image and the shared folders, and must reach the first node's address "
                     "(the containers use the host's network); the scheduler's log says why a node did not start.")
        return EXIT_CODES["container"]
    hint = ("Signal 9 is often the kernel's OOM killer: give the job more memory (--memory) or fewer ranks "
            "(--nproc). The container's stderr has every rank's output." if "Signal 9" in why or "-9" in why
            else "The container's stderr has every rank's output (set MF_DEBUG=1 to see tracebacks).")
    events.error("container", f"{job.provider} {job.action}: {why}; torchrun stopped the other ranks.", hint)
    return EXIT_CODES["container"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec_path = Path(args[0]) if args else Path(str(JOB_SPEC_PATH))
    from .distributed import events_stream

    stdout_events = _private_stdout()
    events = EventWriter(events_stream() or stdout_events)  # a torchrun worker: the launcher's pipe
    logger.addHandler(EventLogHandler(events))
    logger.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _on_sigterm)
    from .egress import start_forwarder

    start_forwarder()  # a provider that calls out: its only way out is the egress proxy
    if os.environ.get(STOP_ON_STDIN_EOF_ENV) == "1":
        _stop_when_stdin_closes()
    provider_name, action = "?", "?"
    try:
        try:
            text = spec_path.read_text(encoding="utf-8")
        except OSError as exc:
            from ..errors import ConfigurationError

            raise ConfigurationError(f"Cannot read the job spec {spec_path}: {exc.strerror}.") from None
        job = JobSpec.from_json(text)
        provider_name, action = job.provider, job.action
        from .distributed import requested, world

        dist = requested(job.options) if job.action == "train" else None
        if dist and "LOCAL_RANK" not in os.environ:  # this process launches the ranks and speaks for them
            return _launch(dist, spec_path, stdout_events, events, job)
        data = run_job(job, events)
        payload = {"provider": job.provider, "action": job.action, **data}
        if job.output_dir and world().is_main:
            _write_result_file(job.output_dir, {"event": "result", **payload})
        events.result(job.provider, job.action, data)
        return 0
    except ModelForgeError as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        events.error(exc.kind, exc.message, exc.hint)
        return exc.exit_code
    except PermissionError as exc:
        events.error("model_access", f"Permission denied inside the job: {exc.filename}",
                     "Make the file readable by the job's user (chmod a+r), then run again.")
        return ModelAccessError.exit_code
    except KeyboardInterrupt:
        err = InterruptedJobError(f"The {action} job of provider {provider_name} was interrupted.")
        events.error(err.kind, err.message, err.hint)
        return err.exit_code
    except Exception as exc:  # an unexpected failure still ends the stream with an error event
        traceback.print_exc()
        events.error(
            "internal",
            f"{provider_name} {action} failed: {type(exc).__name__}: {exc}",
            f"This is a bug; the container's stderr has the traceback (set {DEBUG_ENV}=1 to see it).",
        )
        return 1

