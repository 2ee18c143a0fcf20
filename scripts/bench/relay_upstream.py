"""A fast upstream that answers the way vLLM's OpenAI server does, for scripts/bench/relay.py:
raw asyncio, HTTP/1.1 keep-alive, so the proxy in front of it is what the benchmark sees.

Run by the supervisor as a model's engine (`entrypoint: ["{python}", THIS_FILE]`): it takes
vLLM's --port and --served-model-name and ignores the rest.
- GET /health: 200. GET /v1/models: the served name. GET /metrics: 404.
- POST /v1/completions: a small completion; with "stream": true, one SSE event per token
  (max_tokens of them), each its own HTTP chunk as uvicorn writes them, then [DONE]. A body
  field "x_pace_ms" spaces the events (a paced stream); without it they go out at once.
"""

import argparse
import asyncio
import json

OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
EVENT = (
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"%s","choices":'
    b'[{"index":0,"text":"a","logprobs":null,"finish_reason":null}]}\n\n'
)
DONE = b"data: [DONE]\n\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: bytes) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, _, rest = head.partition(b"\r\n")
            method, path, _ = line.split(b" ", 2)
            size = 0
            for h in rest.split(b"\r\n"):
                k, _, v = h.partition(b":")
                if k.strip().lower() == b"content-length":
                    size = int(v)
            body = await reader.readexactly(size) if size else b""
            if path == b"/health":
                writer.write(OK_HEAD % 0)
            elif path == b"/v1/models":
                data = b'{"object":"list","data":[{"id":"%s","object":"model"}]}' % name
                writer.write(OK_HEAD % len(data) + data)
            elif method == b"POST" and path in (b"/v1/completions", b"/v1/chat/completions"):
                req = json.loads(body or b"{}")
                n = int(req.get("max_tokens") or 1)
                if req.get("stream"):
                    await stream(writer, name, n, float(req.get("x_pace_ms") or 0) / 1000)
                else:
                    data = (
                        b'{"id":"cmpl-1","object":"text_completion","created":1,"model":"%s",'
                        b'"choices":[{"index":0,"text":"a","finish_reason":"length"}],'
                        b'"usage":{"prompt_tokens":1,"completion_tokens":%d,"total_tokens":%d}}'
                    ) % (name, n, n + 1)
                    writer.write(OK_HEAD % len(data) + data)
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def stream(writer: asyncio.StreamWriter, name: bytes, n: int, pace: float) -> None:
    writer.write(SSE_HEAD)
    event = chunk(EVENT % name)
    for i in range(n):
        writer.write(event)
        if pace:
            await writer.drain()
            await asyncio.sleep(pace)
        elif i % 64 == 63:
            await writer.drain()
    writer.write(chunk(DONE) + b"0\r\n\r\n")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--served-model-name", nargs="+", default=["fast"])
    args, _ = ap.parse_known_args()
    name = args.served_model_name[0].encode()
    server = await asyncio.start_server(lambda r, w: handle(r, w, name), args.host, args.port)
    print("Application startup complete.", flush=True)  # what vLLM prints once it serves
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
