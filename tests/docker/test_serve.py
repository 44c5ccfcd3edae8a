"""`mf serve` and `mf chat`, for real: the provider's image, a real model, clients no one here wrote (the
`openai` package, curl-like raw sockets, tmux driving `mf chat` in a terminal)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import job_containers, mf, sigint_as_at_a_terminal

pytestmark = pytest.mark.docker

QUESTION = "What is the capital of France? Answer in one word."


def _serve(*args: str, timeout: float = 600) -> dict[str, Any]:
    res = mf("serve", *args, "--port", "0", "--detach", "--json", timeout=timeout)
    assert res.code == 0, res.stderr
    ready = res.events[0]
    assert ready["event"] == "ready", res.stdout
    return ready


def _key(server: dict[str, Any]) -> str:
    return Path(server["key_file"]).read_text().strip()


def _client(server: dict[str, Any], key: str | None = None) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=server["url"], api_key=key or _key(server), max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def gguf_server(gguf_image: str, demo_model: Path) -> Iterator[dict[str, Any]]:
    server = _serve("--provider", "gguf", "--model", str(demo_model))
    yield server
    assert mf("jobs", "cancel", server["job"]).code == 0
    assert not Path(server["key_file"]).exists(), "the key file outlived its server"


def _port(server: dict[str, Any]) -> int:
    return int(server["url"].rsplit(":", 1)[1].split("/")[0])


def test_openai_client_lists_chats_and_streams(gguf_server: dict[str, Any]) -> None:
    import openai

    client = _client(gguf_server)
    assert [m.id for m in client.models.list()] == [gguf_server["model_id"]] == ["SmolLM2-135M-Instruct.Q4_1"]
    answer = client.chat.completions.create(model=gguf_server["model_id"], temperature=0, max_tokens=24,
                                            messages=[{"role": "user", "content": QUESTION}])
    text = answer.choices[0].message.content
    assert "Paris" in text, text
    assert answer.usage.completion_tokens > 0
    chunks = client.chat.completions.create(model=gguf_server["model_id"], temperature=0, max_tokens=24, stream=True,
                                            messages=[{"role": "user", "content": QUESTION}])
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 2, pieces  # streamed token by token, not in one piece
    assert "".join(pieces) == text
    completion = client.completions.create(model=gguf_server["model_id"], prompt="The capital of France is",
                                           max_tokens=8, temperature=0, stop=["."])
    assert completion.choices[0].text.strip() == "Paris"
    with pytest.raises(openai.AuthenticationError):
        _client(gguf_server, key="wrong-key-123").models.list()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=4)


def test_a_detached_server_is_listed_with_its_url(gguf_server: dict[str, Any]) -> None:
    res = mf("jobs", "list", "--json")
    assert res.code == 0, res.stderr
    [row] = [r for r in json.loads(res.stdout) if r["id"] == gguf_server["job"]]
    assert row["state"] == "RUNNING" and row["action"] == "serve"
    assert row["url"] + "/v1" == gguf_server["url"]


def test_the_key_is_a_file_not_argv_env_or_inspect(gguf_server: dict[str, Any], docker_client: Any) -> None:
    key_file = Path(gguf_server["key_file"])
    assert key_file.stat().st_mode & 0o077 == 0, oct(key_file.stat().st_mode)
    key = _key(gguf_server)
    container = docker_client.containers.get(gguf_server["job"].removeprefix("docker-"))
    assert key not in json.dumps(container.attrs)
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    assert container.attrs["HostConfig"]["PortBindings"] in (None, {})
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    relay = int((key_file.parent / "relay.pid").read_text())
    assert key not in Path(f"/proc/{relay}/cmdline").read_text() + Path(f"/proc/{relay}/environ").read_text()


def _addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if " lo " not in line]


def test_reachable_from_loopback_only(gguf_server: dict[str, Any]) -> None:
    port = _port(gguf_server)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    others = _addresses()
    assert others, "this machine has no address but loopback"
    for address in others:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
            pass
    raw = _raw(port, "GET /health HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n")
    assert raw.startswith("HTTP/1.1 400") and "Host header" in raw  # DNS rebinding


def _raw(port: int, request: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def _stream_request(port: int, key: str, max_tokens: int, content: str = "Tell me a long story about a dragon.") -> bytes:
    body = json.dumps({"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                       "temperature": 0, "stream": True})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def _timed_answer(client: Any, model: str, tokens: int) -> float:
    started = time.perf_counter()
    out = client.completions.create(model=model, prompt="Once upon a time", max_tokens=tokens, temperature=0)
    assert out.usage.completion_tokens == tokens
    return time.perf_counter() - started


def test_streams_survive_other_requests_and_a_dropped_client_frees_the_server(gguf_server: dict[str, Any]) -> None:
    client, model, port, key = _client(gguf_server), gguf_server["model_id"], _port(gguf_server), _key(gguf_server)
    normal = _timed_answer(client, model, 32)
    # /health and /v1/models during a stream: answered at once, and the stream goes on to its end
    done: list[str] = []
    stream = client.chat.completions.create(model=model, temperature=0, max_tokens=96, stream=True,
                                            messages=[{"role": "user", "content": "Tell me a long story."}])
    first = next(iter(stream))
    assert first.choices
    started = time.perf_counter()
    assert _raw(port, f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").startswith("HTTP/1.1 200")
    assert [m.id for m in client.models.list()] == [model]
    assert time.perf_counter() - started < 1.0, "health and models waited for the generation"
    finish = None
    for chunk in stream:
        if chunk.choices:
            done.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "length", "the stream was cut short"
    # a client that drops mid-stream: the next request runs at normal speed
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(_stream_request(port, key, 2000))
    seen = b""
    while seen.count(b"data:") < 4:  # the role's chunk, then tokens: it is generating
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    sock.close()
    after = _timed_answer(client, model, 32)
    assert after < normal * 2 + 1.0, f"{after:.2f} s after a dropped stream vs {normal:.2f} s: still generating for it"


def test_two_concurrent_clients_both_get_complete_answers(gguf_server: dict[str, Any]) -> None:
    client, model = _client(gguf_server), gguf_server["model_id"]
    alone = client.completions.create(model=model, prompt="Once upon a time", max_tokens=40, temperature=0)
    answers: dict[int, Any] = {}

    def ask(i: int) -> None:
        answers[i] = client.completions.create(model=model, prompt="Once upon a time", max_tokens=40, temperature=0)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers) == [0, 1]
    for answer in answers.values():
        assert answer.usage.completion_tokens == 40 and answer.choices[0].text == alone.choices[0].text


def test_a_chat_template_that_reaches_for_python_fails_cleanly(gguf_image: str, demo_model: Path, tmp_path: Path) -> None:
    """llama-cpp-python renders the GGUF's chat template in a sandboxed Jinja environment: a template that
    climbs to ``__class__``/``__subclasses__`` (to reach ``os``) is refused, as an error that says so, and the
    server goes on."""
    import openai

    evil = tmp_path / "evil.gguf"
    template = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--chat-template", template, "--force",
                    str(demo_model), str(evil)], check=True, capture_output=True)
    evil.chmod(0o644)
    tmp_path.chmod(0o755)
    server = _serve("--provider", "gguf", "--model", str(evil))
    try:
        client = _client(server)
        with pytest.raises(openai.InternalServerError, match="chat template failed: SecurityError: access to attribute "
                                                              "'__class__' of 'str' object is unsafe"):
            client.chat.completions.create(model=server["model_id"], messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=4)
        out = client.completions.create(model=server["model_id"], prompt="The capital of France is", max_tokens=4,
                                        temperature=0)
        assert "Paris" in out.choices[0].text
    finally:
        assert mf("jobs", "cancel", server["job"]).code == 0


def test_ctrl_c_stops_the_server_and_leaves_nothing(gguf_image: str, demo_model: Path, docker_client: Any) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "serve", "--provider", "gguf", "--model",
                             str(demo_model), "--port", "0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy(), preexec_fn=sigint_as_at_a_terminal)
    assert proc.stdout is not None
    ready = None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "ready":
            ready = event
            break
    assert ready is not None, proc.stderr.read() if proc.stderr else ""
    assert ready["ready_seconds"] < 30
    client = _client(ready)
    stream = client.completions.create(model=ready["model_id"], prompt="Once upon a time", max_tokens=2000,
                                       temperature=0, stream=True)
    next(iter(stream))
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    assert code == 130
    assert time.monotonic() - started < 10  # within the stop grace
    assert not job_containers(docker_client)
    assert not Path(ready["key_file"]).parent.exists(), "the server's folder outlived it"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", _port(ready)), timeout=3).close()


def _server_folders() -> set[str]:
    from orchestrator.serving import servers_root

    return set(os.listdir(servers_root())) if servers_root().exists() else set()


@pytest.mark.parametrize("case", ["port-in-use", "not-a-model", "wide-host", "cannot-serve", "oom"])
def test_bad_serve_input_is_one_line_and_leaves_nothing(case: str, gguf_image: str, demo_model: Path, tmp_path: Path,
                                                        docker_client: Any, use_plugins: Any) -> None:
    args = ["serve", "--provider", "gguf", "--model", str(demo_model), "--port", "0"]
    blocker = None
    if case == "port-in-use":
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        args[-1] = str(blocker.getsockname()[1])
        code, says = 2, "is in use"
    elif case == "not-a-model":
        text = tmp_path / "notes.gguf"
        text.write_text("not a model\n")
        text.chmod(0o644)
        tmp_path.chmod(0o755)
        args[4], code, says = str(text), 3, "gguf"
    elif case == "wide-host":
        args += ["--host", "0.0.0.0"]  # noqa: S104
        code, says = 2, "--expose"
    elif case == "cannot-serve":
        use_plugins("modelforge-custom-provider")
        args[2], code, says = "custom", 6, "Providers that serve: ['gguf', 'huggingface', 'unsloth']"
    else:
        args += ["--memory", "40m"]
        code, says = 10, "memory"
    before = _server_folders()
    res = mf(*args, timeout=300)
    if blocker is not None:
        blocker.close()
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.code == code, res.stderr
    errors = [line for line in lines if line.startswith("Error:")]  # what came before is the job's progress
    assert errors == lines[-1:] and says in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not job_containers(docker_client)
    after = _server_folders()
    assert after <= before, f"left a server folder: {after - before}"


# -- mf chat in a real terminal -------------------------------------------------------------------------
class Tmux:
    def __init__(self, name: str, command: str) -> None:
        self.name = name
        self.tmux = shutil.which("tmux")
        if self.tmux is None:
            pytest.fail("tmux is not installed (scripts/ensure-services.sh installs it)")
        env = " ".join(f"{k}={v}" for k, v in {"PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                                                "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", ""),
                                                "HOME": os.environ.get("HOME", "/root")}.items() if v)
        subprocess.run([self.tmux, "new-session", "-d", "-s", name, "-x", "200", "-y", "50",
                        f"env {env} {sys.executable} -m orchestrator {command}; sleep 30"], check=True)

    def send(self, *keys: str) -> None:
        subprocess.run([self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run([self.tmux, "capture-pane", "-p", "-J", "-S", "-200", "-t", self.name],
                              capture_output=True, text=True, check=True).stdout

    def wait_for(self, text: str, count: int = 1, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} (x{count}) never showed:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([self.tmux, "kill-session", "-t", self.name], check=False)


def _answers(screen: str) -> list[str]:
    """The answers on the screen: the text between one prompt line and the next."""
    blocks = screen.split(">>> ")[1:]
    return [block.split("\n", 1)[1].strip() if "\n" in block else "" for block in blocks]


def test_mf_chat_in_a_terminal(gguf_server: dict[str, Any], tmp_path: Path) -> None:
    term = Tmux(f"mfchat{os.getpid()}", "chat --temperature 0 --max-tokens 24")
    saved = tmp_path / "conv.json"
    try:
        term.wait_for(">>> ")
        # two turns: the second answer depends on the first (the same question alone is answered otherwise)
        term.send("My favourite colour is green. Remember it.", "Enter")
        term.wait_for(">>> ", 2)
        term.send("What is my favourite colour?", "Enter")
        screen = term.wait_for(">>> ", 3)
        with_history = _answers(screen)[1]
        term.send("/save " + str(saved), "Enter")
        term.wait_for("(saved 4 messages")
        term.send("/clear", "Enter")
        term.wait_for("(conversation cleared)")
        term.send("What is my favourite colour?", "Enter")
        screen = term.wait_for(">>> ", 6)
        alone = [a for a in _answers(screen) if a and not a.startswith("(")][-1]
        assert with_history and with_history != alone, (with_history, alone)
        # Ctrl-C mid-answer stops the answer, not the chat
        term.send("/set max_tokens 2000", "Enter")
        term.wait_for("(max_tokens = 2000)")
        term.send("Tell me a very long story about a dragon.", "Enter")
        time.sleep(1.5)
        term.send("C-c")
        term.wait_for("(answer stopped")
        term.send("/set max_tokens 24", "Enter")
        term.wait_for("(max_tokens = 24)")
        term.send(QUESTION, "Enter")
        screen = term.wait_for("Paris")
        # /load brings the saved conversation back
        term.send("/load " + str(saved), "Enter")
        term.wait_for("(loaded 4 messages")
        term.send("/show", "Enter")
        term.wait_for("turns: 2")
        assert json.loads(saved.read_text())["messages"][1]["role"] == "assistant"
        term.send("/bye", "Enter")
    finally:
        term.close()


# -- huggingface: a finished train output, base + adapter ------------------------------------------------
_PEFT_GREEDY = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
tok = AutoTokenizer.from_pretrained("/base")
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("/base", torch_dtype=torch.float32), "/adapter")
out = {}
ids = tok(sys.argv[1], return_tensors="pt")
gen = model.generate(**ids, max_new_tokens=int(sys.argv[2]), do_sample=False, pad_token_id=tok.pad_token_id)
out["completion"] = tok.decode(gen[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
chat = tok.apply_chat_template([{"role": "user", "content": sys.argv[3]}], add_generation_prompt=True,
                               return_tensors="pt", return_dict=True)
gen = model.generate(**chat, max_new_tokens=int(sys.argv[2]), do_sample=False, pad_token_id=tok.pad_token_id)
out["chat"] = tok.decode(gen[0][chat["input_ids"].shape[1]:], skip_special_tokens=True)
print(json.dumps(out))
"""


