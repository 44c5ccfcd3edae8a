"""The relay of `mf serve`: a TCP listener on this machine (127.0.0.1 unless --expose) whose connections are
passed, byte for byte, to the server's Unix socket in a folder mounted into its container. The container
itself has no network (``--network none``): nothing in it can reach out, and nothing reaches it but this.

Run as ``python -m orchestrator.relay --host H --port P --socket PATH --state DIR [--owner-pid PID]``. It
prints one line once it listens (``listening HOST:PORT``) or why it cannot (``error: ...``), then runs
until SIGTERM, until the state folder is removed (the server ended), or until its owner process (a
foreground `mf serve`) is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from pathlib import Path

from orchestrator.runstate import pid_alive

BUFFER = 64 * 1024
_LOADING = (b'{"error": {"message": "The model is still loading (or the server has stopped); try again shortly.", '
            b'"type": "server_error", "code": "loading", "param": null}}')


def listen(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: a free one). ``OSError`` when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _client(socket_path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a token is a few bytes: no Nagle delay
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(socket_path, limit=BUFFER)
    except OSError:
        body = _LOADING
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                     b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()


async def run(listener: socket.socket, socket_path: str, state: Path, owner_pid: int | None) -> None:
    server = await asyncio.start_server(lambda r, w: _client(socket_path, r, w), sock=listener, limit=BUFFER)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        while not stop.is_set():
            if not state.exists() or (owner_pid and not pid_alive(owner_pid)):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--owner-pid", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        listener = listen(args.host, args.port)
    except OSError as exc:
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        print(f"error: {args.host}:{args.port} {why}", flush=True)
        return 2
    host, port = listener.getsockname()[:2]
    (args.state / "relay.pid").write_text(str(os.getpid()))
    print(f"listening {host}:{port}", flush=True)
    sys.stdout.close()  # the parent reads one line; nothing more comes
    os.close(1)
    asyncio.run(run(listener, args.socket, args.state, args.owner_pid or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
