"""How `mf` shows a job: rich on a terminal, JSON lines with --json (stdout holds only events)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from providers.errors import ModelForgeError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from providers.contract import ProgressEvent

# The event classes (pydantic) and rich's progress and table modules load when the first event
# or table is shown, not when `mf` starts: `mf --help` and `mf providers` stay fast.

# Piped output is not cut to 80 columns: tables stay whole for scripts and logs.
stderr_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
stdout_console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def format_error(exc: ModelForgeError) -> str:
    """One line: what went wrong, then what to do next."""
    message = exc.message.strip().rstrip(".")
    return f"Error: {message}." + (f" {exc.hint.strip()}" if exc.hint else "")


class JsonRenderer:
    """Every event as one JSON line on stdout; build output on stderr."""

    def on_event(self, event: Any) -> None:
        from providers.contract import event_payload

        print(json.dumps(event_payload(event), ensure_ascii=False), flush=True)

    def on_build(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def on_error(self, exc: ModelForgeError) -> None:
        from providers.contract import ErrorEvent, event_payload

        payload = event_payload(ErrorEvent(kind=exc.kind, message=exc.message, hint=exc.hint))
        print(json.dumps(payload, ensure_ascii=False), flush=True)


class RichRenderer:
    """Stages and progress on stderr; the result as a table on stdout."""

    def __init__(self) -> None:
        self.quiet = not stderr_console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def _bar(self, event: ProgressEvent) -> None:
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[message]}"), console=stderr_console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(event.unit or "progress", total=event.total, message="")
        assert self._task is not None
        self._progress.update(self._task, completed=event.current, total=event.total, message=event.message)

    def _end_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._task = None, None

    def on_event(self, event: Any) -> None:
        from providers.contract import LogEvent, MetricEvent, ProgressEvent, ResultEvent, StageEvent, event_payload

        if not isinstance(event, ProgressEvent | MetricEvent | LogEvent):
            self._end_bar()
        if isinstance(event, StageEvent):
            stderr_console.print(f"[bold cyan]▸ {escape(event.name)}[/] {escape(event.message)}")
        elif isinstance(event, ProgressEvent):
            if not self.quiet and event.total:
                self._bar(event)
            else:
                total = f"/{event.total:g}" if event.total else ""
                stderr_console.print(escape(f"  {event.current:g}{total} {event.unit} {event.message}".rstrip()))
        elif isinstance(event, MetricEvent) and self._progress is not None:
            pass  # the bar's message shows the training metrics
        elif isinstance(event, MetricEvent):
            step = f" (step {event.step})" if event.step is not None else ""
            stderr_console.print(f"  [dim]{escape(event.name)} = {event.value:.4g}{step}[/]")
        elif isinstance(event, LogEvent):
            if not self.quiet or event.level in ("warning", "error"):
                stderr_console.print(f"  [dim]{escape(event.level)}: {escape(event.message)}[/]")
        elif isinstance(event, ResultEvent):
            self.show_result(event_payload(event))

    def on_build(self, line: str) -> None:
        # The builder's chatter (intermediate containers, layer ids, pip's lines) stays out.
        if line.startswith("Step ") or line.startswith(("building", "staging", "Successfully tagged")):
            stderr_console.print(f"[dim]build[/] {escape(line[:160])}", soft_wrap=True)

    def on_error(self, exc: ModelForgeError) -> None:
        self._end_bar()
        # a message is text, never markup: "pip install 'modelforge[kubernetes]'" keeps its brackets
        stderr_console.print(f"[bold red]{escape(format_error(exc))}[/]", soft_wrap=True)

    @staticmethod
    def show_result(payload: dict[str, Any]) -> None:
        from rich.table import Table

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in payload.items():
            if key in ("event", "v"):
                continue
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
                value = f"{value:,}"
            elif key == "backend" and isinstance(value, dict):
                value = _backend_line(value)
            elif isinstance(value, dict | list):
                value = json.dumps(value)
            table.add_row(key, str(value))
        stdout_console.print(table)


def _backend_line(backend: dict[str, Any]) -> str:
    """One line: ``CUDA0 (NVIDIA H100) + CPU (AMD EPYC) · 31/31 layers on the GPU · libggml-cpu-zen4.so``."""
    devices = " + ".join(f"{d.get('name')} ({d.get('description')})" for d in backend.get("devices", []))
    parts = [devices or "no devices listed"]
    if backend.get("layers") is not None:
        parts.append(f"{backend.get('layers_offloaded', 0)}/{backend['layers']} layers on the GPU")
    if backend.get("cpu_backend"):
        parts.append(str(backend["cpu_backend"]))
    return " · ".join(parts)


class LayerProgress:
    """`docker pull` / `docker push` style progress: a bar per layer on a terminal, a line per finished
    layer otherwise. Feed it the engine's stream events; ``{"mf": "end"}`` (sent when a transfer ends)
    closes the bars, so a job's own progress display can follow."""

    DONE = ("Pushed", "Layer already exists", "Pull complete", "Already exists", "Mounted from")
    END = {"mf": "end"}

    def __init__(self) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> LayerProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._tasks = None, {}

    def __call__(self, event: dict[str, Any]) -> None:
        if event == self.END:
            self._stop()
            return
        layer, status = event.get("id"), str(event.get("status", ""))
        if not layer or ":" in str(layer):  # tags and digests, not layers
            return
        detail = event.get("progressDetail") or {}
        if not stderr_console.is_terminal:
            if status.startswith(self.DONE):
                stderr_console.print(f"  [dim]{layer}: {status}[/]")
            return
        if self._progress is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self._progress = Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), console=stderr_console, transient=True)
            self._progress.start()
        task = self._tasks.get(layer)
        if task is None:
            task = self._tasks[layer] = self._progress.add_task(f"{layer} {status}", total=None)
        self._progress.update(task, description=f"{layer} {status}", completed=detail.get("current"),
                              total=detail.get("total"))
        if status.startswith(self.DONE):
            self._progress.update(task, completed=detail.get("total") or 1, total=detail.get("total") or 1)
