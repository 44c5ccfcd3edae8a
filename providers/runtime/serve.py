"""The serve action: an OpenAI-compatible HTTP server for one loaded model (`mf serve`).

The same server runs in every provider's image, on top of one optional provider method,
``generate_stream`` (see ``providers/base.py``): the provider turns a conversation (or a prompt) into
text pieces, one per generated token; this module does the rest, the same way for all of them:

- ``POST /v1/chat/completions`` and ``POST /v1/completions`` (JSON, or SSE with ``"stream": true``, ending
  with ``data: [DONE]``), ``GET /v1/models``, ``GET /health`` (no key, no generation lock);
- an API key on every /v1 route (401 without it), read from a file (never argv or the environment);
- a Host-header allow-list (DNS rebinding), no CORS unless origins are given, a request-body cap and a
  server-side ``max_tokens`` cap;
- one generation at a time: later requests *wait* for the lock (FIFO), they never interrupt a running
  stream; a client that goes away mid-stream stops its generation at the next token;
- SIGTERM (Ctrl-C in `mf serve`): stop accepting, end open streams, return.

The server listens on a Unix socket in a folder `mf` mounts: the container has no network at all, and
`mf`'s relay (``orchestrator/relay.py``) publishes it on 127.0.0.1 only.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations (``Request``) at
# run time, and they are imported inside build_app.
import asyncio
import contextlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import JobSpec
from ..errors import ConfigurationError
from ..events import EventWriter
from ..log import logger

#: what `mf serve` mounts (a folder of its own, 0700) and where the key file is
SOCKET_DIR = "/serve"
SOCKET_NAME = "server.sock"
KEY_FILE = "/run/mf-serve/api-key"
DEFAULT_MAX_TOKENS_CAP = 2048
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
#: CPUs' worth of others' time a server still counts as its own: each streamed token costs mf's relay and the
#: client reading the stream a little CPU (0.3-0.6 of a CPU at 100 tokens/s, measured), which the thread watch
#: (providers/common/cpus.py) would otherwise take for a neighbour and drop a thread for (0.88x instead of 1.0x).
#: A busy neighbour (a whole CPU) still takes a thread away.
SERVING_SLACK = 0.75


@dataclass
class ServeSettings:
    """``job.options["serve"]``, as `mf serve` writes it."""

    model_id: str
    socket: str = f"{SOCKET_DIR}/{SOCKET_NAME}"
    key_file: str = KEY_FILE
    #: Host header values the server answers (host:port); empty: any (only with --expose and a key)
    allowed_hosts: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)
    max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "ServeSettings":
        raw = dict(options.get("serve") or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown or "model_id" not in raw:
            raise ConfigurationError(f"Invalid serve settings: {unknown or 'model_id missing'}.",
                                     "mf and the image disagree; rebuild the image with `mf images build`.")
        return cls(**raw)


class BadRequest(Exception):
    """A request the server refuses, as an OpenAI-style error body."""

    def __init__(self, status: int, message: str, code: str = "invalid_request_error",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 404: "invalid_request_error"}.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "code": self.code, "param": self.param}}


# -- requests -------------------------------------------------------------------------------------------
@dataclass
class Params:
    """One generation's parameters, checked."""

    messages: list[dict[str, str]] | None
    prompt: str | None
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    stream: bool
    include_usage: bool


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(400, f"'{name}' must be a number from {low:g} to {high:g}, not {value!r}.", param=name)
    return float(value)


