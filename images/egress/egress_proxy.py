"""The egress proxy of a job whose provider calls out (``network = ["host:port", ...]``).

The job's container has no network at all (``--network none``); its only way out is this proxy's Unix socket,
mounted into both containers (the job reaches it through ``HTTPS_PROXY=http://127.0.0.1:3128``, which the
ModelForge runtime forwards to the socket). The proxy allows exactly the declared ``host:port`` pairs:

- ``CONNECT host:port`` (HTTPS, or any TCP protocol) opens a tunnel;
- an absolute-form request (``GET http://host:port/path``, what clients send through ``HTTP_PROXY``) is sent
  on as an origin-form request with ``Connection: close``.

Anything else is answered ``403`` and never connected. Each decision is one JSON line on stdout, which ``mf``
turns into a ``log`` event of the job. The proxy shares the job's PID namespace, so it ends with the job however
the job ends. Standard library only: python3 of the ModelForge base image, nothing else.

usage: egress_proxy.py SOCKET HOST:PORT [HOST:PORT ...]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

BUFFER = 256 * 1024
HEAD_LIMIT = 64 * 1024
CONNECT_TIMEOUT = 15.0


def log(**fields: object) -> None:
    sys.stdout.write(json.dumps({"egress": fields.pop("verdict"), **fields}, separators=(",", ":")) + "\n")
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


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    moved = 0
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            moved += len(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            writer.close()
    return moved


class Proxy:
    def __init__(self, allowed: list[str]) -> None:
        self.allowed = {split_target(item, 443) for item in allowed}

    async def refuse(self, writer: asyncio.StreamWriter, method: str, target: str, reason: str) -> None:
        log(verdict="refused", method=method, target=target, reason=reason)
        body = f"mf egress proxy: {reason}\n".encode()
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self.refuse(writer, "?", lines[0][:80], "not an HTTP proxy request")
            return
        try:
            if method == "CONNECT":
                host, port = split_target(target, 443)
                rest = b""
            elif target.startswith("http://"):
                authority, _, path = target[len("http://"):].partition("/")
                host, port = split_target(authority, 80)
                kept = [line for line in lines[1:] if line and not line.lower().startswith(
                    ("proxy-connection:", "connection:", "keep-alive:", "proxy-authorization:"))]
                rest = "\r\n".join([f"{method} /{path} {version}", *kept, "Connection: close", "", ""]).encode("latin-1")
            else:
                await self.refuse(writer, method, target[:200], "only CONNECT and absolute http:// requests go through")
                return
        except ValueError:
            await self.refuse(writer, method, target[:200], "not a host:port")
            return
        shown = f"{host}:{port}"
        if (host, port) not in self.allowed:
            await self.refuse(writer, method, shown, f"{shown} is not in the provider's network declaration")
            return
        started = time.monotonic()
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=BUFFER),
                                                          CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            log(verdict="failed", method=method, target=shown, reason=f"{type(exc).__name__}: {exc}")
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        log(verdict="allowed", method=method, target=shown)
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
        else:
            up_writer.write(rest)
        up, down = await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        log(verdict="closed", method=method, target=shown, sent=up + len(rest), received=down,
            seconds=round(time.monotonic() - started, 3))
        writer.close()
        up_writer.close()


async def main(socket_path: str, allowed: list[str]) -> None:
    proxy = Proxy(allowed)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server = await asyncio.start_unix_server(proxy.handle, socket_path, limit=HEAD_LIMIT)
    os.chmod(socket_path, 0o666)  # the job's user connects; the folder it is in is the job's alone
    log(verdict="listening", allowed=sorted(f"{h}:{p}" for h, p in proxy.allowed))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: egress_proxy.py SOCKET HOST:PORT [HOST:PORT ...]")
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2:]))
    except KeyboardInterrupt:
        pass
