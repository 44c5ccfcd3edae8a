"""Inside a job whose provider calls out: the job has no network, and reaches the outside only through the egress
proxy's Unix socket (mounted by ``mf``). Clients speak to a proxy by TCP (``HTTPS_PROXY``), so the runtime listens on
the container's own loopback and forwards each connection to that socket; the proxy decides what goes through."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

#: The proxy's socket in the container (``mf`` sets it for jobs whose provider declares ``network``).
SOCKET_ENV = "MF_EGRESS_SOCKET"
PORT = 3128
#: How long a connection waits for the proxy to listen (it starts beside the job, not before it).
WAIT_SECONDS = 20.0
CHUNK = 256 * 1024


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(path)
            return upstream
        except (FileNotFoundError, ConnectionRefusedError):
            upstream.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _serve(listener: socket.socket, path: str) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = _connect(path)
        except OSError:
            client.close()
            continue
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()


def start_forwarder() -> bool:
    """Listen on 127.0.0.1:PORT and forward to the proxy's socket, when this job has one. False when it has
    none, or when another process of the job (a torchrun rank) already forwards."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return False
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", PORT))
    except OSError:
        listener.close()
        return False
    listener.listen(64)
    threading.Thread(target=_serve, args=(listener, path), name="mf-egress", daemon=True).start()
    return True
