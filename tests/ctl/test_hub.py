"""`vllmctl pull` and `vllmctl search` against a local stand-in for the Hub's API
(tests/hub_standin.py; this machine cannot reach the Hub). The download and search are the
engine venv's real huggingface_hub; only the server is ours (issue 20)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from vllm_supervisor import exitcodes

from tests.conftest import EngineEnv
from tests.hub_standin import HubStandIn, Repo, tiny_repo

pytestmark = pytest.mark.engine  # needs the engine venv (its huggingface_hub), no engine


@pytest.fixture
def hub(engine_env: EngineEnv) -> Iterator[HubStandIn]:
    repos = {
        "org/tiny": tiny_repo(engine_env.model),
        "org/tiny-awq": Repo({"config.json": b"{}"}, tags=["awq"], downloads=5),
        "acme/gated": Repo({"config.json": b"{}"}, gated=True, downloads=9),
        "acme/blocked": Repo({"config.json": b"{}"}, forbidden=True),
    }
    repos["org/tiny"].tags = ["safetensors"]
    repos["org/tiny"].downloads = 7
    h = HubStandIn(repos)
    yield h
    h.close()


def vllmctl(
    engine_env: EngineEnv, tmp: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "HF_HOME": str(tmp / "hf"),
        "VSUP_ENGINE_VENV": str(engine_env.venv),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "vllm_supervisor.ctl.main", *args, "--config-dir", str(tmp / "etc")],
        capture_output=True, text=True, timeout=120, check=False, env=environ,
    )  # fmt: skip


def test_pull_then_add_pins_the_revision_and_the_check_passes_offline(
    engine_env: EngineEnv, hub: HubStandIn, tmp_path: Path
) -> None:
    got = vllmctl(engine_env, tmp_path, "pull", "org/tiny", HF_ENDPOINT=hub.url)
    assert got.returncode == 0, got.stderr
    sha = hub.repos["org/tiny"].sha
    snap = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / sha
    assert f"pulled org/tiny at {sha}" in got.stdout and str(snap) in got.stdout
    for name, body in hub.repos["org/tiny"].files.items():
        assert (snap / name).read_bytes() == body
    assert "next: vllmctl add NAME org/tiny" in got.stdout
    added = vllmctl(engine_env, tmp_path, "add", "tiny", "org/tiny")
    assert added.returncode == 0, added.stderr
    body = yaml.safe_load((tmp_path / "etc" / "models.d" / "tiny.yaml").read_text())
    m = body["models"]["tiny"]
    assert m["model"] == "org/tiny" and m["offline"] is True
    assert m["engine"]["revision"] == sha  # what is served stays this snapshot
    assert m["engine"]["max_model_len"] == 2048  # read from the pulled config.json
    check = vllmctl(engine_env, tmp_path, "check", "--no-probe")
    assert check.returncode == 0, check.stdout + check.stderr
    # A pinned revision that is not in the cache is refused offline, naming the pull to run.
    f = tmp_path / "etc" / "models.d" / "tiny.yaml"
    f.write_text(f.read_text().replace(sha, "f" * 40))
    check = vllmctl(engine_env, tmp_path, "check", "--no-probe")
    assert check.returncode == exitcodes.CONFIG
    assert f"vllmctl pull org/tiny --revision {'f' * 40}" in check.stderr


def test_a_download_cut_mid_file_is_fetched_again_and_ends_whole(
    engine_env: EngineEnv, hub: HubStandIn, tmp_path: Path
) -> None:
    hub.drop_after = 1000  # the first file body sent is cut after 1000 bytes
    got = vllmctl(engine_env, tmp_path, "pull", "org/tiny", HF_ENDPOINT=hub.url)
    # huggingface_hub says "Trying to resume download..." and fetches it again, in one pull.
    assert got.returncode == 0, got.stderr
    assert hub.drop_after is None  # the cut happened
    gets = [p for m, p, _rng in hub.requests if m == "GET" and "/resolve/" in p]
    assert len(gets) > len(set(gets)), gets  # the cut file was asked for again
    sha = hub.repos["org/tiny"].sha
    snap = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / sha
    for name, body in hub.repos["org/tiny"].files.items():
        assert hashlib.sha256((snap / name).read_bytes()).digest() == hashlib.sha256(body).digest()


def test_pull_refuses_clearly_gated_missing_offline_and_hostile(
    engine_env: EngineEnv, hub: HubStandIn, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    cases = [
        (("pull", "acme/gated"), {"HF_ENDPOINT": hub.url}, "acme/gated is gated: accept its terms"),
        (("pull", "org/nope"), {"HF_ENDPOINT": hub.url}, "org/nope not found on"),
        # An HTTP error is an answer: not "offline" (huggingface_hub's errors are OSErrors).
        (("pull", "acme/blocked"), {"HF_ENDPOINT": hub.url}, f"{hub.url} refused acme/blocked"),
        (("pull", "org/tiny", "--revision", "v9"), {"HF_ENDPOINT": hub.url}, "no such revision"),
        (("pull", "org/tiny"), {"HF_ENDPOINT": closed}, "this host looks offline"),
        (("pull", "org/tiny"), {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1"},
         "HF_HUB_OFFLINE is set"),
    ]  # fmt: skip
    for argv, env, said in cases:
        got = vllmctl(engine_env, tmp_path, *argv, **env)
        assert got.returncode == exitcodes.FAILED, (argv, got.stdout, got.stderr)
        assert said in got.stderr, (argv, got.stderr)
        assert "Traceback" not in got.stderr, got.stderr
    for bad in ("../etc/passwd", "org/na me", "justname", "org/x;rm"):
        got = vllmctl(engine_env, tmp_path, "pull", bad, HF_ENDPOINT=hub.url)
        assert got.returncode == exitcodes.USAGE and "is not a repo id" in got.stderr, bad
    assert not (tmp_path / "hf" / "hub" / "models--acme--gated" / "snapshots").exists()


def test_search_lists_with_filters_and_says_when_offline(
    engine_env: EngineEnv, hub: HubStandIn, tmp_path: Path
) -> None:
    got = vllmctl(engine_env, tmp_path, "search", "tiny", HF_ENDPOINT=hub.url)
    assert got.returncode == 0, got.stderr
    rows = got.stdout.splitlines()
    assert rows[0].split()[:3] == ["MODEL", "DOWNLOADS", "LIKES"]
    assert [r.split()[0] for r in rows[1:]] == ["org/tiny", "org/tiny-awq"]  # by downloads
    assert "awq" in rows[2]
    got = vllmctl(engine_env, tmp_path, "search", "tiny", "--filter", "awq", HF_ENDPOINT=hub.url)
    assert [r.split()[0] for r in got.stdout.splitlines()[1:]] == ["org/tiny-awq"]
    got = vllmctl(engine_env, tmp_path, "search", "", "--author", "acme", HF_ENDPOINT=hub.url)
    assert got.returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    got = vllmctl(engine_env, tmp_path, "search", "tiny", HF_ENDPOINT=closed)
    assert got.returncode == exitcodes.FAILED and "this host looks offline" in got.stderr
