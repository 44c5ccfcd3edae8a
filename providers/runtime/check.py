"""``mf providers check`` inside the provider's image: the guide's step 4 ("test your provider") as a job.

Each check is a record ``{"name", "ok", "detail", "seconds"}`` (``ok`` None: not applicable). The job
itself succeeds whenever the checks ran; the host prints them and exits non-zero when one failed.

With ``options["script"]`` the job instead runs a user's test script (the guide's
``test_custom_provider.py``, unchanged): its ✅/❌ lines become the records. The script names its own
model id; with ``options["swap_model"]`` every provider it creates through ModelForge's factory reads the
job's model (``mf providers check --model``) wherever the script passes a model id.
"""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..contract import JobSpec
from ..errors import ModelForgeError
from ..events import EventWriter
from ..log import logger

PASS, FAIL = "✅", "❌"


def _record(name: str, ok: bool | None, detail: str, seconds: float = 0.0) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, "seconds": round(seconds, 3)}


def _why(exc: BaseException, want: str) -> str:
    """One line for a provider method's exception; a bare one says which error the protocol asks for."""
    message = str(exc).splitlines()[0] if str(exc) else "(no message)"
    if isinstance(exc, ModelForgeError):
        return f"{type(exc).__name__}: {message}"
    return (f"raised a bare {type(exc).__name__}: {message} (raise {want} with a message a user can act on; "
            "a bare exception reaches the user as an internal error)")


def _timed(name: str, want: str, call: Callable[[], Any], describe: Callable[[Any], str]) -> tuple[dict[str, Any], Any]:
    started = time.perf_counter()
    try:
        value = call()
    except Exception as exc:
        return _record(name, False, _why(exc, want), time.perf_counter() - started), None
    return _record(name, True, describe(value), time.perf_counter() - started), value


def _type_name(value: Any) -> str:
    return f"{type(value).__module__.split('.')[0]}.{type(value).__name__}"


def pad_token_check(tokenizer: Any) -> dict[str, Any]:
    """Training and batched generation need a pad token; the guide's fallback is the eos token."""
    if not hasattr(tokenizer, "pad_token"):
        return _record("pad token", None, f"{_type_name(tokenizer)} has no pad_token attribute: not a transformers tokenizer")
    pad, eos = tokenizer.pad_token, getattr(tokenizer, "eos_token", None)
    if pad is None:
        return _record("pad token", False, "the tokenizer has no pad token" + (
            f"; set it in load_tokenizer (the eos token {eos!r} is the usual fallback)" if eos is not None
            else " and no eos token to fall back on: set tokenizer.pad_token in load_tokenizer"))
    return _record("pad token", True, f"{pad!r}" + (" (the eos token)" if pad == eos else ""))


def provider_checks(job: JobSpec, events: EventWriter) -> list[dict[str, Any]]:
    """Create the provider, then validate_model_access, load_model, load_tokenizer and the pad token."""
    from ..provider_factory import create_provider

    records: list[dict[str, Any]] = []
    events.stage("check", "create_provider")
    rec, provider = _timed("create_provider", "ProviderError",
                           lambda: create_provider(job.provider, job.provider_config), _type_name)
    records.append(rec)
    if provider is None:
        return records
    rec, name = _timed("get_provider_name", "ProviderError", provider.get_provider_name, repr)
    if rec["ok"] and str(name).lower() != job.provider:
        rec.update(ok=False, detail=f"returned {name!r}, but the provider is registered as {job.provider!r}")
    records.append(rec)

    events.stage("check", f"validate_model_access {job.model}")
    rec, valid = _timed("validate_model_access", "ModelAccessError",
                        lambda: provider.validate_model_access(job.model, job.model_class), repr)
    if rec["ok"] and valid is not True:
        rec.update(ok=False, detail=f"returned {valid!r}: return True when the model is accessible, and raise "
                                    "ModelAccessError saying why when it is not")
    records.append(rec)

    events.stage("check", f"load_model {job.model}")
    rec, _model = _timed("load_model", "ProviderError or ModelAccessError", lambda: provider.load_model(
        job.model, job.model_class, quantization_config=job.quantization_config, device_map=job.device_map),
        _type_name)
    if rec["ok"] and _model is None:
        rec.update(ok=False, detail="returned None: return the loaded model")
    records.append(rec)

    events.stage("check", f"load_tokenizer {job.model}")
    rec, tokenizer = _timed("load_tokenizer", "ProviderError", lambda: provider.load_tokenizer(job.model), _type_name)
    if rec["ok"] and tokenizer is None:
        rec.update(ok=False, detail="returned None: return the tokenizer")
    records.append(rec)
    if rec["ok"]:
        records.append(pad_token_check(tokenizer))
    return records


