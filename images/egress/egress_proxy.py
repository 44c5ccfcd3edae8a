"""The egress proxy of a job whose provider calls out (``network = ["host:port", ...]``).

The job's container has no network at all (``--network none``); its only way out is this proxy's Unix socket,
mounted into both containers (the job reaches it through ``HTTPS_PROXY=http://127.0.0.1:3128``, which the
ModelForge runtime forwards to the socket). The proxy allows exactly the declared ``host:port`` pairs:

- ``CONNECT host:port`` (HTTPS, or any TCP protocol) opens a tunnel;
- an absolute-form request (``GET http://host:port/path``, what clients send through ``HTTP_PROXY``) is sent
  on as an origin-form request with ``Connection: close``.

The runtime does not relay the bytes: it passes each client connection's socket to the proxy over the Unix socket
(SCM_RIGHTS), and the proxy serves it directly.

Anything else is answered ``403`` and never connected. Each decision is one JSON line on stdout, which ``mf``
turns into a ``log`` event of the job. The proxy shares the job's PID namespace, so it ends with the job however
the job ends. A thread per direction moves the bytes with splice(2): they go from one socket to the other in the
kernel, never through Python. Standard library only: python3 of the ModelForge base image, nothing else.

usage: egress_proxy.py SOCKET HOST:PORT [HOST:PORT ...]
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import socketserver
import sys
import threading
import time

HEAD_LIMIT = 64 * 1024
CHUNK = 1 << 20
CONNECT_TIMEOUT = 15.0
_print = threading.Lock()


def log(**fields: object) -> None:
    line = json.dumps({"egress": fields.pop("verdict"), **fields}, separators=(",", ":")) + "\n"
    with _print:
        sys.stdout.write(line)
        sys.stdout.flush()


def split_target(target: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare host -> (host, port); ValueError for a port that is not a number."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:
        host, port = target, ""
    return host.lower(), int(port) if port else default_port


def move(src: socket.socket, dst: socket.socket, moved: list[int]) -> None:
    """Copy src to dst until src ends, in the kernel (splice through a pipe); then end dst's writing side."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, CHUNK)  # one splice moves up to CHUNK, not the default 64 KiB
    except OSError:
        pass
    try:
        while n := os.splice(src.fileno(), w, CHUNK):
            moved[0] += n
            while n:
                n -= os.splice(r, dst.fileno(), n)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def refuse(conn: socket.socket, method: str, target: str, reason: str) -> None:
    log(verdict="refused", method=method, target=target, reason=reason)
    body = f"mf egress proxy: {reason}\n".encode()
    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class Handler(socketserver.BaseRequestHandler):
    allowed: set[tuple[str, int]] = set()

    def handle(self) -> None:
        """A connection handed over by the job's runtime (its client socket, passed as a file descriptor: the
        bytes then go between the client and the upstream in one hop), or a client on the socket itself."""
        _, fds, _, _ = socket.recv_fds(self.request, 1, 1)
        if not fds:
            return
        with socket.socket(fileno=fds[0]) as client:
            self.serve(client)

    def serve(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data or len(head) > HEAD_LIMIT:
                return
            head += data
        head, _, early = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            refuse(conn, "?", lines[0][:80], "not an HTTP proxy request")
            return
        try:
            if method == "CONNECT":
                host, port = split_target(target, 443)
                first = early
            elif target.startswith("http://"):
                authority, _, path = target[len("http://"):].partition("/")
                host, port = split_target(authority, 80)
                kept = [line for line in lines[1:] if line and not line.lower().startswith(
                    ("proxy-connection:", "connection:", "keep-alive:", "proxy-authorization:"))]
                first = "\r\n".join([f"{method} /{path} {version}", *kept, "Connection: close", "", ""]).encode(
                    "latin-1") + early
            else:
                refuse(conn, method, target[:200], "only CONNECT and absolute http:// requests go through")
                return
        except ValueError:
            refuse(conn, method, target[:200], "not a host:port")
            return
        shown = f"{host}:{port}"
        if (host, port) not in self.allowed:
            refuse(conn, method, shown, f"{shown} is not in the provider's network declaration")
            return
        started = time.monotonic()
        try:
            upstream = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            upstream.settimeout(None)
        except OSError as exc:
            log(verdict="failed", method=method, target=shown, reason=f"{type(exc).__name__}: {exc}")
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            return
        log(verdict="allowed", method=method, target=shown)
        for sock, option in ((upstream, socket.SO_RCVBUF), (conn, socket.SO_SNDBUF)):  # fewer wake-ups per MB
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, 4 * CHUNK)
            except OSError:
                pass
        with upstream:
            if method == "CONNECT":
                conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            if first:
                upstream.sendall(first)
            sent, received = [len(first)], [0]
            up = threading.Thread(target=move, args=(conn, upstream, sent), daemon=True)
            up.start()
            move(upstream, conn, received)
            up.join()
        log(verdict="closed", method=method, target=shown, sent=sent[0], received=received[0],
            seconds=round(time.monotonic() - started, 3))


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128


def main(socket_path: str, allowed: list[str]) -> None:
    Handler.allowed = {split_target(item, 443) for item in allowed}
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    with Server(socket_path, Handler) as server:
        os.chmod(socket_path, 0o666)  # noqa: S103 - the job's user connects; the folder it is in is the job's alone
        log(verdict="listening", allowed=sorted(f"{h}:{p}" for h, p in Handler.allowed))
        server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: egress_proxy.py SOCKET HOST:PORT [HOST:PORT ...]")
    try:
        main(sys.argv[1], sys.argv[2:])
    except KeyboardInterrupt:
        pass
