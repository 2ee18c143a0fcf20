"""The probes against a stand-in engine on loopback: what each answer of vLLM's means."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from vllm_supervisor.runtime.probes import EngineAddress, Prober

from tests.e2e.engine_proc import free_port


def answer(make: Any) -> Any:
    """An async handler that answers MAKE() (aiohttp deprecates bare functions)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return make()  # type: ignore[no-any-return]

    return handler


async def serve(routes: list[web.RouteDef]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_health_models_token_and_running_requests() -> None:
    seen: dict[str, Any] = {}

    async def completions(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        seen["body"] = await request.json()
        return web.json_response({"choices": [{"text": "x"}]})

    runner, port = await serve(
        [
            web.get("/health", answer(lambda: web.Response(status=503))),
            web.get("/v1/models", answer(lambda: web.json_response({"data": [{"id": "a"}]}))),
            web.post("/v1/completions", completions),
            web.get(
                "/metrics",
                answer(
                    lambda: web.Response(
                        text=(
                            "# TYPE vllm:num_requests_running gauge\n"
                            'vllm:num_requests_running{engine="0"} 2.0\n'
                            'vllm:num_requests_running{engine="1"} 1.0\n'
                        )
                    )
                ),
            ),
        ]
    )
    try:
        async with aiohttp.ClientSession() as session:
            p = Prober(EngineAddress("0.0.0.0", port, ("a", "b"), api_key="k"), session)
            assert await p.health(1) == 503  # the engine is dead: vLLM's own answer
            assert await p.models(1) == "/v1/models does not list b"
            assert await p.one_token(1) is None
            assert seen["auth"] == "Bearer k"  # the key goes to /v1 routes
            assert seen["body"]["max_tokens"] == 1 and seen["body"]["model"] == "a"
            assert await p.running_requests(1) == 3.0  # summed over label sets
    finally:
        await runner.cleanup()


async def test_refused_timeout_and_a_hung_generation() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({})

    async with aiohttp.ClientSession() as session:
        nobody = Prober(EngineAddress("127.0.0.1", free_port(), ("a",)), session)
        assert await nobody.health(1) == "refused"  # still loading: no listener yet
        assert await nobody.running_requests(1) is None
        unauthorised = answer(lambda: web.Response(status=401))
        runner, port = await serve(
            [
                web.get("/health", slow),
                web.post("/v1/completions", slow),
                web.get("/v1/models", unauthorised),
            ]
        )
        try:
            p = Prober(EngineAddress("127.0.0.1", port, ("a",)), session)
            assert await p.health(0.2) == "timeout"
            assert await p.one_token(0.2) == "1-token generation timed out after 0.2 s"
            assert await p.models(1) == "/v1/models answered 401"
        finally:
            await runner.cleanup()