class _ModelSwap:
    """A provider that reads ``model`` wherever it is given a model id (the script's stays in its text)."""

    def __init__(self, provider: Any, model: str) -> None:
        self._provider, self._model = provider, model

    def _swap(self, model_id: str) -> str:
        if model_id != self._model:
            logger.info("the script's model id %s is read as %s (mf providers check --model)", model_id, self._model)
        return self._model

    def load_model(self, model_id: str, *args: Any, **kwargs: Any) -> Any:
        return self._provider.load_model(self._swap(model_id), *args, **kwargs)

    def load_tokenizer(self, model_id: str, **kwargs: Any) -> Any:
        return self._provider.load_tokenizer(self._swap(model_id), **kwargs)

    def validate_model_access(self, model_id: str, model_class: str) -> bool:
        return bool(self._provider.validate_model_access(self._swap(model_id), model_class))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


@contextlib.contextmanager
def _swapped_factories(model: str) -> Iterator[None]:
    """ModelForge's factories (both APIs), returning providers that read ``model``."""
    from ModelForge.providers import provider_factory as mf_factory

    create, factory_create = mf_factory.create_provider, mf_factory.ProviderFactory.create_provider

    def swapped_create(provider_name: str, provider_config: dict[str, Any] | None = None) -> Any:
        return _ModelSwap(create(provider_name, provider_config), model)

    def swapped_factory_create(cls: Any, provider_name: str = "huggingface", provider_config: Any = None) -> Any:
        return _ModelSwap(factory_create(provider_name, provider_config), model)

    mf_factory.create_provider = swapped_create  # type: ignore[assignment]
    mf_factory.ProviderFactory.create_provider = classmethod(swapped_factory_create)  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        mf_factory.create_provider = create  # type: ignore[assignment]
        mf_factory.ProviderFactory.create_provider = factory_create  # type: ignore[method-assign]


class _Lines(io.TextIOBase):
    """The script's stdout: each line is kept, and sent to the host as a log event as it comes."""

    def __init__(self, events: EventWriter) -> None:
        self.lines: list[str] = []
        self._events, self._partial = events, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        for line in done:
            self.lines.append(line)
            self._events.log(line)
        return len(text)

    def flush_rest(self) -> None:
        if self._partial:
            self.write("\n")


def script_records(lines: list[str]) -> list[dict[str, Any]]:
    """A record per ✅/❌ line of the script's output (its text after the mark)."""
    records = []
    for line in lines:
        for mark, ok in ((PASS, True), (FAIL, False)):
            if mark in line:
                text = line.split(mark, 1)[1].strip()
                name, _, detail = text.partition(":")
                records.append(_record(name.strip(), ok, detail.strip()))
                break
    return records


def script_checks(job: JobSpec, events: EventWriter) -> list[dict[str, Any]]:
    script = str(job.options["script"])
    events.stage("check", f"running {script}")
    out = _Lines(events)
    started = time.perf_counter()
    failure: str | None = None
    saved_argv = sys.argv
    sys.argv = [script]
    try:
        swap = _swapped_factories(job.model) if job.options.get("swap_model") else contextlib.nullcontext()
        with swap, contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            failure = f"exited with {exc.code}"
    except Exception as exc:
        failure = f"raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        sys.argv = saved_argv
        out.flush_rest()
    records = script_records(out.lines)
    if failure is not None or not records:
        records.append(_record(f"script {script.rsplit('/', 1)[-1]}", False,
                               failure or f"printed no {PASS} or {FAIL} line", time.perf_counter() - started))
    return records


def run_check(job: JobSpec, events: EventWriter) -> dict[str, Any]:
    records = script_checks(job, events) if job.options.get("script") else provider_checks(job, events)
    return {"model": job.model, "checks": records, "passed": all(r["ok"] is not False for r in records)}
