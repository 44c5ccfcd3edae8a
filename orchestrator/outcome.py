"""The last stage of a job: its event stream decoded (the same on every backend) and its end turned into
the result, or into the same one-line error whichever backend ran it."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from providers.contract import ErrorEvent, ResultEvent, decode_event, event_payload
from providers.errors import ContainerError, InterruptedJobError, OutOfMemoryError, error_from_kind

EventSink = Callable[[Any], None]


@dataclass(frozen=True)
class Exit:
    """How a job's container ended."""

    code: int
    oom: bool = False
    stderr_tail: str = ""


class EventLines:
    """Decodes a job's stdout, line by line, into contract events: each is shown as it comes; the result
    and the error are kept for the job's outcome."""

    def __init__(self, on_event: EventSink, image: str | None = None) -> None:
        self.on_event = on_event
        self.image = image
        self.result: dict[str, Any] | None = None
        self.error: ErrorEvent | None = None

    def __call__(self, line: str) -> None:
        try:
            event = decode_event(line)
        except ValueError:
            return  # not ours: the entrypoint keeps stdout for events, so this is rare noise
        if isinstance(event, ResultEvent) and self.image:  # which build ran it: provider, flavour, content tag
            event = event.model_copy(update={"image": self.image})
        self.on_event(event)
        if isinstance(event, ResultEvent):
            self.result = event_payload(event)
        elif isinstance(event, ErrorEvent):
            self.error = event

    def raise_error(self) -> None:
        """Raise the job's reported error, if it reported one (shown already: it is not shown twice)."""
        if self.error is not None:
            exc = error_from_kind(self.error.kind, self.error.message, self.error.hint)
            exc.reported = True
            raise exc


def outcome(events: EventLines, end: Exit, image: str) -> dict[str, Any]:
    """The job's result, or its error raised as the same one-line error on every backend."""
    if not end.oom:
        events.raise_error()
    if end.code == 0 and events.result is not None:
        return events.result
    if end.oom or end.code == 137:
        raise OutOfMemoryError(
            "The job ran out of memory and was killed." if end.oom
            else "The job was killed (exit 137), most likely for lack of memory.",
            exit_status=end.code, image=image, stderr_tail=end.stderr_tail,
        )
    if end.code == 130:
        raise InterruptedJobError("Stopped: the job was interrupted.", "Run the command again to start over.")
    last = end.stderr_tail.splitlines()[-1] if end.stderr_tail else "no output"
    raise ContainerError(
        f"The job container exited with {end.code} without a result: {last[:200]}",
        "Rerun with MF_DEBUG=1 to see the container's output.",
        exit_status=end.code, image=image, stderr_tail=end.stderr_tail,
    )


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a followed job as Ctrl-C does."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def iter_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Whole, non-empty lines from a stream of byte chunks."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if pending.strip():
        yield pending.decode("utf-8", errors="replace")
