"""Pure logic of mf serve and mf chat: request checks, stop strings, what is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.chat import Conversation
from orchestrator.serving import ServeRequest, check_request, default_model_id
from providers.errors import ConfigurationError, UnsupportedActionError
from providers.runtime.actions import check_action_supported
from providers.runtime.serve import BadRequest, StopScanner, parse_params


def test_stop_strings_cut_the_text_even_across_pieces() -> None:
    scanner = StopScanner(["\n\n", "END"])
    out = "".join(scanner.feed(p) for p in ["Hello", " wor", "ld", "\n", "\nmore"])
    assert out == "Hello world" and scanner.stopped
    scanner = StopScanner(["END"])
    out = "".join(scanner.feed(p) for p in ["a E", "N", "d"]) + scanner.flush()
    assert out == "a ENd" and not scanner.stopped  # a near miss is released whole


def test_requests_are_checked_and_capped() -> None:
    params = parse_params({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                           "max_tokens": 10_000}, chat=True, cap=64)
    assert params.max_tokens == 64 and params.messages == [{"role": "user", "content": "hi"}]
    assert params.temperature == 1.0  # OpenAI's default
    for body, param in [({"messages": []}, "messages"), ({"messages": [{"role": "x"}]}, "messages"),
                        ({"prompt": "a", "temperature": 3}, "temperature"), ({"prompt": "a", "n": 2}, "n"),
                        ({"prompt": "a", "max_tokens": 0}, "max_tokens"), ({"prompt": "a", "stop": [""]}, "stop")]:
        with pytest.raises(BadRequest) as info:
            parse_params(body, chat="messages" in body, cap=64)
        assert info.value.status == 400 and info.value.param == param


def test_a_wide_host_needs_expose_and_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MF_SERVE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="would let other machines"):
        check_request(ServeRequest(provider="gguf", model="m.gguf", host="0.0.0.0"))  # noqa: S104
    with pytest.raises(ConfigurationError, match="--api-key"):
        check_request(ServeRequest(provider="gguf", model="m.gguf", host="0.0.0.0", expose=True))  # noqa: S104
    with pytest.raises(ConfigurationError, match="8 characters"):
        check_request(ServeRequest(provider="gguf", model="m.gguf", api_key="short"))
    check_request(ServeRequest(provider="gguf", model="m.gguf", host="0.0.0.0", expose=True, api_key="long-enough"))  # noqa: S104


def test_model_ids(tmp_path: Path) -> None:
    assert default_model_id(ServeRequest(provider="gguf", model="/x/SmolLM2.Q4_1.gguf")) == "SmolLM2.Q4_1"
    (tmp_path / "run1" / "adapter").mkdir(parents=True)
    req = ServeRequest(provider="huggingface", model="/m/base", adapter=tmp_path / "run1" / "adapter")
    assert default_model_id(req) == "base+run1"


def test_only_providers_with_generate_stream_serve() -> None:
    class Plain:
        actions = ("validate", "load")

    class Streams(Plain):
        def generate_stream(self, *args: object, **kwargs: object) -> None: ...

    with pytest.raises(UnsupportedActionError, match="Providers that serve: .*gguf") as info:
        check_action_supported("plain", Plain, "serve")
    assert info.value.exit_code == 6
    check_action_supported("streams", Streams, "serve")


def test_a_saved_conversation_loads_back() -> None:
    conv = Conversation(system="Be brief.", messages=[{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "hello"}])
    conv.settings["temperature"] = 0.0
    back = Conversation.from_json(conv.to_json())
    assert back == conv
    assert back.payload("m")["messages"][0] == {"role": "system", "content": "Be brief."}
    with pytest.raises(ValueError):
        Conversation.from_json("[1, 2]")

