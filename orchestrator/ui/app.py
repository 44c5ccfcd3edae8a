"""`mf ui`: a local web page over the same code paths as the CLI (runs, jobs, images, providers, doctor, and a
form that starts a training run), server-rendered HTML on Starlette + Jinja2, with a few lines of JS for the
live parts (server-sent events). Nothing the CLI cannot do.

Safe by default: it listens on 127.0.0.1; the first URL carries a random token, exchanged for an HttpOnly,
SameSite=Strict cookie; every POST carries the session's CSRF token; the Host header must name the address it
listens on (DNS rebinding); no CORS.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from providers.errors import ModelForgeError

COOKIE = "mf_ui"
TEMPLATES = Path(__file__).parent / "templates"
#: the form's fields outside the train config, in the order shown
JOB_FIELDS = ("provider", "model", "dataset", "output")


class Session:
    """The one session of this `mf ui`: the URL's token, the cookie it becomes, and the CSRF token."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.cookie = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(24)


# -- what the pages show: the CLI's own functions -------------------------------------------------------------
def svg_curve(series: dict[str, list[tuple[float, float]]], width: int = 640, height: int = 240) -> str:
    """Loss curves as an inline SVG: one polyline and one circle per point and series, axes labelled."""
    colours = {"loss": "#1f6feb", "eval_loss": "#d1242f"}
    pts = {name: p for name, p in series.items() if p}
    if not pts:
        return '<p class="muted">No metrics yet.</p>'
    xs = [x for p in pts.values() for x, _ in p]
    ys = [y for p in pts.values() for _, y in p]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    left, bottom, pad = 72, 28, 10

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - pad)

    def sy(y: float) -> float:
        return pad + (y1 - y) / (y1 - y0) * (height - bottom - pad)

    parts = [f'<svg class="curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="loss curve">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - pad}" y2="{height - bottom}" stroke="#888"/>',
             f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{height - bottom}" stroke="#888"/>',
             f'<text x="{left - 4}" y="{pad + 4}" text-anchor="end" font-size="11">{y1:.4g}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" font-size="11">{y0:.4g}</text>',
             f'<text x="{left}" y="{height - 8}" font-size="11">step {x0:g}</text>',
             f'<text x="{width - pad}" y="{height - 8}" text-anchor="end" font-size="11">{x1:g}</text>']
    for name, p in pts.items():
        colour = colours.get(name, "#555")
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>')
        parts += [f'<circle class="point {name}" data-step="{x:g}" data-value="{y:.6g}" cx="{sx(x):.1f}" '
                  f'cy="{sy(y):.1f}" r="2.5" fill="{colour}"><title>{name} {y:.4f} at step {x:g}</title></circle>'
                  for x, y in p]
    legend = " ".join(f'<tspan fill="{colours.get(n, "#555")}">● {html.escape(n)}</tspan>' for n in pts)
    parts.append(f'<text x="{width - pad}" y="{pad + 12}" text-anchor="end" font-size="12">{legend}</text></svg>')
    return "".join(parts)


def train_fields() -> list[dict[str, Any]]:
    """The form's training fields, made from TrainConfig (the schema `--config` is checked against)."""
    import typing

    from providers.runtime.train_config import TrainConfig

    fields = []
    for name, info in TrainConfig.model_fields.items():
        annotation = info.annotation
        choices: list[str] = []
        args = typing.get_args(annotation)
        literals = [a for a in ([annotation, *args]) if typing.get_origin(a) is typing.Literal]
        for lit in literals:
            choices += [str(v) for v in typing.get_args(lit)]
        kind = "choice" if choices and name != "target_modules" else (
            "bool" if bool in (annotation, *args) else "text")
        default = info.default
        fields.append({"name": name, "kind": kind, "choices": choices,
                       "default": "" if default is None else str(default).lower() if isinstance(default, bool)
                       else str(default), "help": info.description or ""})
    return fields


def form_to_train(form: dict[str, str]) -> dict[str, Any]:
    """The train config the form asks for: only the fields given (the rest keep TrainConfig's defaults)."""
    from providers.runtime.train_config import TrainConfig

    out: dict[str, Any] = {}
    for name in TrainConfig.model_fields:
        value = (form.get(name) or "").strip()
        if not value:
            continue
        if name == "target_modules" and value != "all-linear":
            out[name] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            out[name] = value  # pydantic converts "10", "0.001", "true" as `--config`'s JSON would be read
    return out


def error_field(exc: ModelForgeError, train_names: set[str]) -> str:
    """Which field an error is about, to show it there (else: at the top of the form)."""
    message = exc.message
    if message.startswith("train config: "):
        name = message.removeprefix("train config: ").split(":", 1)[0].split(".")[0]
        return name if name in train_names else "train"
    lowered = message.lower()
    for name, words in (("dataset", ("dataset", ".jsonl", "line ")), ("output", ("output",)),
                        ("provider", ("provider",)), ("model", ("model",))):
        if any(w in lowered for w in words):
            return name
    return "form"


