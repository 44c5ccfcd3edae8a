"""The run history: a record of every job `mf` starts on this machine (`mf run`, `mf export`, `mf serve`), kept
in SQLite (WAL mode: two `mf` processes may write at once, and a crash leaves the last committed state).

A record is written when the job is asked for and updated when it ends. What `mf` did not see end is settled
when the history is read: a followed job whose `mf` is gone (killed) was interrupted; a detached job's state is
asked of its backend. Output folders that were moved or deleted are shown as such, never an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.errors import ConfigurationError, InterruptedJobError, ModelForgeError

from . import cache_dir
from .runstate import pid_alive

STATUSES = ("running", "finished", "failed", "interrupted")
#: what `mf runs` lists without --all (validate and load jobs are kept too, and shown with --all)
MAIN_KINDS = ("train", "export", "serve")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    dataset TEXT,
    output TEXT,
    backend TEXT,
    job TEXT,
    detached INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    host TEXT,
    mf_pid INTEGER,
    config TEXT,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started DESC);
"""
_COLUMNS = ("id", "kind", "provider", "model", "dataset", "output", "backend", "job", "detached", "status", "started",
            "ended", "host", "mf_pid", "config", "result", "error")


def db_path() -> Path:
    """$MF_RUNS_DB, else runs.sqlite in mf's cache folder."""
    return Path(os.environ["MF_RUNS_DB"]) if os.environ.get("MF_RUNS_DB") else cache_dir() / "runs.sqlite"


def connect(path: Path | None = None) -> sqlite3.Connection:
    path = path or db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)  # autocommit; each write is one statement
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


@dataclass
class Run:
    id: str
    kind: str
    status: str
    started: float
    provider: str | None = None
    model: str | None = None
    dataset: str | None = None
    output: str | None = None
    backend: str | None = None
    job: str | None = None
    detached: bool = False
    ended: float | None = None
    host: str | None = None
    mf_pid: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Run:
        data = dict(zip(_COLUMNS, row, strict=True))
        data["detached"] = bool(data["detached"])
        data["config"] = json.loads(data["config"] or "{}")
        data["result"] = json.loads(data["result"] or "{}")
        return cls(**data)

    @property
    def duration(self) -> float | None:
        end = self.ended if self.ended is not None else (time.time() if self.status == "running" else None)
        return None if end is None else max(0.0, end - self.started)

    @property
    def output_state(self) -> str:
        """Whether the output folder is still where the run wrote it."""
        if not self.output:
            return ""
        if self.output.startswith("pvc://") or self.backend == "kubernetes":
            return "on the cluster"
        return "" if Path(self.output).exists() else "moved or deleted"

    def summary(self) -> str:
        """The figure that says how it went: the final training loss and evaluation metrics; a server's
        requests; an error's first words."""
        r = self.result
        parts = []
        if r.get("train_loss") is not None:
            parts.append(f"loss {float(r['train_loss']):.4f}")
        parts += [f"{k} {float(v):.4f}" for k, v in sorted(r.items())
                  if k.startswith("eval_") and isinstance(v, int | float) and not k.endswith(("_runtime", "_per_second"))][:2]
        if self.kind == "serve" and "requests" in r:
            parts.append(f"{r['requests']} requests")
        if self.kind == "export" and r.get("files"):
            parts.append(", ".join(str(f.get("quantization", "")) for f in r["files"]))
        if not parts and self.error:
            parts.append(self.error[:60])
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _COLUMNS}
        data["duration"] = self.duration
        data["output_state"] = self.output_state or ("present" if self.output else None)
        return data


