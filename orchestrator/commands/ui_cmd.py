"""`mf ui`: the local web page for runs, jobs, images, providers and doctor, and a form that starts training."""

from __future__ import annotations

import click


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where it listens; beyond loopback needs --expose.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port.")
@click.option("--expose", is_flag=True, help="Allow --host beyond loopback (anyone with the URL's token gets in).")
def ui_command(host: str, port: int, expose: bool) -> None:
    """Open a local web page: runs (with live events and loss curves), jobs, images, providers, doctor, and a
    form that starts a training run. Prints a URL with a one-time token (then a cookie); Ctrl-C stops it."""
    import socket

    from providers.errors import ConfigurationError

    try:
        import uvicorn

        from ..ui.app import Session, create_app
    except ImportError:
        raise ConfigurationError("mf ui needs the ui extra (starlette, jinja2, uvicorn).",
                                 "pip install 'modelforge[ui]'") from None
    if host not in ("127.0.0.1", "localhost", "::1") and not expose:
        raise ConfigurationError(f"--host {host} would let other machines reach the page; it listens on 127.0.0.1 only.",
                                 "If you mean it, add --expose (the URL's token is then all that guards it).")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigurationError(f"Cannot listen on {host}:{port}: {exc.strerror}.",
                                 "Pick another port with --port (0: any free port).") from None
    sock.listen(128)  # connections wait from now, before the app has started
    port = sock.getsockname()[1]
    session = Session()
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host == "localhost" else host)
    hosts = None if expose else [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
    app = create_app(session, hosts)
    click.echo(f"ModelForge at http://{shown}:{port}/runs?token={session.token}", err=False)
    click.echo("  (the token is good for this process only; Ctrl-C stops the page)", err=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