def _content(value: Any) -> str:
    """A message's content: a string, or the text parts of a list of parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(400, "Only text content parts are supported.", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    if value is None:
        return ""
    raise BadRequest(400, "A message's content must be a string or a list of text parts.", param="messages")


def parse_params(body: Any, chat: bool, cap: int) -> Params:
    if not isinstance(body, dict):
        raise BadRequest(400, "The request body must be a JSON object.")
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    if chat:
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise BadRequest(400, "'messages' must be a non-empty list.", param="messages")
        messages = []
        for item in raw:
            if not isinstance(item, dict) or item.get("role") not in ("system", "user", "assistant", "developer"):
                raise BadRequest(400, "Each message needs a role (system, user or assistant) and content.",
                                 param="messages")
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _content(item.get("content"))})
    else:
        raw_prompt = body.get("prompt")
        if isinstance(raw_prompt, list) and len(raw_prompt) == 1 and isinstance(raw_prompt[0], str):
            raw_prompt = raw_prompt[0]
        if not isinstance(raw_prompt, str):
            raise BadRequest(400, "'prompt' must be a string.", param="prompt")
        prompt = raw_prompt
    if body.get("n", 1) != 1:
        raise BadRequest(400, "Only n=1 is supported: one generation at a time.", param="n")
    requested = body.get("max_completion_tokens", body.get("max_tokens"))
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise BadRequest(400, f"'max_tokens' must be a positive integer, not {requested!r}.", param="max_tokens")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise BadRequest(400, "'stop' must be a string or a list of up to 4 strings.", param="stop")
    options = body.get("stream_options") or {}
    return Params(
        messages=messages,
        prompt=prompt,
        max_tokens=min(int(requested or cap), cap),  # the server's cap wins
        temperature=_number(body, "temperature", 1.0, 0, 2),  # OpenAI's default
        top_p=_number(body, "top_p", 1.0, 0, 1),
        stop=stop,
        stream=bool(body.get("stream", False)),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )


class StopScanner:
    """Cuts the text at the first stop string, holding back a tail that could be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if not self.stops:
            return piece
        self.buffer += piece
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.buffer = self.buffer[:cut], ""
            return out
        ready = len(self.buffer) - self.hold
        if ready <= 0:
            return ""
        out, self.buffer = self.buffer[:ready], self.buffer[ready:]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


# -- one generation, in a thread ------------------------------------------------------------------------
_END = object()


class Generation:
    """Runs the provider's ``generate_stream`` in a worker thread and hands its pieces to the event loop.
    ``stop`` ends it at the next token (a client gone, the server stopping)."""

    def __init__(self, provider: Any, model: Any, tokenizer: Any, params: Params,
                 shutting_down: threading.Event) -> None:
        self.provider, self.model, self.tokenizer, self.params = provider, model, tokenizer, params
        self.stop = threading.Event()
        self.shutting_down = shutting_down
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.done = threading.Event()
        self.tokens = 0
        self.prompt_tokens: int | None = None
        self.scanner = StopScanner(params.stop)
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.thread = threading.Thread(target=self._run, name="mf-generation", daemon=True)

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.shutting_down.is_set() or self.scanner.stopped

    def _run(self) -> None:
        try:
            pieces: Iterator[Any] = self.provider.generate_stream(
                self.model, self.tokenizer, messages=self.params.messages, prompt=self.params.prompt,
                max_tokens=self.params.max_tokens, temperature=self.params.temperature, top_p=self.params.top_p,
                should_stop=self.should_stop)
            try:
                for piece in pieces:
                    if isinstance(piece, int) and not isinstance(piece, bool):
                        self.prompt_tokens = piece  # the provider may say the prompt's length first
                        continue
                    self.tokens += 1
                    if self.first_token is None:
                        self.first_token = time.perf_counter()
                    text = self.scanner.feed(str(piece))
                    if text:
                        self.loop.call_soon_threadsafe(self.queue.put_nowait, text)
                    if self.should_stop() or self.tokens >= self.params.max_tokens:
                        break
            finally:
                close = getattr(pieces, "close", None)
                if callable(close):
                    close()
            tail = "" if self.scanner.stopped else self.scanner.flush()
            if tail:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, tail)
        except Exception as exc:  # handed to the request: a 400 for what the model refuses, else a 500
            self.loop.call_soon_threadsafe(self.queue.put_nowait, exc)
        finally:
            self.done.set()
            self.loop.call_soon_threadsafe(self.queue.put_nowait, _END)

    @property
    def finish_reason(self) -> str:
        return "length" if self.tokens >= self.params.max_tokens and not self.scanner.stopped else "stop"

    async def pieces(self) -> AsyncIterator[str]:
        self.thread.start()
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def close(self) -> None:
        """Stop the generation and wait until its thread has let go of the model."""
        self.stop.set()
        if self.thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, self.done.wait)

    def usage(self) -> dict[str, Any]:
        prompt = self.prompt_tokens or 0
        return {"prompt_tokens": prompt, "completion_tokens": self.tokens, "total_tokens": prompt + self.tokens}


# -- the app ---------------------------------------------------------------------------------------------
def read_key(path: str) -> str:
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the server's key file {path}: {exc.strerror}.",
                                 "mf serve writes it; run mf serve again.") from None
    if len(key) < 8:  # noqa: PLR2004
        raise ConfigurationError("The server's key is shorter than 8 characters.", "Give a longer --api-key.")
    return key