class RunRecord:
    """One run, as `mf` starts it. The record is written when its job is submitted (a request refused on the
    host, before any container, is not a run), or at once with ``lazy=False`` (a command of several jobs)."""

    def __init__(self, kind: str, *, provider: str | None, model: str | None, dataset: str | None = None,
                 output: str | None = None, backend: str = "docker", config: dict[str, Any] | None = None,
                 enabled: bool = True, lazy: bool = True) -> None:
        self.id = secrets.token_hex(4)
        self.kind = kind
        self.enabled = enabled  # e.g. not for a dry run: nothing runs
        self.written = False
        self._row = (self.id, kind, provider, model, dataset, _absolute(output), backend, time.time(),
                     socket.gethostname(), os.getpid(), json.dumps(config or {}, default=str))
        if not lazy:
            self._insert()

    def _insert(self) -> None:
        if self.written or not self.enabled:
            return
        try:
            with contextlib.closing(connect()) as conn:
                conn.execute(
                    "INSERT INTO runs (id, kind, provider, model, dataset, output, backend, status, started, host, "
                    "mf_pid, config) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)", self._row)
            self.written = True
        except sqlite3.Error:  # a history that cannot be written never stops a job
            self.enabled = False

    def _update(self, **fields: Any) -> None:
        if not self.written:
            return
        names = ", ".join(f"{name} = ?" for name in fields)
        values = [json.dumps(v, default=str) if isinstance(v, dict) else v for v in fields.values()]
        with contextlib.suppress(sqlite3.Error), contextlib.closing(connect()) as conn:
            conn.execute(f"UPDATE runs SET {names} WHERE id = ?", (*values, self.id))  # noqa: S608 # nosec B608 - our column names

    def submitted(self, job: str) -> None:
        self._insert()
        self._update(job=job)

    def detached(self, job: str) -> None:
        self._insert()
        self._update(job=job, detached=1)

    def finished(self, result: dict[str, Any]) -> None:
        self._insert()
        self._update(status="finished", ended=time.time(), result=_compact(result))

    def failed(self, error: BaseException) -> None:
        interrupted = isinstance(error, InterruptedJobError | KeyboardInterrupt)
        message = error.message if isinstance(error, ModelForgeError) else (str(error) or type(error).__name__)
        self._update(status="interrupted" if interrupted else "failed", ended=time.time(), error=message[:500])


@contextlib.contextmanager
def recorded(kind: str, **fields: Any) -> Iterator[RunRecord]:
    """Record the run inside the block: finished with its result (``record.finished``), failed or interrupted
    with the error that leaves the block."""
    record = RunRecord(kind, **fields)
    try:
        yield record
    except BaseException as exc:
        record.failed(exc)
        raise


def _absolute(path: str | None) -> str | None:
    if not path or "://" in path:
        return path
    return str(Path(path).expanduser().absolute())


def _compact(result: dict[str, Any]) -> dict[str, Any]:
    """What the history keeps of a result: scalars and small lists (not a generated text's whole length)."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, str) and len(value) > 200:  # noqa: PLR2004
            value = value[:200] + "..."
        out[key] = value
    return out


# -- reading --------------------------------------------------------------------------------------------------
def _settle(conn: sqlite3.Connection, runs: list[Run]) -> None:
    """Settle what `mf` did not see end: a followed job whose mf is gone, a detached job that ended."""
    here = socket.gethostname()
    detached = [r for r in runs if r.status == "running" and r.detached and r.job]
    for run in runs:
        if run.status != "running" or run.detached or run.host != here or not run.mf_pid:
            continue
        if not pid_alive(run.mf_pid):
            run.status, run.error = "interrupted", "mf stopped before the job ended (killed?)"
            conn.execute("UPDATE runs SET status = ?, error = ? WHERE id = ? AND status = 'running'",
                         (run.status, run.error, run.id))
    if detached:
        states = _backend_states({r.backend or "docker" for r in detached})
        for run in detached:
            state = states.get(run.job or "")
            if state is None:
                if run.backend not in states[""]:
                    continue  # its backend did not answer: it stays as it was
                _read_result(run)  # gone from its backend: finished if it left its result, else cancelled
                run.status = "finished" if run.result else "interrupted"
            elif state.startswith(("RUNNING", "CREATED", "PENDING", "CONFIGURING", "RESTARTING", "COMPLETING")):
                continue
            elif state.startswith(("CANCELLED", "PREEMPTED", "ENDED")):  # ENDED: gone without an exit code
                run.status = "interrupted"
            else:
                run.status = "finished" if state in ("COMPLETED", "EXITED(0)") else "failed"
                _read_result(run)
            run.ended = _ended(run)
            conn.execute("UPDATE runs SET status = ?, result = ?, ended = ? WHERE id = ?",
                         (run.status, json.dumps(run.result, default=str), run.ended, run.id))


def _ended(run: Run) -> float:
    """When a job mf did not follow ended: when it wrote its result, else now (when it was seen ended)."""
    with contextlib.suppress(OSError, TypeError):
        written = (Path(str(run.output)) / "result.json").stat().st_mtime
        if written >= run.started:
            return written
    return time.time()


def _read_result(run: Run) -> None:
    if run.output and not run.result:
        with contextlib.suppress(OSError, ValueError):
            path = Path(run.output) / "result.json"
            if path.stat().st_mtime >= run.started:  # this run's, not an earlier one's
                data = json.loads(path.read_text())
                run.result = _compact({k: v for k, v in data.items() if k != "event"})


def _backend_states(names: set[str]) -> dict[str, Any]:
    """Each listed job's state, by id; under "" the backends that answered."""
    from . import backends

    states: dict[str, Any] = {"": set()}
    for name in names:
        if name not in ("docker", "slurm"):
            continue
        try:
            rows = backends.create(name).list_jobs()
        except Exception:  # noqa: BLE001, S112 - no engine or scheduler now: the record stays as it was
            continue
        states[""].add(name)
        states.update({row["id"]: str(row["state"]) for row in rows})
    return states


