"""`mf chat`: a terminal conversation with a server of `mf serve`, through its OpenAI API only (streamed chat
completions over HTTP, with the standard library): what `mf chat` does, any OpenAI client can do.

The conversation lives here, on the client: each question is sent with the turns before it. Ctrl-C stops
the answer being written (the connection is closed; the server stops generating at its next token) but not
the chat; Ctrl-D, /bye or /exit leave it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from providers.errors import ConfigurationError

HELP = """Commands:
  /set system TEXT        the system prompt (a new conversation keeps it)
  /set temperature N      sampling temperature (0: greedy)     /set top_p N     /set max_tokens N
  /show                   the settings and the conversation's length
  /clear                  forget the conversation (the system prompt stays)
  /save FILE  /load FILE  the conversation and settings, as JSON
  \"\"\"                     begin (and end) a message of several lines
  /help                   this text
  /bye, /exit, Ctrl-D     leave          Ctrl-C  stop the answer being written"""

SETTINGS = {"temperature": (float, 0.0, 2.0), "top_p": (float, 0.0, 1.0), "max_tokens": (int, 1, 1_000_000)}


class ServerError(Exception):
    """The server answered with an error: its message."""


@dataclass
class Client:
    """The OpenAI API of one server."""

    url: str  # http://HOST:PORT
    key: str
    timeout: float = 600.0

    def _connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80),
                   timeout=self.timeout)

    def get(self, path: str) -> tuple[int, Any]:
        conn = self._connection()
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.key}"})
            response = conn.getresponse()
            body = response.read()
            try:
                return response.status, json.loads(body)
            except ValueError:
                return response.status, None
        finally:
            conn.close()

    def models(self) -> list[str]:
        status, body = self.get("/v1/models")
        if status != 200:  # noqa: PLR2004
            raise ServerError(_message(body, status))
        return [m["id"] for m in body.get("data", [])]

    def stream_chat(self, payload: dict[str, Any], on_connection: Callable[[Any], None] = lambda c: None
                    ) -> Iterator[str]:
        """The answer's text as it comes (server-sent events)."""
        conn = self._connection()
        on_connection(conn)
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps({**payload, "stream": True}),
                         headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json",
                                  "Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status != 200:  # noqa: PLR2004
                body = response.read()
                with contextlib.suppress(ValueError):
                    body = json.loads(body)
                raise ServerError(_message(body, response.status))
            for raw in response:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue  # blank lines, comments (pings)
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise ServerError(_message(event, 500))
                for choice in event.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
        finally:
            conn.close()


def _message(body: Any, status: int) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{body['error'].get('message')} (HTTP {status})"
    return f"the server answered HTTP {status}"


def wait_for_health(client: Client, out: TextIO, timeout: float = 600.0) -> None:
    """Wait until the server's /health answers 200, showing that the model is loading."""
    deadline = time.monotonic() + timeout
    shown = False
    while True:
        try:
            status, _ = client.get("/health")
        except OSError:
            status = 0
        if status == 200:  # noqa: PLR2004
            if shown:
                out.write("\r\x1b[K")
            return
        if time.monotonic() > deadline:
            raise ConfigurationError(f"{client.url} did not become ready within {timeout:.0f} s.",
                                     "`mf jobs list` shows whether its server still runs.")
        if not shown:
            out.write("loading model ...")
            out.flush()
            shown = True
        time.sleep(0.25)


@dataclass
class Conversation:
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.7, "top_p": 1.0, "max_tokens": 512})

    def payload(self, model: str) -> dict[str, Any]:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        return {"model": model, "messages": messages, **self.settings}

    def to_json(self) -> str:
        return json.dumps({"system": self.system, "messages": self.messages, "settings": self.settings}, indent=2,
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Conversation:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("messages", []), list):
            raise ValueError("not a saved conversation")
        conv = cls(system=data.get("system"), messages=list(data.get("messages", [])))
        conv.settings.update({k: v for k, v in (data.get("settings") or {}).items() if k in SETTINGS})
        return conv