def test_a_finished_run_serves_what_the_adapted_model_generates(trained_run: Path, smollm2_hf: Path, hf_image: str,
                                                                  docker_client: Any) -> None:
    server = _serve(str(trained_run))
    try:
        assert server["model_id"] == "run"
        client = _client(server)
        served = client.completions.create(model="run", prompt="Once upon a time", max_tokens=24, temperature=0)
        chat = client.chat.completions.create(model="run", max_tokens=24, temperature=0,
                                              messages=[{"role": "user", "content": QUESTION}])
        streamed = client.chat.completions.create(model="run", max_tokens=24, temperature=0, stream=True,
                                                  messages=[{"role": "user", "content": QUESTION}])
        streamed_text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    finally:
        assert mf("jobs", "cancel", server["job"]).code == 0
    out = docker_client.containers.run(
        hf_image, entrypoint=["python", "-c", _PEFT_GREEDY, "Once upon a time", "24", QUESTION], network_mode="none",
        remove=True, environment={"HOME": "/tmp", "HF_HUB_OFFLINE": "1"}, user="1000:1000",
        volumes={str(smollm2_hf): {"bind": "/base", "mode": "ro"},
                 str(trained_run / "adapter"): {"bind": "/adapter", "mode": "ro"}})
    reference = json.loads(out.decode().strip().splitlines()[-1])
    # the server merges the adapter into the base; the reference keeps peft's separate LoRA product
    assert served.choices[0].text == reference["completion"]
    assert chat.choices[0].message.content == reference["chat"] == streamed_text


