"""Writing contract events from inside a job container."""

from __future__ import annotations

import logging
import threading
from typing import IO, Any

from .contract import (
    ErrorEvent,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    ResultEvent,
    StageEvent,
    _Event,
    encode_event,
)


class EventWriter:
    """Writes one JSON event per line to ``stream`` and flushes each, so the host sees it at once."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: _Event) -> None:
        line = encode_event(event) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def stage(self, name: str, message: str = "") -> None:
        self.emit(StageEvent(name=name, message=message))

    def progress(self, current: float, total: float | None = None, unit: str = "", message: str = "") -> None:
        self.emit(ProgressEvent(current=current, total=total, unit=unit, message=message))

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self.emit(MetricEvent(name=name, value=value, step=step))

    def log(self, message: str, level: str = "info") -> None:
        self.emit(LogEvent(level=level, message=message))

    def result(self, provider: str, action: str, data: dict[str, Any]) -> None:
        self.emit(ResultEvent(provider=provider, action=action, **data))

    def error(self, kind: str, message: str, hint: str = "") -> None:
        self.emit(ErrorEvent(kind=kind, message=message, hint=hint))


class EventLogHandler(logging.Handler):
    """Forwards ``modelforge`` log records to the host as ``log`` events."""

    def __init__(self, writer: EventWriter) -> None:
        super().__init__(level=logging.INFO)
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.log(record.getMessage(), record.levelname.lower())
        except Exception:  # logging must never break the job
            self.handleError(record)
