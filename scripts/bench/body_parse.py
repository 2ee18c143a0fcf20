"""What parsing a large request body costs the gateway (issue 23: parse only `model`, or a
faster parser?): protocol/jsonbody.loads against orjson when it is importable, and the
re-serialization a changed body (an alias, tools removed) costs, per body shape, in one run.

    PYTHONPATH=daemon python scripts/bench/body_parse.py

orjson is not a dependency: run it with a Python that has it (`uv pip install orjson` in a
scratch venv, with PYTHONPATH=daemon) to see its column. docs/design.md, "The host gateway",
holds the decision and docs/performance.md the figures.
"""

from __future__ import annotations

import base64
import json
import random
import string
import time
from collections.abc import Callable
from typing import Any

from vllm_supervisor.protocol import jsonbody

try:
    import orjson  # type: ignore[import-not-found]
except ImportError:
    orjson = None


def ms(fn: Callable[[Any], Any], arg: Any, n: int = 20) -> float:
    fn(arg)
    t0 = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter() - t0) / n * 1000


def bodies() -> dict[str, bytes]:
    rng = random.Random(1)
    words = " ".join("".join(rng.choices(string.ascii_letters, k=6)) for _ in range(150000))
    image = base64.b64encode(rng.randbytes(750000)).decode()
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}}
    turns = [{"role": ("user", "assistant")[i % 2], "content": "hello there " * 20}
             for i in range(3000)]  # fmt: skip
    shapes: dict[str, Any] = {
        "1 MB prompt, ASCII": {"messages": [{"role": "user", "content": words}]},
        "1 MB base64 image": {"messages": [{"role": "user", "content": [part]}]},
        "3,000 messages": {"messages": turns},
        "1.7 MB prompt, not ASCII": {"prompt": "héllo wörld ✓ " * 60000},
    }
    return {k: json.dumps({"model": "m", "stream": True, **v}).encode() for k, v in shapes.items()}


def main() -> None:
    head = f"{'body':28}{'MB':>6}{'jsonbody.loads':>16}{'json.dumps':>12}"
    print(head + (f"{'orjson.loads':>14}{'orjson.dumps':>14}" if orjson else ""))
    for name, raw in bodies().items():
        parsed = jsonbody.loads(raw)
        row = f"{name:28}{len(raw) / 1e6:6.2f}"
        row += f"{ms(jsonbody.loads, raw):13.2f} ms{ms(json.dumps, parsed):9.2f} ms"
        if orjson is not None:
            row += f"{ms(orjson.loads, raw):11.2f} ms{ms(orjson.dumps, parsed):11.2f} ms"
        print(row)


if __name__ == "__main__":
    main()