def test_the_guides_generate_stream_example_streams(hf_image: str, smollm2_hf: Path, docker_client: Any) -> None:
    """docs/custom-providers.md's generate_stream, as printed, in the huggingface image: a completion and a chat."""
    import re

    from tests.conftest import ROOT

    guide = (ROOT / "docs" / "custom-providers.md").read_text()
    section = guide.split("### Serving (optional): `generate_stream`", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    code = "from typing import Any\n" + example.group(1).replace("    ...\n", "    pass\n", 1) + (
        "\nimport json\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained('/base'); m = AutoModelForCausalLM.from_pretrained('/base')\n"
        "p = CustomProvider()\n"
        "print(json.dumps([list(p.generate_stream(m, tok, prompt='The capital of France is', max_tokens=4, "
        "temperature=0)), list(p.generate_stream(m, tok, messages=[{'role': 'user', 'content': 'Hi'}], "
        "max_tokens=3, temperature=0))]))\n")
    out = docker_client.containers.run(hf_image, entrypoint=["python", "-c", code], network_mode="none", remove=True,
                                       environment={"HOME": "/tmp", "HF_HUB_OFFLINE": "1"}, user="1000:1000",
                                       volumes={str(smollm2_hf): {"bind": "/base", "mode": "ro"}})
    completion, chat = json.loads(out.decode().strip().splitlines()[-1])
    assert completion[0] == 5 and "".join(completion[1:]).strip().startswith("Paris")  # prompt tokens, then text
    assert isinstance(chat[0], int) and len(chat) == 4 and "".join(chat[1:]).strip()