def build_app(provider: Any, model: Any, tokenizer: Any, settings: ServeSettings, key: str,
              shutting_down: threading.Event, stats: dict[str, Any]) -> Any:
    """The FastAPI app, wrapped in the checks every request passes first (host, body size, key)."""
    from anyio import CancelScope
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from sse_starlette.sse import EventSourceResponse

    app = FastAPI(title="ModelForge", docs_url=None, redoc_url=None, openapi_url=None)
    lock = asyncio.Lock()
    created = int(time.time())

    def error(exc: BadRequest) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return error(exc)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_id}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": settings.model_id, "object": "model", "created": created,
                                            "owned_by": "modelforge"}]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str) -> dict[str, Any]:
        if model_id != settings.model_id:
            raise _unknown_model(model_id, settings.model_id)
        return {"id": settings.model_id, "object": "model", "created": created, "owned_by": "modelforge"}

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except ValueError:
            raise BadRequest(400, "The request body is not valid JSON.") from None

    async def complete(request: Request, chat: bool) -> Any:
        body = await body_of(request)
        params = parse_params(body, chat, settings.max_tokens_cap)
        if body.get("model") not in (None, settings.model_id):  # never a silent fallback to another model
            raise _unknown_model(str(body.get("model")), settings.model_id)
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        kind = "chat.completion" if chat else "text_completion"

        def choice(text: str | None, finish: str | None, streamed: bool) -> dict[str, Any]:
            if not chat:
                return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            if streamed:
                return {"index": 0, "delta": {"content": text} if text is not None else {}, "finish_reason": finish}
            return {"index": 0, "message": {"role": "assistant", "content": text or ""}, "finish_reason": finish,
                    "logprobs": None}

        def chunk(text: str | None, finish: str | None, usage: dict[str, Any] | None = None,
                  role: bool = False) -> str:
            data: dict[str, Any] = {"id": ident, "object": kind + (".chunk" if chat else ""), "created": int(time.time()),
                                    "model": settings.model_id, "choices": [choice(text, finish, True)]}
            if role:
                data["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            if usage is not None:
                data["choices"], data["usage"] = [], usage
            return json.dumps(data, ensure_ascii=False)

        ended: dict[str, Any] = {}

        async def generate() -> AsyncIterator[str]:
            async with lock:  # one generation at a time; the others wait here, in order
                gen = Generation(provider, model, tokenizer, params, shutting_down)
                try:
                    async for piece in gen.pieces():
                        yield piece
                finally:
                    with CancelScope(shield=True):  # a client gone: free the model before the next request
                        await gen.close()
                    _account(stats, gen, chat)
                ended.update(finish=gen.finish_reason, usage=gen.usage())

        if params.stream:
            async def events() -> AsyncIterator[dict[str, str]]:
                if chat:
                    yield {"data": chunk(None, None, role=True)}
                try:
                    async for piece in generate():
                        yield {"data": chunk(piece, None)}
                except Exception as exc:  # the stream has begun: the error is its last event
                    yield {"data": json.dumps(_generation_error(exc).body())}
                    yield {"data": "[DONE]"}
                    return
                yield {"data": chunk(None, ended["finish"])}
                if params.include_usage:
                    yield {"data": chunk(None, None, usage=ended["usage"])}
                yield {"data": "[DONE]"}

            return EventSourceResponse(events(), ping=15, send_timeout=30)
        text = []
        try:
            async for piece in generate():
                text.append(piece)
        except Exception as exc:
            raise _generation_error(exc) from None
        return {"id": ident, "object": kind, "created": int(time.time()), "model": settings.model_id,
                "choices": [choice("".join(text), ended["finish"], False)], "usage": ended["usage"]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await complete(request, chat=False)

    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])
    return Guard(app, settings, key)


def _unknown_model(asked: str, served: str) -> BadRequest:
    return BadRequest(404, f"The model {asked!r} does not exist on this server; it serves {served!r}.",
                      code="model_not_found", param="model")


