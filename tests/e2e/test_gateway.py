"""The host gateway between the official openai client and real supervisor processes whose
engines are the fake one: on-demand activation, swaps in a gpu_group, queue bounds, the idle
TTL, errors in OpenAI's shape, an engine dying mid-stream, and a gateway restart that leaves
the engines alone. tests/e2e/test_gateway_real_engine.py does the same on the real engine."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import prometheus_client.parser
import pytest
from vllm_supervisor.ctl.client import Client, CtlError

from tests.e2e.engine_proc import free_port
from tests.e2e.gateway_proc import GatewayProc, Http
from tests.e2e.supervisor_proc import SupervisorProc
from tests.helpers import both_active, fake_engine_venv, write_config

MODES = {  # FAKE_MODE per model
    "a": "load=0.5",
    "b": "load=0.5",
    "c": "load=0.3,stream_die=2",
    "t": "load=0.3,stream_cut=2",
    "e": "load=0.3,chat_empty",  # chat_fallback: on_failure (FALLBACK)
    "f": "load=0.3",  # chat_fallback: on_failure, and chat answers
    "u": "load=0.3,stream_cut=2",  # chat_fallback: always
    "slow": "load=4",
    "k": "load=0.3",  # its engine wants a key (api_key_file): the gateway must add it
    "s": "load=0.3,slow_completion=3",
}
FALLBACK = {"e": "on_failure", "f": "on_failure", "u": "always"}  # chat_fallback per model


class House:
    def __init__(self, tmp: Path, models: list[str], gateway: dict[str, object]) -> None:
        self.port = free_port()
        settings = {"listen": f'"127.0.0.1:{self.port}"', **gateway}
        flow = "{" + ", ".join(f"{k}: {v}" for k, v in settings.items()) + "}"
        venv = fake_engine_venv(tmp)
        (tmp / "engine.key").write_text("engine-s3cret\n")
        body = "".join(
            f"""
      {m}:
        model: org/{m}
        served_model_name: [{m}-served]
        port: {free_port()}
        autostart: false
        env: {{FAKE_MODE: "{MODES[m]}"}}
        {"gpu_group: card0" if m in "ab" else ""}
        {f"api_key_file: {tmp / 'engine.key'}" if m == "k" else ""}
        {f"chat_fallback: {FALLBACK[m]}" if m in FALLBACK else ""}
"""
            for m in models
        )
        self.config = write_config(
            tmp,
            f"""
    gateway: {flow}
    defaults:
      venv: {venv}
      startup: {{poll_interval: 0.1}}
      health: {{interval: 0.5, timeout: 2, failures: 2}}
      restart: {{backoff_initial: 0.2}}
      stop: {{grace: 5}}
    models:{body}""",
        )
        self.run = tmp / "run"
        self.sups: dict[str, SupervisorProc] = {}
        for m in models:
            self.sups[m] = SupervisorProc(m, self.config, tmp / m, runtime_dir=self.run)
        for sup in self.sups.values():
            sup.wait_for("READY")  # the service is up; its engine is inactive
        self.tmp = tmp
        self.gateway = self.start_gateway()

    def start_gateway(self) -> GatewayProc:
        gw = GatewayProc(self.config, self.run, self.port, self.tmp / f"gw{time.monotonic_ns()}")
        gw.wait_ready()
        return gw

    def client(self, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key="none", **kw)  # type: ignore[arg-type]

    def admin_activate(self, model: str) -> str:
        """Activate MODEL through the gateway's admin socket; the state it ends in."""
        client = Client([], "gateway", timeout=60, path=self.gateway.admin_socket)
        return str(client.post_json("/admin/activate", {"model": model})["state"])

    def state(self, model: str) -> str:
        try:
            return str(Client([self.run], model, timeout=3).get_json("/v1/state")["state"])
        except CtlError:
            return "down"

    def cleanup(self) -> None:
        assert self.gateway.cleanup() == [], "gateway processes left behind"
        for sup in self.sups.values():
            assert sup.cleanup() == [], "processes left behind"


@pytest.fixture
def house(tmp_path: Path) -> Iterator[Callable[..., House]]:
    made: list[House] = []

    def make(models: list[str], **gateway: object) -> House:
        made.append(House(tmp_path, models, gateway or {"max_queue": 8, "max_body": 4096}))
        return made[-1]

    yield make
    for h in made:
        h.cleanup()