class Chat:
    """The read-answer loop."""

    def __init__(self, client: Client, model: str, out: TextIO = sys.stdout,
                 read: Callable[[str], str] = input) -> None:
        self.client, self.model, self.out, self.read = client, model, out, read
        self.conv = Conversation()
        self._conn: Any = None

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def ask(self, question: str) -> str | None:
        """Send one question; print the answer as it streams; None when it was stopped or failed."""
        self.conv.messages.append({"role": "user", "content": question})
        pieces: list[str] = []
        try:
            for piece in self.client.stream_chat(self.conv.payload(self.model), self._hold):
                pieces.append(piece)
                self.out.write(piece)
                self.out.flush()
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                self._conn.close()  # the server sees the client go and stops generating
            self.say("\n(answer stopped; it is not kept in the conversation)")
            self.conv.messages.pop()
            return None
        except (ServerError, OSError, ValueError) as exc:
            self.say(f"\nerror: {exc}")
            self.conv.messages.pop()
            return None
        answer = "".join(pieces)
        self.say()
        self.conv.messages.append({"role": "assistant", "content": answer})
        return answer

    def _hold(self, conn: Any) -> None:
        self._conn = conn

    def command(self, line: str) -> bool:
        """Run a /command; False to leave."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("/bye", "/exit", "/quit"):
            return False
        if name == "/help":
            self.say(HELP)
        elif name == "/clear":
            self.conv.messages.clear()
            self.say("(conversation cleared)")
        elif name == "/show":
            self.say(f"model: {self.model}   server: {self.client.url}")
            self.say(f"system: {self.conv.system or '(none)'}")
            self.say("   ".join(f"{k}: {v}" for k, v in self.conv.settings.items()))
            self.say(f"turns: {sum(1 for m in self.conv.messages if m['role'] == 'user')}")
        elif name == "/set":
            self._set(rest)
        elif name in ("/save", "/load"):
            if not rest:
                self.say(f"usage: {name} FILE")
            elif name == "/save":
                try:
                    Path(rest).expanduser().write_text(self.conv.to_json() + "\n", encoding="utf-8")
                    self.say(f"(saved {len(self.conv.messages)} messages to {rest})")
                except OSError as exc:
                    self.say(f"error: cannot write {rest}: {exc.strerror}")
            else:
                try:
                    self.conv = Conversation.from_json(Path(rest).expanduser().read_text(encoding="utf-8"))
                    self.say(f"(loaded {len(self.conv.messages)} messages from {rest})")
                except (OSError, ValueError) as exc:
                    self.say(f"error: cannot load {rest}: {getattr(exc, 'strerror', None) or exc}")
        else:
            self.say(f"unknown command {name}; /help lists them")
        return True

    def _set(self, rest: str) -> None:
        key, _, value = rest.partition(" ")
        value = value.strip()
        if key == "system":
            self.conv.system = value or None
            self.say("(system prompt set)" if value else "(system prompt removed)")
            return
        if key not in SETTINGS or not value:
            self.say("usage: /set system TEXT | /set temperature N | /set top_p N | /set max_tokens N")
            return
        kind, low, high = SETTINGS[key]
        try:
            number = kind(value)
        except ValueError:
            self.say(f"error: {key} takes a number from {low:g} to {high:g}")
            return
        if not low <= number <= high:
            self.say(f"error: {key} takes a number from {low:g} to {high:g}")
            return
        self.conv.settings[key] = number
        self.say(f"({key} = {number})")

    def _read_message(self) -> str:
        line = self.read(">>> ")
        if line.strip() != '"""' and not line.lstrip().startswith('"""'):
            return line
        lines = [line.lstrip()[3:]]
        if lines[0].endswith('"""') and len(lines[0]) >= 3:  # noqa: PLR2004 - """one line"""
            return lines[0][:-3]
        while True:
            more = self.read("... ")
            if more.rstrip().endswith('"""'):
                lines.append(more.rstrip()[:-3])
                return "\n".join(part for part in lines if part or len(lines) > 1).strip("\n")
            lines.append(more)

    def loop(self) -> int:
        self.say(f"Chatting with {self.model} at {self.client.url}. /help for commands, /bye to leave.")
        while True:
            try:
                line = self._read_message()
            except EOFError:
                self.say()
                return 0
            except KeyboardInterrupt:
                self.say("\n(use /bye or Ctrl-D to leave)")
                continue
            if not line.strip():
                continue
            if line.startswith("/"):
                if not self.command(line.strip()):
                    return 0
                continue
            self.ask(line)


def history(path: Path) -> Callable[[], None]:
    """readline history in ``path``, when the terminal has readline; returns what saves it."""
    try:
        import readline
    except ImportError:
        return lambda: None
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(1000)

    def save() -> None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)

    return save