def _generation_error(exc: Exception) -> BadRequest:
    if isinstance(exc, BadRequest):
        return exc
    if type(exc).__module__.startswith("jinja2"):  # the model's chat template, rendered in a sandbox
        return BadRequest(500, f"The model's chat template failed: {type(exc).__name__}: {str(exc)[:300]}. "
                          "Use /v1/completions with a prompt, or fix the template.", code="chat_template_error")
    if isinstance(exc, ValueError | ConfigurationError):  # e.g. a prompt beyond the context, no chat template
        text = exc.message if isinstance(exc, ConfigurationError) else str(exc)
        return BadRequest(400, text.strip().split("\n")[0][:500])
    logger.error("generation failed: %s: %s", type(exc).__name__, exc)
    return BadRequest(500, f"The generation failed: {type(exc).__name__}: {str(exc)[:300]}", code="server_error")


def _account(stats: dict[str, Any], gen: Generation, chat: bool) -> None:
    seconds = time.perf_counter() - gen.started
    stats["requests"] += 1
    stats["tokens"] += gen.tokens
    logger.info("%s: %d tokens in %.2f s%s", "chat" if chat else "completion", gen.tokens, seconds,
                " (stopped: client gone)" if gen.stop.is_set() and not gen.shutting_down.is_set() else "")


class Guard:
    """The checks before any route, as plain ASGI (no per-request overhead beyond them): the Host header
    against the allow-list, the body against its cap, and the API key on /v1 routes."""

    def __init__(self, app: Any, settings: ServeSettings, key: str) -> None:
        self.app, self.settings = app, settings
        self.key = key.encode()
        self.hosts = {h.lower().encode() for h in settings.allowed_hosts}

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.hosts and headers.get(b"host", b"").lower() not in self.hosts:
            await _reply(send, 400, "This server answers only requests for "
                         f"{', '.join(sorted(self.settings.allowed_hosts))} (Host header).", "host_not_allowed")
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.settings.max_body_bytes):
            await _reply(send, 413, f"The request body is over {self.settings.max_body_bytes} bytes.", "body_too_large")
            return
        if scope["path"].startswith("/v1"):
            given = headers.get(b"authorization", b"")
            token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
            if not secrets.compare_digest(token, self.key):
                await _reply(send, 401, "Missing or wrong API key (Authorization: Bearer KEY); mf serve printed "
                             "the path of the key file.", "invalid_api_key", kind="authentication_error")
                return
        seen = 0
        cap = self.settings.max_body_bytes

        async def capped() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:
                raise BadRequest(413, f"The request body is over {cap} bytes.")
            return message

        await self.app(scope, capped, send)


async def _reply(send: Callable[..., Any], status: int, message: str, code: str,
                 kind: str = "invalid_request_error") -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- the action ------------------------------------------------------------------------------------------
def serve(provider: Any, job: JobSpec, events: EventWriter) -> dict[str, Any]:
    """Load the model, then answer on the socket until SIGTERM."""
    import uvicorn

    settings = ServeSettings.from_options(job.options)
    key = read_key(settings.key_file)
    provider.validate_model_access(job.model, job.model_class)
    events.stage("load", f"loading {job.model}")
    started = time.perf_counter()
    model = provider.load_model(job.model, job.model_class, quantization_config=job.quantization_config,
                                device_map=job.device_map)
    tokenizer = provider.load_tokenizer(job.model)
    adapter = job.options.get("adapter")
    if adapter:
        attach = getattr(provider, "attach_adapter", None)
        if not callable(attach):
            raise ConfigurationError(f"The {job.provider} provider cannot load a LoRA adapter.",
                                     "Serve the merged model, or use the huggingface provider.")
        model = attach(model, adapter, merge=bool(job.options.get("merge_adapter", True)))
    load_seconds = time.perf_counter() - started
    events.metric("load_seconds", load_seconds)
    for watch in (getattr(provider, "_watch", None), getattr(getattr(provider, "cpu_threads", None), "watch", None)):
        if watch is not None:
            watch.slack = SERVING_SLACK
    shutting_down = threading.Event()
    stats: dict[str, Any] = {"requests": 0, "tokens": 0}
    app = build_app(provider, model, tokenizer, settings, key, shutting_down, stats)
    socket_path = Path(settings.socket)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()

    class Server(uvicorn.Server):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: Any) -> None:
            shutting_down.set()  # open streams end at their next token
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, uds=str(socket_path), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=3, timeout_keep_alive=30)
    server = Server(config)
    events.stage("serve", f"ready: {settings.model_id}")
    server.run()
    with contextlib.suppress(OSError):
        socket_path.unlink()
    return {"model": job.model, "model_id": settings.model_id, "load_seconds": round(load_seconds, 3),
            "requests": stats["requests"], "tokens": stats["tokens"]}
