"""Inside a job whose provider calls out: the job has no network, and reaches the outside only through the egress
proxy's Unix socket (mounted by ``mf``). Clients speak to a proxy by TCP (``HTTPS_PROXY``), so the runtime listens on
the container's own loopback and hands each connection's socket to the proxy over that Unix socket (SCM_RIGHTS);
the proxy decides what goes through, and moves the bytes itself."""

from __future__ import annotations

import os
import socket
import threading
import time

#: The proxy's socket in the container (``mf`` sets it for jobs whose provider declares ``network``).
SOCKET_ENV = "MF_EGRESS_SOCKET"
PORT = 3128
#: How long a connection waits for the proxy to listen (it starts beside the job, not before it).
WAIT_SECONDS = 20.0


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


def _hand_over(client: socket.socket, path: str) -> None:
    """Give the client's socket to the proxy (SCM_RIGHTS): the proxy reads the request and moves the bytes
    between it and the upstream itself, so nothing here copies them."""
    with client:
        try:
            with _connect(path) as proxy:
                socket.send_fds(proxy, [b"c"], [client.fileno()])
        except OSError:
            pass


def _serve(listener: socket.socket, path: str) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_hand_over, args=(client, path), daemon=True).start()


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