def chat(c: openai.OpenAI, model: str, **kw: object) -> openai.types.chat.ChatCompletion:
    return c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        **kw,  # type: ignore[call-overload]
    )


def test_the_first_request_activates_the_model_streaming_or_not(
    house: Callable[..., House],
) -> None:
    h = house(["a"])
    assert h.state("a") == "inactive"
    raw = h.client().chat.completions.with_raw_response.create(
        model="a-served", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert raw.headers["x-accel-buffering"] == "no"
    assert raw.parse().model == "a-served" and h.state("a") == "ready"
    chunks = list(chat(h.client(), "a-served", stream=True))
    assert len(chunks) == 5 and all(c.model == "a-served" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "t0 t1 t2 t3 t4 "
    assert h.gateway.models()["a"]["served"] == 2


def test_a_request_for_the_other_member_swaps_with_no_moment_of_both(
    house: Callable[..., House],
) -> None:
    h = house(["a", "b"])
    assert chat(h.client(), "a-served").model == "a-served"
    with both_active(lambda: (h.state("b"), h.state("a")), ("inactive", "down"), 0.01) as both:
        assert chat(h.client(), "b-served").model == "b-served"
    assert (h.state("a"), h.state("b")) == ("inactive", "ready")
    assert both == [], f"two members active at once: {both}"


def test_twenty_concurrent_requests_across_a_swap_all_end_and_none_goes_astray(
    house: Callable[..., House],
) -> None:
    h = house(["a", "b"])
    c = h.client(max_retries=0, timeout=60)

    def one(i: int) -> str:
        model = "a-served" if i % 2 else "b-served"
        try:
            got = chat(c, model)
        except openai.RateLimitError:
            return "429"
        assert got.model == model  # never answered by the other model
        return "200"

    t0 = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert set(results) <= {"200", "429"} and results.count("200") >= 16, results
    assert time.monotonic() - t0 < 60
    models = h.gateway.models()
    assert models["a"]["in_flight"] == models["b"]["in_flight"] == 0
    assert models["a"]["queued"] == models["b"]["queued"] == 0


def test_a_client_that_disconnects_while_queued_leaves_the_queue(
    house: Callable[..., House],
) -> None:
    h = house(["slow"])
    body = b'{"model": "slow-served", "prompt": "hi", "max_tokens": 1}'
    s = socket.create_connection(("127.0.0.1", h.gateway.port))
    s.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    deadline = time.monotonic() + 5
    while h.gateway.models()["slow"]["queued"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.close()
    while h.gateway.models()["slow"]["queued"] != 0:
        assert time.monotonic() < deadline + 5, h.gateway.models()
        time.sleep(0.05)


def test_the_idle_ttl_deactivates_after_the_last_request(house: Callable[..., House]) -> None:
    h = house(["a"], ttl=1.5)
    chat(h.client(), "a-served")
    ended = time.monotonic()
    while h.state("a") != "inactive":
        assert time.monotonic() - ended < 15, h.gateway.models()
        time.sleep(0.1)
    assert time.monotonic() - ended >= 1.4


def test_the_gateways_own_errors_are_in_openais_shape(house: Callable[..., House]) -> None:
    h = house(["a"])
    c = h.client(max_retries=0)
    with pytest.raises(openai.NotFoundError) as nf:
        chat(c, "nope")
    assert "model 'nope' does not exist here; known: a-served" in str(nf.value)
    http = Http()
    bad = http.request("POST", h.gateway.url + "/v1/completions", body=b"{not json")
    assert bad.status == 400 and bad.json()["error"]["code"] == "invalid_json"
    big = http.request("POST", h.gateway.url + "/v1/completions", body=b"x" * 5000)
    assert big.status == 413 and big.json()["error"]["type"] == "invalid_request_error"
    nomodel = http.request("POST", h.gateway.url + "/v1/completions", body=b"{}")
    assert nomodel.status == 400 and "naming a 'model'" in nomodel.json()["error"]["message"]


def stream_until_error(c: openai.OpenAI, model: str, match: str | None = None) -> list[str]:
    """The texts of a chat stream that must end in an error event (APIError, MATCH); the
    load's progress chunks the gateway sends first (gateway/progress.py) are not counted."""
    got: list[str] = []
    with pytest.raises(openai.APIError, match=match):
        for chunk in chat(c, model, stream=True):
            if not chunk.id.startswith("chatcmpl-load-"):
                got.append(chunk.choices[0].delta.content or "")
    return got


DIED = "stopped while answering, so this answer is incomplete. Try again in a moment."


def test_an_engine_that_dies_mid_stream_ends_the_stream_and_the_next_request_is_served(
    house: Callable[..., House],
) -> None:
    h = house(["c"])
    c = h.client(max_retries=0, timeout=30)
    assert stream_until_error(c, "c-served", f"^model c {DIED}$") == ["t0 ", "t1 "]
    assert chat(h.client(timeout=60), "c-served").model == "c-served"  # after the restart
    # The operator's line: one, with the model and the engine's own error.
    lines = [ln for ln in h.gateway.text().splitlines() if "code=engine_failed" in ln]
    assert len(lines) == 1 and lines[0].startswith("<3>request answered with an error")
    assert "model=c status=502" in lines[0] and "fix=" in lines[0]


def test_a_stream_that_ends_without_done_gives_the_client_an_error(
    house: Callable[..., House],
) -> None:
    h = house(["t"])
    c = h.client(max_retries=0, timeout=30)
    assert stream_until_error(c, "t-served", f"^model t {DIED}$") == ["t0 ", "t1 "]
    assert chat(c, "t-served").model == "t-served"  # whole answers are not touched
    assert 'fix="the engine\'s stream ended without [DONE]"' in h.gateway.text()


def test_a_fallback_stream_that_ends_without_done_gives_the_client_an_error(
    house: Callable[..., House],
) -> None:
    """The same through chat_fallback's completions stream, reshaped into chat chunks."""
    h = house(["u"])
    c = h.client(max_retries=0, timeout=30)
    assert stream_until_error(c, "u-served", f"^model u {DIED}$") == ["t0 ", "t1 "]
    assert 'fix="the engine\'s stream ended without [DONE]"' in h.gateway.text()


def test_on_failure_replaces_an_empty_streamed_chat_answer_and_relays_one_that_answers(
    house: Callable[..., House],
) -> None:
    h = house(["e", "f"])
    c = h.client(max_retries=0, timeout=30)
    for model, fell_back, text in (("e", "completions (empty)", "t0 t1 t2 t3 t4 "),
                                   ("f", None, "t0 t1 t2 t3 t4 ")):  # fmt: skip
        # Loaded first: a stream that waits for a load has sent its headers before the
        # fallback is decided (gateway/progress.py), so it carries no fallback header.
        assert h.admin_activate(model) == "ready"
        raw = c.chat.completions.with_raw_response.create(
            model=f"{model}-served", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert raw.headers.get("X-Vllm-Supervisor-Chat-Fallback") == fell_back, model
        chunks = list(raw.parse())
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == text, model
        assert chunks[0].choices[0].delta.role == "assistant"
        # Not streamed: the empty answer is replaced too (the whole-answer rule).
        whole = c.chat.completions.with_raw_response.create(
            model=f"{model}-served", messages=[{"role": "user", "content": "hi"}]
        )
        assert whole.headers.get("X-Vllm-Supervisor-Chat-Fallback") == fell_back, model
        assert whole.parse().choices[0].message.content == "x"  # completions give "x" too


def test_restarting_the_gateway_leaves_a_serving_engine_alone(house: Callable[..., House]) -> None:
    h = house(["a"])
    chat(h.client(), "a-served")
    pid = Client([h.run], "a", timeout=3).get_json("/v1/state")["pid"]
    h.gateway.proc.terminate()
    assert h.gateway.proc.wait(15) == 0
    h.gateway.cleanup()
    h.gateway = h.start_gateway()
    assert chat(h.client(), "a-served").model == "a-served"
    st = Client([h.run], "a", timeout=3).get_json("/v1/state")
    assert st["state"] == "ready" and st["pid"] == pid


def test_one_metrics_scrape_covers_the_gateway_and_every_instance(
    house: Callable[..., House],
) -> None:
    h = house(["a", "b"])
    chat(h.client(), "a-served")
    chat(h.client(), "b-served")  # a swap
    with pytest.raises(openai.NotFoundError):
        chat(h.client(max_retries=0), "nope")
    text = Http().request("GET", h.gateway.url + "/metrics").data.decode()
    families = {f.name: f for f in prometheus_client.parser.text_string_to_metric_families(text)}
    value = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert value[("vllm_gateway_requests_total", (("code", "200"), ("model", "a")))] == 1
    assert value[("vllm_gateway_requests_total", (("code", "200"), ("model", "b")))] == 1
    swap_in = (("model", "b"), ("outcome", "ready"), ("swap", "true"))
    assert value[("vllm_gateway_activations_total", swap_in)] == 1
    took = ("vllm_gateway_activation_duration_seconds_count", (("model", "b"), ("swap", "true")))
    assert value[took] == 1
    assert value[("vllm_gateway_in_flight", (("model", "a"),))] == 0
    # The instances' own series, merged: one family, both models.
    assert value[("vllm_supervisor_state", (("model", "b"), ("state", "ready")))] == 1
    assert value[("vllm_supervisor_state", (("model", "a"), ("state", "inactive")))] == 1
    assert text.count("# TYPE vllm_supervisor_state gauge") == 1


def test_litellms_router_reaches_both_models_through_the_via_gateway_export(
    house: Callable[..., House], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = house(["a", "b"])
    res = subprocess.run(
        [sys.executable, "-m", "vllm_supervisor.ctl.main", "export", "litellm", "--json",
         "--via-gateway", "--config-dir", str(h.config)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    entries = json.loads(res.stdout)["model_list"]
    assert {e["litellm_params"]["api_base"] for e in entries} == {h.gateway.url + "/v1"}
    # LiteLLM would fetch its model price list from the internet at import: keep it local.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    router = litellm.Router(model_list=entries)
    for name in ("a-served", "b-served", "a-served"):  # a swap each way
        answer = router.completion(
            model=name, max_tokens=4, messages=[{"role": "user", "content": "Hello"}]
        )
        assert answer.choices[0].message.content == "x"
    assert h.gateway.models()["a"]["state"] == "ready"


def admin(h: House, path: str, model: str | None = None) -> dict[str, object]:
    body = {} if model is None else {"model": model}
    client = Client([], "gateway", timeout=60, path=h.gateway.admin_socket)
    return client.post_json(path, body) if path != "/admin/state" else client.get_json(path)


def test_the_admin_paths_of_the_imageworks_proxy_on_the_gateways_socket(
    house: Callable[..., House],
) -> None:
    h = house(["a", "b"])
    got = admin(h, "/admin/activate", "a-served")  # a served name, as a chat proxy knows it
    assert got["model"] == "a" and got["state"] == "ready"
    env = {**os.environ, "VSUP_GATEWAY_SOCKET": str(h.gateway.admin_socket)}
    status = subprocess.run(
        [sys.executable, "-m", "vllm_supervisor.ctl.main", "gateway", "status"],
        capture_output=True, text=True, timeout=30, env=env, check=True,
    ).stdout  # fmt: skip
    assert re.search(r"^a\s+ready\s+0\s+0\s+1\b", status, re.M), status
    assert re.search(r"^b\s+inactive\b", status, re.M), status
    got = admin(h, "/admin/activate", "b")  # an instance name works too; a swap
    assert got["state"] == "ready" and h.state("a") == "inactive"
    got = admin(h, "/admin/deactivate", "b")
    assert got["state"] == "inactive" and h.state("b") == "inactive"
    with pytest.raises(CtlError, match="model 'zz' does not exist here"):
        admin(h, "/admin/activate", "zz")
    # Off the HTTP port unless admin keys are configured.
    off = Http().request("POST", h.gateway.url + "/admin/activate", body=b'{"model": "a"}')
    assert off.status == 404 and off.json()["error"]["code"] == "admin_not_here"


def test_admin_paths_on_the_http_port_need_an_admin_key_and_log_its_label(
    house: Callable[..., House], tmp_path: Path
) -> None:
    (tmp_path / "admin.keys").write_text("# key label\nk-7f3a9 imageworks-proxy\n")
    h = house(["a"], admin_keys_file=f'"{tmp_path / "admin.keys"}"')
    http = Http()
    url = h.gateway.url + "/admin/activate"
    refused = http.request("POST", url, body=b'{"model": "a"}')
    assert refused.status == 401 and refused.json()["error"]["type"] == "authentication_error"
    wrong = http.request("POST", url, body=b'{"model": "a"}', headers={"Authorization": "Bearer x"})
    assert wrong.status == 401
    ok = http.request(
        "POST", url, body=b'{"model": "a"}', headers={"Authorization": "Bearer k-7f3a9"}
    )
    assert ok.status == 200 and ok.json()["state"] == "ready"
    log = h.gateway.text()
    assert "imageworks-proxy" in log and "k-7f3a9" not in log


def test_client_keys_guard_the_gateway_and_engine_keys_never_reach_a_client(
    house: Callable[..., House], tmp_path: Path
) -> None:
    keys = tmp_path / "clients.keys"
    keys.write_text("client-k1 team-a\n")
    h = house(["k"], api_keys_file=f'"{keys}"')
    with pytest.raises(openai.AuthenticationError):
        chat(h.client(max_retries=0), "k-served")
    ok = openai.OpenAI(base_url=h.gateway.url + "/v1", api_key="client-k1", max_retries=0)
    assert chat(ok, "k-served").model == "k-served"  # the gateway added the engine's key
    # SIGHUP re-reads the file: the old key stops working, the new one works.
    keys.write_text("client-k2 team-a\n")
    h.gateway.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            chat(ok, "k-served")
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    new = openai.OpenAI(base_url=h.gateway.url + "/v1", api_key="client-k2", max_retries=0)
    assert chat(new, "k-served").model == "k-served"
    http = Http()
    seen = h.gateway.text()
    seen += http.request("GET", h.gateway.url + "/metrics").data.decode()
    seen += http.request(
        "GET", h.gateway.url + "/v1/models", headers={"Authorization": "Bearer client-k2"}
    ).data.decode()
    for secret in ("client-k1", "client-k2", "engine-s3cret"):
        assert secret not in seen


def test_a_rotated_engine_key_reaches_the_engine_without_a_401_to_the_client(
    house: Callable[..., House], tmp_path: Path
) -> None:
    """The gateway keeps an engine's key for EngineKeys.KEEP seconds. A key rotated inside
    that window (new file, `vllmctl reload`: the engine restarts with it) must not cost a
    client the engine's 401: the gateway asks again and retries once."""
    h = house(["k"])
    assert chat(h.client(max_retries=0), "k-served").model == "k-served"  # the key is kept
    (tmp_path / "engine.key").write_text("engine-r0tated\n")
    done = h.sups["k"].ctl("reload", "k")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restart" in done.stdout + done.stderr and h.state("k") == "ready"
    assert chat(h.client(max_retries=0), "k-served").model == "k-served"
    streamed = list(chat(h.client(max_retries=0), "k-served", stream=True))
    assert streamed and "engine-r0tated" not in h.gateway.text()


def test_vllmctl_goes_through_a_running_gateway(house: Callable[..., House]) -> None:
    """deactivate asks the gateway (which refuses while it has requests for the model in
    flight); activate tells it to look at once, so its view is never a refresh behind."""
    h = house(["s"])
    env = {**os.environ, "VSUP_GATEWAY_SOCKET": str(h.gateway.admin_socket)}

    def vllmctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vllm_supervisor.ctl.main", *args,
             "--socket-dir", str(h.run)],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip

    busy = threading.Thread(target=lambda: chat(h.client(timeout=60), "s-served"))
    busy.start()
    deadline = time.monotonic() + 10
    while h.gateway.models()["s"]["in_flight"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    refused = vllmctl("deactivate", "s", "--drain-timeout", "0")
    assert refused.returncode == 1 and "s is busy: 1 request(s) in flight" in refused.stderr
    busy.join()
    done = vllmctl("deactivate", "s", "--drain-timeout", "0")
    assert done.returncode == 0, done.stderr
    assert h.gateway.models()["s"]["state"] == "inactive" and h.state("s") == "inactive"
    assert vllmctl("activate", "s").returncode == 0
    assert h.gateway.models()["s"]["state"] == "ready"  # told at once, not at its next look
    direct = vllmctl("deactivate", "s", "--direct", "--drain-timeout", "0")
    assert direct.returncode == 0 and h.state("s") == "inactive"