def list_runs(all_kinds: bool = False, limit: int | None = None) -> list[Run]:
    with contextlib.closing(connect()) as conn:
        query = f"SELECT {', '.join(_COLUMNS)} FROM runs"  # noqa: S608 # nosec B608 - our column names
        if not all_kinds:
            query += f" WHERE kind IN ({', '.join('?' * len(MAIN_KINDS))})"
        query += " ORDER BY started DESC"
        if limit:
            query += f" LIMIT {int(limit)}"
        runs = [Run.from_row(row) for row in conn.execute(query, () if all_kinds else MAIN_KINDS)]
        _settle(conn, runs)
    return runs


def find(ref: str) -> Run:
    """A run by its id, a unique prefix of it, or its output folder (the newest run that wrote there)."""
    with contextlib.closing(connect()) as conn:
        select = f"SELECT {', '.join(_COLUMNS)} FROM runs"  # noqa: S608 # nosec B608 - our column names
        rows = conn.execute(f"{select} WHERE id LIKE ? ORDER BY started DESC", (ref.replace("%", "") + "%",)).fetchall()
        if len(rows) > 1 and not any(r[0] == ref for r in rows):
            raise ConfigurationError(f"{ref!r} is the start of {len(rows)} run ids.",
                                     "Give more of it (`mf runs` lists them).")
        rows = [r for r in rows if r[0] == ref] or rows
        if not rows:
            output = _absolute(ref)
            rows = conn.execute(f"{select} WHERE output = ? ORDER BY started DESC LIMIT 1", (output,)).fetchall()
        if not rows:
            raise ConfigurationError(f"No run {ref!r} in this machine's history.",
                                     "`mf runs --all` lists them; RUN is an id, its start, or an output folder.")
        run = Run.from_row(rows[0])
        _settle(conn, [run])
    return run


def forget(run: Run) -> None:
    with contextlib.closing(connect()) as conn:
        conn.execute("DELETE FROM runs WHERE id = ?", (run.id,))


# -- a run's files --------------------------------------------------------------------------------------------
def metrics(output: str | None) -> list[dict[str, Any]]:
    """The run's metrics.jsonl, line by line (a cut-off last line is skipped)."""
    if not output:
        return []
    rows = []
    with contextlib.suppress(OSError):
        for line in (Path(output) / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def details(run: Run) -> dict[str, Any]:
    """What a run's output folder holds: manifest, checkpoints, top-level files, metrics.jsonl's rows."""
    manifest: dict[str, Any] = {}
    checkpoints: list[str] = []
    files: list[str] = []
    if run.output and "://" not in run.output and Path(run.output).is_dir():
        out = Path(run.output)
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads((out / "manifest.json").read_text())
        checkpoints = sorted((p.name for p in (out / "checkpoints").glob("checkpoint-*")),
                             key=lambda n: int(n.rsplit("-", 1)[1]) if n.rsplit("-", 1)[1].isdigit() else 0)
        files = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    return {"manifest": manifest, "checkpoints": checkpoints, "files": files, "metrics": metrics(run.output)}


def loss_series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """metrics.jsonl's train and eval losses against the step."""
    return {"loss": [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r],
            "eval_loss": [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r and "step" in r]}


def curve(points: dict[str, list[tuple[float, float]]], width: int = 60, height: int = 12) -> list[str]:
    """Series of (step, value) drawn as text: one mark per series, the y axis labelled, steps below."""
    marks = "*o+x#"
    series = {name: pts for name, pts in points.items() if pts}
    if not series:
        return []
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    grid = [[" "] * width for _ in range(height)]
    for mark, pts in zip(marks, series.values(), strict=False):
        for x, y in pts:
            col = 0 if x1 == x0 else round((x - x0) / (x1 - x0) * (width - 1))
            line = round((y1 - y) / (y1 - y0) * (height - 1))
            grid[line][col] = mark
    label = max(len(f"{y1:.4g}"), len(f"{y0:.4g}"))
    lines = []
    for i, cells in enumerate(grid):
        value = y1 - (y1 - y0) * i / (height - 1)
        tick = f"{value:.4g}" if i in (0, height // 2, height - 1) else ""
        lines.append(f"{tick:>{label}} |" + "".join(cells))
    lines.append(" " * label + " +" + "-" * width)
    left, right = f"step {x0:g}", f"{x1:g}"
    lines.append(" " * (label + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    lines.append(" " * (label + 2) + "   ".join(f"{m} {name}" for m, name in zip(marks, series, strict=False)))
    return lines