def start_training(form: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """Start a detached training run from the form, through the CLI's own path (JobRequest, run_job, the run
    record); its run id, or the errors by field (nothing started)."""
    from ..jobs import JobRequest, run_job
    from ..runs import RunRecord

    errors: dict[str, str] = {}
    for name in JOB_FIELDS:
        if not (form.get(name) or "").strip():
            errors[name] = f"Give the {name}."
    if errors:
        return None, errors
    train = form_to_train(form)
    provider, model = form["provider"].strip(), form["model"].strip()
    dataset, output = form["dataset"].strip(), form["output"].strip()
    from providers.runtime.train_config import TASK_MODEL_CLASS

    request = JobRequest(provider=provider, action="train", model=model,
                         model_class=TASK_MODEL_CLASS.get(str(train.get("task", "text-generation")),
                                                          "AutoModelForCausalLM"),
                         output=Path(output), dataset=Path(dataset), train=train, detach=True)
    record = RunRecord("train", provider=provider, model=model, dataset=dataset, output=output,
                       config={"train": train})
    try:
        outcome = run_job(request, on_event=lambda event: None, on_build=lambda line: None,
                          on_submit=record.submitted)
    except ModelForgeError as exc:
        from providers.runtime.train_config import TrainConfig

        from ..render import format_error

        where = error_field(exc, set(TrainConfig.model_fields))
        return None, {where: format_error(exc)}  # the line the CLI prints
    record.detached(str(outcome["job"]))
    return record.id, {}


# -- the app ---------------------------------------------------------------------------------------------------
def create_app(session: Session, allowed_hosts: list[str] | None) -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    from .. import runs as history

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"
    env.filters["span"] = _span
    env.filters["name"] = lambda p: Path(p).name if p else "-"

    def page(name: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        text = env.get_template(name).render(csrf=session.csrf, path=request.url.path, **context)
        return HTMLResponse(text, status_code=status)

    async def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=303)

    async def runs_page(request: Request) -> Response:
        kind = request.query_params.get("kind", "")
        status = request.query_params.get("status", "")
        text = request.query_params.get("q", "").lower()
        rows = await run_in_threadpool(history.list_runs, True)
        shown = [r for r in rows if (not kind or r.kind == kind) and (not status or r.status == status)
                 and (not text or text in " ".join(str(v) for v in (r.id, r.model, r.output, r.provider)).lower())]
        return page("runs.html", request, runs=shown, total=len(rows), kind=kind, status_filter=status, q=text,
                    kinds=sorted({r.kind for r in rows}), statuses=history.STATUSES)

    async def run_page(request: Request) -> Response:
        try:
            run = await run_in_threadpool(history.find, request.path_params["run"])
        except ModelForgeError as exc:
            return page("error.html", request, status=404, message=exc.message)
        info = await run_in_threadpool(history.details, run)
        return page("run.html", request, run=run, info=info, curve=svg_curve(history.loss_series(info["metrics"])),
                    config=json.dumps(info["manifest"].get("config") or run.config, indent=2, default=str),
                    manifest=json.dumps(info["manifest"], indent=2, default=str) if info["manifest"] else "")

    async def run_curve(request: Request) -> Response:
        run = await run_in_threadpool(history.find, request.path_params["run"])
        return HTMLResponse(svg_curve(history.loss_series(history.metrics(run.output))))

    async def run_events(request: Request) -> Response:
        """The run's events as server-sent events, as they come, until the job ends."""
        from .. import backends

        run = await run_in_threadpool(history.find, request.path_params["run"])
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def follow() -> None:
            try:
                if run.job and run.status == "running":
                    backend = backends.for_job(run.job)

                    def on_line(line: str) -> None:
                        if stop.is_set():
                            raise InterruptedError
                        loop.call_soon_threadsafe(queue.put_nowait, line)

                    with contextlib.suppress(InterruptedError, ModelForgeError):
                        backend.follow(run.job, on_line)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=follow, daemon=True, name="mf-ui-events").start()

        async def stream() -> Any:
            try:
                while (line := await queue.get()) is not None:
                    yield f"data: {line.strip()}\n\n"
                yield "event: end\ndata: {}\n\n"
            finally:
                stop.set()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def jobs_page(request: Request) -> Response:
        from .. import backends

        def rows() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for name in ("docker", "slurm"):
                with contextlib.suppress(Exception):
                    out += backends.create(name).list_jobs()
            return out

        return page("jobs.html", request, jobs=await run_in_threadpool(rows), message=request.query_params.get("m"))

    async def cancel_job(request: Request) -> Response:
        from .. import backends

        job = request.path_params["job"]
        try:
            await run_in_threadpool(lambda: backends.for_job(job).cancel(job, wait=True))
            message = f"{job} cancelled"
        except ModelForgeError as exc:
            message = exc.message
        return RedirectResponse("/jobs?" + urlencode({"m": message}), status_code=303)

    async def images_page(request: Request, verified: list[dict[str, Any]] | None = None,
                          message: str | None = None) -> Response:
        from .. import images

        try:
            rows = await run_in_threadpool(images.image_rows)
        except ModelForgeError as exc:
            return page("error.html", request, status=503, message=exc.message)
        return page("images.html", request, images=rows, verified=verified, message=message)

    async def image_sbom(request: Request) -> Response:
        """The image's CycloneDX SBOM (as `mf images sbom NAME` prints it)."""
        from .. import images

        spec = images.image_spec(request.path_params["provider"], request.path_params["flavour"])
        try:
            path = await run_in_threadpool(images.sbom, spec, lambda line: None)
        except ModelForgeError as exc:
            return page("error.html", request, status=404, message=exc.message)
        return Response(path.read_bytes(), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{spec.provider}-{spec.flavour}.cdx.json"'})

    async def images_verify(request: Request) -> Response:
        """`mf images verify --all`: the local images against the signed release and the registry's digests."""
        from .. import registry
        from ..commands.images_cmd import _specs

        try:
            rows = await run_in_threadpool(lambda: registry.verify_local(_specs(None, True, None),
                                                                         registry.require_registry(None)))
        except ModelForgeError as exc:
            from ..render import format_error

            return await images_page(request, message=format_error(exc))
        return await images_page(request, verified=rows)

    async def providers_page(request: Request) -> Response:
        from ..commands.providers_cmd import provider_rows

        return page("providers.html", request, providers=await run_in_threadpool(provider_rows))

    async def doctor_page(request: Request) -> Response:
        from ..doctor import run_checks

        checks = await run_in_threadpool(run_checks)
        return page("doctor.html", request, checks=[c.as_dict() for c in checks])

    async def train_form(request: Request) -> Response:
        return page("train.html", request, fields=train_fields(), values={}, errors={})

    async def train_submit(request: Request) -> Response:
        from urllib.parse import parse_qs

        # urlencoded, as the page's form posts it (no multipart parser needed)
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        run_id, errors = await run_in_threadpool(start_training, form)
        if run_id is None:
            return page("train.html", request, status=400, fields=train_fields(), values=form, errors=errors)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def api_runs(request: Request) -> Response:
        rows = await run_in_threadpool(history.list_runs, True)
        return JSONResponse([r.as_json() for r in rows])

    routes = [
        Route("/", home), Route("/runs", runs_page), Route("/runs/{run}", run_page),
        Route("/runs/{run}/curve", run_curve), Route("/runs/{run}/events", run_events),
        Route("/jobs", jobs_page), Route("/jobs/{job:path}/cancel", cancel_job, methods=["POST"]),
        Route("/images", images_page), Route("/images/verify", images_verify, methods=["POST"]),
        Route("/images/{provider}/{flavour}/sbom", image_sbom),
        Route("/providers", providers_page), Route("/doctor", doctor_page),
        Route("/train", train_form), Route("/train", train_submit, methods=["POST"]),
        Route("/api/runs", api_runs),
    ]
    return Guard(Starlette(routes=routes), session, allowed_hosts)


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:  # noqa: PLR2004
        return f"{seconds:.0f}s"
    return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"


class Guard:
    """Before any page: the Host header, the session (the URL's token once, then the cookie), and on POST the
    CSRF token (a form field or the X-CSRF-Token header)."""

    def __init__(self, app: Any, session: Session, allowed_hosts: list[str] | None) -> None:
        self.app, self.session = app, session
        self.hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, RedirectResponse

        request = Request(scope, receive)
        host = request.headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            await PlainTextResponse("This page answers only at " + ", ".join(sorted(self.hosts)) + " (Host header).",
                                    status_code=400)(scope, receive, send)
            return
        token = request.query_params.get("token")
        if token is not None:
            if not secrets.compare_digest(token, self.session.token):
                await PlainTextResponse("Wrong token: use the URL `mf ui` printed.", 403)(scope, receive, send)
                return
            response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(COOKIE, self.session.cookie, httponly=True, samesite="strict", path="/")
            await response(scope, receive, send)
            return
        if not secrets.compare_digest(request.cookies.get(COOKIE, ""), self.session.cookie):
            await PlainTextResponse("Open the URL `mf ui` printed (it carries the token).", 403)(scope, receive, send)
            return
        if request.method not in ("GET", "HEAD"):
            body = await request.body()  # read once here; handed on below
            given = request.headers.get("x-csrf-token", "")
            if not given and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                from urllib.parse import parse_qs

                given = (parse_qs(body.decode("utf-8", "replace")).get("csrf") or [""])[0]
            if not secrets.compare_digest(given, self.session.csrf):
                await PlainTextResponse("Missing or wrong CSRF token.", 403)(scope, receive, send)
                return
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)
