"""The shipped units under a real systemd (252, booted in a container), installed with
scripts/install.sh as the README says, and driven with systemctl and journalctl from outside.

One container per module: boot, install, then the tests in file order, as an operator would
meet them. Each engine start costs ~40 s on two CPU cores, so tests that need a fresh start
share one where the order allows (noted where they do). Figures are printed (pytest -s) and
recorded in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.conftest import IN_CI, EngineEnv
from tests.e2e.container import Container
from tests.e2e.engine_proc import free_port
from tests.hub_standin import HubStandIn, tiny_repo

pytestmark = pytest.mark.systemd
ROOT = Path(__file__).resolve().parents[2]
UNIT = "vllm-supervisor@tiny.service"
SRC = "/usr/local/src/vllm-supervisor"
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/host/wheels"}


def config(port: int, names: str = "tiny") -> str:
    return f"""# written by tests/e2e/test_systemd_unit.py
models:
  tiny:
    model: /srv/models/tiny
    served_model_name: [{names}]
    port: {port}
    offline: true
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
    engine: {{dtype: float32, max_model_len: 1024, enforce_eager: true}}
"""


@dataclass
class Host:
    c: Container
    port: int
    work: Path

    def chat(self, model: str = "tiny") -> str:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key="x", timeout=60, max_retries=0
        )
        res = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        assert res.model in (model, "tiny")  # vLLM answers an alias with its first name
        return res.choices[0].message.content or ""

    def models(self) -> list[str]:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key="x", timeout=10, max_retries=0
        )
        return [m.id for m in client.models.list().data]

    def prop(self, name: str, unit: str = UNIT) -> str:
        return self.c.show(unit, name)

    def unit_pids(self, unit: str = UNIT) -> dict[int, str]:
        """{pid: args} of every process systemd counts in UNIT (ps reads /proc/PID/cgroup,
        which works whatever the cgroup layout: nspawn gives this container a hybrid one)."""
        out = self.c.sh("ps -eo pid=,unit=,args=").stdout
        procs = {}
        for line in out.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1] == unit:
                procs[int(parts[0])] = parts[2]
        return procs

    def engine_pids(self, unit: str = UNIT) -> dict[int, str]:
        """The unit's processes but the supervisor itself."""
        main = int(self.prop("MainPID", unit) or 0)
        return {p: a for p, a in self.unit_pids(unit).items() if p != main}

    def ready(self, unit: str = UNIT) -> bool:
        return self.prop("ActiveState", unit) == "active" and self.prop(
            "StatusText", unit
        ).startswith("ready")


def systemd_root() -> Path:
    why = None
    base = os.environ.get("VSUP_TEST_SYSTEMD_ROOT")
    if os.geteuid() != 0:
        why = "needs root (systemd-nspawn, overlay mounts)"
    elif not base or not (Path(base) / ".vsup-root-format").exists():
        why = "VSUP_TEST_SYSTEMD_ROOT names no built root (scripts/make-systemd-root)"
    elif shutil.which("systemd-nspawn") is None:
        why = "systemd-nspawn is missing (apt-get install systemd-container)"
    if why:
        if IN_CI:
            pytest.fail(f"real-systemd tier cannot run in CI: {why}")
        pytest.skip(why)
    assert base
    return Path(base)


def _share(work: Path, model: Path) -> Path:
    """What the container sees at /host: this tree (as git would clone it), the tiny model
    (modes as scripts/make-tiny-model wrote them) and wheels for an offline install."""
    share = work / "share"
    share.mkdir()
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    with tarfile.open(share / "src.tar", "w") as tar:
        for f in files:
            if f and (ROOT / f).exists():
                tar.add(ROOT / f, arcname=f)
    shutil.copytree(model, share / "tiny")
    # This machine's pip settings reach the index; the container gets the wheels instead.
    subprocess.run(
        [
            "python3",
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "-d",
            str(share / "wheels"),
            str(ROOT),
            "setuptools>=68",
            "wheel",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return share


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, engine_env: EngineEnv) -> Iterator[Host]:
    base = systemd_root()
    # The longest group of the parallel run (tests/conftest.py), its tests in order: its
    # worker and the container it boots (which inherits this) get the CPU first, so the
    # others fill the gaps around it instead of stretching it. Root only (nice(2)); as
    # another user the run is the same, only longer.
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    work = tmp_path_factory.mktemp("systemd")
    share = _share(work, engine_env.model)
    c = Container(base, work / "c", {share: "/host"})
    c.mount()
    try:
        c.boot()
        c.sh(f"mkdir -p {SRC} && tar -xf /host/src.tar -C {SRC}")
        c.sh("mkdir -p /srv/models && cp -a /host/tiny /srv/models/tiny")
        # The README's install, as root; the engine venv is already on this "host".
        res = c.sh(f"cd {SRC} && scripts/install.sh --cpu", env=OFFLINE, timeout=900)
        print(res.stdout[-1500:])
        port = free_port()
        c.sh("rm -f /etc/vllm-supervisor/models.d/*.yaml")
        c.write("/etc/vllm-supervisor/models.yaml", config(port))
        c.sh("useradd -m -G vllm-admin op && useradd -m stranger")
        yield Host(c, port, work)
    finally:
        try:
            c.shutdown()
        finally:
            c.unmount()


def _watch_status(h: Host, seen: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            text = h.prop("StatusText")
            if text and (not seen or seen[-1] != text):
                seen.append(text)
        time.sleep(0.3)


def bare_cold_start(host: Host) -> float:
    """The same engine, argv and user without the supervisor: spawn -> /health 200."""
    argv = (
        "/opt/vllm-supervisor/engine/bin/python -m vllm.entrypoints.openai.api_server "
        f"--model /srv/models/tiny --served-model-name tiny --port {host.port} "
        "--dtype float32 --max-model-len 1024 --enforce-eager"
    )
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "HOME": "/tmp"}
    t0 = time.monotonic()
    proc = host.c.spawn(
        f"echo $$ > /tmp/bare.pid; cd /tmp && exec {argv}",
        "vllm",
        host.work / "bare-engine.log",
        env=env,
    )
    try:
        while True:
            assert proc.poll() is None, (host.work / "bare-engine.log").read_text()[-3000:]
            assert time.monotonic() - t0 < 600
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{host.port}/health", timeout=1) as r,
            ):
                if r.status == 200:
                    return time.monotonic() - t0
            time.sleep(0.05)
    finally:
        host.c.sh("kill -KILL -- -$(cat /tmp/bare.pid)", check=False)
        proc.wait(timeout=30)
        host.c.wait_for(
            "the bare engine's group to go",
            lambda: "VLLM::" not in host.c.sh("ps -eo args=").stdout,
            timeout=30,
        )


def test_pull_as_root_downloads_as_the_units_user_into_its_cache(
    host: Host, engine_env: EngineEnv
) -> None:
    """Issue 20: `sudo vllmctl pull` on a fresh host, before any unit has started (so the
    unit's CacheDirectory= is not there yet): the files land in the unit's HF_HOME, made by
    and owned by its User=, where the service can use them. The Hub is a local stand-in
    (the container shares this machine's network)."""
    fresh = host.c.sh("test -e /var/cache/vllm-supervisor", check=False).returncode != 0
    hub = HubStandIn({"org/tiny": tiny_repo(engine_env.model)})
    try:
        res = host.c.sh("vllmctl pull org/tiny", env={"HF_ENDPOINT": hub.url}, check=False)
    finally:
        hub.close()
    out = res.stdout + res.stderr
    print(f"cache there before: {not fresh}\n{out[-1500:]}")
    assert res.returncode == 0, out
    sha = hub.repos["org/tiny"].sha
    snap = f"/var/cache/vllm-supervisor/huggingface/hub/models--org--tiny/snapshots/{sha}"
    assert f"into {snap}, as vllm" in out, out
    owners = host.c.sh(
        f"stat -c %U /var/cache/vllm-supervisor /var/cache/vllm-supervisor/huggingface "
        f"&& stat -L -c %U {snap}/model.safetensors"
    ).stdout.split()
    assert owners == ["vllm", "vllm", "vllm"], owners
    assert host.c.sh(f"cmp {snap}/model.safetensors /srv/models/tiny/model.safetensors",
                     check=False).returncode == 0  # fmt: skip


def test_systemctl_start_returns_once_the_model_serves(host: Host) -> None:
    bare = bare_cold_start(host)
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_status, args=(host, seen, stop), daemon=True)
    watcher.start()
    t0 = time.monotonic()
    res = host.c.sh(f"systemctl start {UNIT}", check=False, timeout=600)
    took = time.monotonic() - t0
    stop.set()
    watcher.join()
    seen.append(host.prop("StatusText"))
    assert res.returncode == 0, res.stderr + host.c.journal(UNIT)[-4000:]
    assert host.ready(), host.prop("StatusText")
    assert host.chat()  # the moment start returns, the model serves
    assert any(not s.startswith("ready") for s in seen[:-1]), seen  # load phases were shown
    assert seen[-1].startswith(f"ready on 127.0.0.1:{host.port}"), seen
    print(
        f"\nbare engine cold start (spawn -> /health 200): {bare:.1f} s; systemctl start -> "
        f"active: {took:.1f} s (x{took / bare:.2f}); STATUS= seen: {seen}"
    )


def test_vllm_admin_member_operates_and_others_are_refused(host: Host) -> None:
    c = host.c
    st = c.sh("vllmctl status", user="op")
    assert re.search(r"^tiny\s+ready\b", st.stdout, re.M), st.stdout
    assert c.sh("vllmctl deactivate tiny", user="op").returncode == 0
    assert re.search(r"^tiny\s+inactive\b", c.sh("vllmctl status", user="op").stdout, re.M)
    assert c.sh("vllmctl activate tiny", user="op", timeout=600).returncode == 0
    assert host.ready() and host.chat()
    refused = c.sh("vllmctl status tiny", user="stranger", check=False)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "permission denied" in refused.stdout and "group vllm-admin" in refused.stdout
    listing = c.sh(
        "stat -c '%U:%G %a %n' /run/vllm-supervisor/tiny /run/vllm-supervisor/tiny/admin.sock"
    ).stdout
    assert "vllm:vllm-admin 750 /run/vllm-supervisor/tiny\n" in listing, listing
    assert "vllm:vllm-admin 660 /run/vllm-supervisor/tiny/admin.sock" in listing, listing


def test_reload_applies_a_good_config_and_refuses_a_broken_one(host: Host) -> None:
    c = host.c
    c.write("/etc/vllm-supervisor/models.yaml", config(host.port, "tiny, tiny-b"))
    res = c.sh(f"systemctl reload {UNIT}", check=False, timeout=600)
    assert res.returncode == 0, res.stderr + c.journal(UNIT)[-3000:]
    assert "tiny-b" in host.models()  # served again the moment reload returned
    main = host.prop("MainPID")
    good = config(host.port, "tiny, tiny-b")
    try:
        c.write("/etc/vllm-supervisor/models.yaml", good.replace("offline: true", "ofline: true"))
        bad = c.sh(f"systemctl reload {UNIT}", check=False, timeout=120)
        assert bad.returncode != 0
        assert host.prop("MainPID") == main and host.ready()
        assert host.chat("tiny-b")  # the old engine still serves
        c.journal_until(UNIT, r"models\.yaml:\d+: models\.tiny\.ofline", "-p", "err")
    finally:
        c.write("/etc/vllm-supervisor/models.yaml", good)  # same command: no engine restart


def test_kill_of_engine_core_is_restarted_inside_the_unit(host: Host) -> None:
    restarts, main = host.prop("NRestarts"), host.prop("MainPID")
    core = [p for p, args in host.engine_pids().items() if args.startswith("VLLM::EngineCore")]
    assert core, host.engine_pids()
    t0 = time.monotonic()
    host.c.sh(f"kill -9 {core[0]}")
    host.c.wait_for("the engine to leave ready", lambda: not host.ready(), timeout=30, every=0.1)
    host.c.wait_for("ready again", host.ready, timeout=600)
    print(f"\nkill -9 EngineCore -> ready again: {time.monotonic() - t0:.1f} s")
    assert host.prop("NRestarts") == restarts and host.prop("MainPID") == main
    assert host.chat("tiny-b")


def test_an_engine_line_reaches_the_journal_while_the_model_just_serves(host: Host) -> None:
    # uvicorn's access line for the chat is the engine's; nothing of the supervisor's follows
    # it, so it reaches the journal only if the engine line writer flushes (systemd/logs.py).
    line = '"POST /v1/chat/completions HTTP/1.1" 200'
    time.sleep(1)
    before = host.c.journal(UNIT).count(line)
    assert host.chat("tiny-b")
    host.c.wait_for(
        "the chat's access line in the journal",
        lambda: host.c.journal(UNIT).count(line) > before,
        timeout=15,
    )


def test_kill_of_the_supervisor_is_restarted_by_systemd_leaving_no_orphan(host: Host) -> None:
    c = host.c
    # The next test needs a short watchdog; this restart is where it takes effect.
    c.write(f"/etc/systemd/system/{UNIT}.d/watchdog.conf", "[Service]\nWatchdogSec=4")
    c.sh("systemctl daemon-reload")
    restarts, main = int(host.prop("NRestarts")), host.prop("MainPID")
    old = host.engine_pids()
    assert any(a.startswith("VLLM::EngineCore") for a in old.values()), old
    c.sh(f"kill -9 {main}")
    c.wait_for(
        "systemd's restart", lambda: int(host.prop("NRestarts")) == restarts + 1, timeout=120
    )
    alive = c.sh(
        "for p in " + " ".join(map(str, old)) + "; do kill -0 $p 2>/dev/null && echo $p; done",
        check=False,
    ).stdout.split()
    assert alive == [], f"orphans of the old engine: {alive}"
    c.wait_for("ready after the restart", host.ready, timeout=600)
    assert host.chat("tiny-b")


def test_a_stopped_supervisor_is_killed_by_the_watchdog_and_restarted(host: Host) -> None:
    c = host.c
    assert host.prop("WatchdogUSec") == "4s"
    restarts, main = int(host.prop("NRestarts")), host.prop("MainPID")
    c.sh(f"kill -STOP {main}")
    c.wait_for(
        "the watchdog's restart", lambda: int(host.prop("NRestarts")) == restarts + 1, timeout=120
    )
    c.journal_until(UNIT, "Watchdog timeout", "-o", "short")
    c.sh(f"rm /etc/systemd/system/{UNIT}.d/watchdog.conf && systemctl daemon-reload")
    c.wait_for("ready after the restart", host.ready, timeout=600)


def test_config_error_fails_the_unit_with_78_and_no_restart_loop(host: Host) -> None:
    c = host.c
    c.write(
        "/etc/vllm-supervisor/models.d/bad.yaml",
        "models:\n  bad:\n    model: /srv/models/tiny\n    port: 8999\n    engine:\n"
        "      max_model_lenn: 10\n",
    )
    try:
        res = c.sh("systemctl start vllm-supervisor@bad", check=False, timeout=120)
        assert res.returncode != 0
        assert c.show("vllm-supervisor@bad", "ExecMainStatus") == "78"
        time.sleep(12)  # past RestartSec=10: RestartPreventExitStatus=78 keeps it down
        assert c.show("vllm-supervisor@bad", "NRestarts") == "0"
        assert c.show("vllm-supervisor@bad", "ActiveState") == "failed"
        errors = c.journal("vllm-supervisor@bad", "-p", "err")
        assert re.search(
            r"/etc/vllm-supervisor/models\.d/bad\.yaml:6: "
            r"models\.bad\.engine\.max_model_lenn",
            errors,
        ), errors
    finally:
        c.sh(
            "rm -f /etc/vllm-supervisor/models.d/bad.yaml; "
            "systemctl reset-failed vllm-supervisor@bad",
            check=False,
        )
    assert host.ready()  # a broken neighbour never touched the serving model


def test_stop_leaves_nothing_in_the_unit(host: Host) -> None:
    c = host.c
    assert host.unit_pids()  # the check below can fail: the unit has processes now
    t0 = time.monotonic()
    c.sh(f"systemctl stop {UNIT}", timeout=120)
    print(f"\nsystemctl stop: {time.monotonic() - t0:.2f} s")
    assert host.prop("ActiveState") == "inactive"
    assert host.unit_pids() == {}
    assert "VLLM::" not in c.sh("ps -eo args=").stdout
    assert c.sh("ls /run/vllm-supervisor/tiny 2>&1", check=False).returncode != 0


def test_target_starts_and_stops_enabled_models_and_a_reboot_brings_them_back(host: Host) -> None:
    c = host.c
    c.sh(f"systemctl enable {UNIT}")
    try:
        c.sh("systemctl start vllm-supervisor.target", timeout=600)
        assert host.ready() and host.chat("tiny-b")
        c.sh("systemctl stop vllm-supervisor.target", timeout=120)
        # PartOf= queues the instance's stop with the target's; systemctl waits for the
        # target's own job, which has nothing to wait for.
        c.wait_for(
            "the instance to stop with the target",
            lambda: host.prop("ActiveState") == "inactive",
            timeout=120,
        )
        c.reboot()
        c.wait_for("the enabled model after a reboot", host.ready, timeout=600)
        assert host.chat("tiny-b")
    finally:
        # The module's later tests share this container and port: an enabled model left
        # serving there made two of them fail after this one had (CI, stop 29).
        c.sh(f"systemctl disable --now {UNIT}", timeout=120, check=False)


def test_quickstart_serves_for_a_user_who_is_not_root(host: Host) -> None:
    """The README's first command, as an ordinary user: no /run, no /var/lib, no root.
    The engine venv and tiny model this host already has are put where quickstart caches
    them; the supervisor's own venv it makes itself (offline, from the wheels)."""
    c = host.c
    port = free_port()
    cache = "/home/dev/.cache/vllm-supervisor"
    c.sh(
        f"useradd -m dev && cp -a {SRC} /home/dev/src && install -d {cache} && "
        f"ln -s /opt/vllm-supervisor/engine {cache}/engine-cpu-0.32.0 && "
        f"cp -a /srv/models/tiny {cache}/tiny-llama && chown -R dev: /home/dev"
    )
    qs_log = host.work / "quickstart.log"
    proc = c.spawn(
        f"echo $$ > /tmp/qs.pid; cd /home/dev/src && exec scripts/quickstart --port {port}",
        "dev",
        qs_log,
        env=OFFLINE,
    )
    try:
        log = lambda: qs_log.read_text(errors="replace")  # noqa: E731
        c.wait_for(
            "quickstart's READY",
            lambda: "quickstart: READY" in log() or proc.poll() is not None,
            timeout=900,
            every=1,
        )
        assert "quickstart: READY" in log(), log()[-3000:]
        uid = c.sh("id -u dev").stdout.strip()
        st = c.sh(f"{cache}/dev-venv/bin/vllmctl status demo", user="dev")  # no flags
        assert re.search(r"^demo\s+ready\b", st.stdout, re.M), st.stdout
        assert (
            c.sh(f"test -S /tmp/vllm-supervisor-{uid}/demo/admin.sock", check=False).returncode == 0
        )
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=60)
        assert client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        ).choices
        pid = c.sh("cat /tmp/qs.pid").stdout.strip()
        c.sh(f"kill -INT -- -{pid}", user="dev")  # Ctrl-C to the quickstart's process group
        assert proc.wait(timeout=120) == 0, log()[-3000:]
        assert "vllm-supervisor exited with code 0" in log()
    finally:
        if proc.poll() is None:  # its group, by the id it wrote (and the engine's group)
            c.sh("kill -KILL -- -$(cat /tmp/qs.pid)", check=False)
            proc.wait(timeout=30)
    c.wait_for(
        "nothing of dev's left", lambda: c.sh("pgrep -u dev", check=False).stdout == "", timeout=30
    )


def _run_as(c: Container, user: str, etc: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    return c.sh(
        f"/opt/vllm-supervisor/venv/bin/vllm-supervisor run m --config-dir {etc} "
        f"{extra or '--state-dir /tmp/st-$$ --runtime-dir /tmp/rt-$$'}",
        user=user,
        check=False,
        timeout=120,
    )


MODEL = """models:
  m:
    model: {model}
    port: 18999
    venv: {venv}
    offline: true
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"{env}}}
    engine: {{dtype: float32, max_model_len: 1024, enforce_eager: true}}
{more}"""

# case: (setup as root, config fields, extra run args, the path the message must name)
CASES = {
    "config": ("chmod 600 /srv/case-config/models.yaml", {}, "", "/srv/case-config/models.yaml"),
    "venv": (
        "ln -s /opt/vllm-supervisor/engine /root/engine",
        {"venv": "/root/engine"},
        "",
        "/root",
    ),
    "model": (
        "cp -a /srv/models/tiny /srv/case-model && chmod 600 /srv/case-model/model.safetensors",
        {"model": "/srv/case-model"},
        "",
        "/srv/case-model/model.safetensors",
    ),
    "hf-cache": (
        "install -d -m 700 /srv/case-hf",
        {"model": "org/name", "env": ', HF_HOME: "/srv/case-hf"'},
        "",
        "/srv/case-hf",
    ),
    "key-file": (
        "echo secret > /srv/case-key && chmod 600 /srv/case-key",
        {"more": "    api_key_file: /srv/case-key"},
        "",
        "/srv/case-key",
    ),
    "state-dir": (
        "install -d -m 755 /srv/case-state",
        {},
        "--state-dir /srv/case-state --runtime-dir /tmp/rt-$$",
        "/srv/case-state",
    ),
    "runtime-dir": (
        "install -d -m 755 /srv/case-run",
        {},
        "--state-dir /tmp/st-$$ --runtime-dir /srv/case-run",
        "/srv/case-run",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_path_the_user_cannot_use_exits_78_naming_path_user_and_fix(
    host: Host, case: str
) -> None:
    c = host.c
    setup, fields, extra, path = CASES[case]
    c.sh("id alice >/dev/null 2>&1 || useradd -m alice")
    values = {
        "model": "/srv/models/tiny",
        "venv": "/opt/vllm-supervisor/engine",
        "env": "",
        "more": "",
        **fields,
    }
    etc = f"/srv/case-{case}" if case == "config" else f"/srv/etc-{case}"
    c.write(f"{etc}/models.yaml", MODEL.format(**values))
    c.sh(setup)
    res = _run_as(c, "alice", etc, extra)
    out = res.stdout + res.stderr
    assert res.returncode == 78, out
    assert "Traceback" not in out, out
    assert path in out and "user alice" in out and ("chmod" in out or "move it" in out), out


def test_an_xdg_runtime_dir_kept_through_su_is_named_with_its_fix(host: Host) -> None:
    """su and sudo keep the caller's XDG_RUNTIME_DIR: alice's start names it and says to
    unset it, rather than advising a chmod of /run/user (exit 78, nothing started)."""
    c = host.c
    c.sh("id alice >/dev/null 2>&1 || useradd -m alice")
    etc = "/srv/etc-xdg"
    values = {"model": "/srv/models/tiny", "venv": "/opt/vllm-supervisor/engine"}
    c.write(f"{etc}/models.yaml", MODEL.format(**values, env="", more=""))
    res = c.sh(
        f"/opt/vllm-supervisor/venv/bin/vllm-supervisor run m --config-dir {etc} "
        "--state-dir /tmp/st-$$",
        user="alice",
        env={"XDG_RUNTIME_DIR": "/run/user/0"},
        check=False,
        timeout=120,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 78, out
    assert "$XDG_RUNTIME_DIR is /run/user/0" in out and "unset XDG_RUNTIME_DIR" in out, out
    assert "chmod" not in out and "Traceback" not in out, out
    # Unset, the same start goes on to the user's own folder in /tmp (and is stopped there).
    res = c.sh(
        f"timeout 5 /opt/vllm-supervisor/venv/bin/vllm-supervisor run m --config-dir {etc} "
        "--state-dir /tmp/st-$$ 2>&1; true",
        user="alice",
        check=False,
        timeout=60,
    )
    uid = c.sh("id -u alice").stdout.strip()
    assert f"admin_socket=/tmp/vllm-supervisor-{uid}/m/admin.sock" in res.stdout, res.stdout
    c.sh(f"rm -rf /tmp/vllm-supervisor-{uid}")


def test_vllmctl_check_as_root_sees_what_the_service_user_cannot(host: Host) -> None:
    c = host.c
    c.sh(
        "cp -a /srv/models/tiny /srv/models/locked && "
        "chmod 600 /srv/models/locked/model.safetensors"
    )
    # A venv made from an interpreter under /root, as pyenv and uv's own Pythons are.
    c.sh(
        "cp /usr/bin/python3.11 /root/python3.11 && python3 -m venv --without-pip "
        "/opt/venv-home && ln -sf /root/python3.11 /opt/venv-home/bin/python && "
        "sed -i 's|^home = .*|home = /root|' /opt/venv-home/pyvenv.cfg"
    )
    # The unit's own config dir: that is what is checked as its User= (another dir is the
    # caller's own business, as the quickstart test shows).
    c.write(
        "/etc/vllm-supervisor/models.d/check.yaml",
        MODEL.format(
            model="/srv/models/locked", venv="/opt/vllm-supervisor/engine", env="", more=""
        )
        + MODEL.format(model="/srv/models/tiny", venv="/opt/venv-home", env="", more="")
        .replace("models:\n  m:", "  h:")
        .replace("18999", "18998"),
    )
    try:
        res = c.sh("vllmctl check", check=False)
        mine = c.sh(
            "cp -a /etc/vllm-supervisor /srv/check-etc && "
            "vllmctl check --config-dir /srv/check-etc",
            check=False,
        )
    finally:
        c.sh("rm -f /etc/vllm-supervisor/models.d/check.yaml")
    out = res.stdout + res.stderr
    assert res.returncode == 78, out
    assert re.search(
        r"models\.d/check\.yaml:\d+: models\.m\.model: the model file "
        r"/srv/models/locked/model\.safetensors: user vllm cannot read it "
        r"\(-rw------- root:root\)",
        out,
    ), out
    assert re.search(
        r"models\.h\.venv: .*/root/python3\.11: user vllm cannot see it: the "
        r"unit's ProtectHome=",
        out,
    ), out
    # the same files in a dir the unit does not read: checked as root, who can read them
    assert "models.m.model" not in mine.stdout + mine.stderr


def test_a_gpu_group_refuses_and_swaps_between_two_units(host: Host) -> None:
    """Two instances in one gpu_group under the shipped unit: each reads the other's admin
    socket as user vllm, and the group's lock lives in the unit's CacheDirectory."""
    c = host.c
    other = free_port()
    two = config(host.port).replace("  tiny:", "  g1:").replace("[tiny]", "[g1]")
    two += two.split("models:\n", 1)[1].replace("g1", "g2").replace(str(host.port), str(other))
    two = two.replace("    offline: true\n", "    offline: true\n    gpu_group: card0\n")
    two = two.replace(f"port: {other}\n", f"port: {other}\n    autostart: false\n")
    c.write("/etc/vllm-supervisor/models.yaml", two)
    try:
        c.sh("systemctl start vllm-supervisor@g1 vllm-supervisor@g2", timeout=600)
        assert host.ready("vllm-supervisor@g1.service") and host.chat("g1")
        st = c.sh("vllmctl status", user="op").stdout
        assert re.search(r"^g2\s+inactive\b", st, re.M), st
        refused = c.sh("vllmctl activate g2", user="op", check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "gpu_group card0: g1 is ready" in refused.stdout + refused.stderr
        swap = c.sh("vllmctl activate g2 --swap", user="op", check=False, timeout=600)
        assert swap.returncode == 0, swap.stdout + swap.stderr
        st = c.sh("vllmctl status", user="op").stdout
        assert re.search(r"^g1\s+inactive\b", st, re.M) and re.search(r"^g2\s+ready\b", st, re.M)
        lock = c.sh("stat -c '%U %n' /var/cache/vllm-supervisor/gpu-group-card0.lock").stdout
        assert lock.strip() == "vllm /var/cache/vllm-supervisor/gpu-group-card0.lock"
        assert "permission denied" not in c.journal("vllm-supervisor@g2.service").lower()
    finally:
        c.sh("systemctl stop vllm-supervisor@g1 vllm-supervisor@g2", timeout=120, check=False)
        c.write("/etc/vllm-supervisor/models.yaml", config(host.port, "tiny, tiny-b"))


def test_the_gateway_unit_starts_a_model_on_demand_and_restarts_without_touching_it(
    host: Host,
) -> None:
    """vllm-gateway.service as shipped (User=vllm, vllm-admin, hardened): a request through it
    activates an inactive instance over its admin socket, and restarting the gateway leaves
    the engine's processes as they were."""
    c = host.c
    gw = free_port()
    text = config(host.port).replace(
        "    offline: true\n", "    offline: true\n    autostart: false\n"
    )
    c.write("/etc/vllm-supervisor/models.yaml", f'gateway: {{listen: "127.0.0.1:{gw}"}}\n' + text)
    try:
        c.sh("systemctl start vllm-supervisor@tiny vllm-gateway", timeout=120)
        assert host.prop("ActiveState", "vllm-gateway.service") == "active"
        assert not host.ready()  # the instance's service is up, its engine is not
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{gw}/v1", api_key="x", timeout=600, max_retries=0
        )
        res = client.completions.create(model="tiny", prompt="Hello", max_tokens=4)
        assert res.model == "tiny" and host.ready()
        status = c.sh("vllmctl gateway status", user="op").stdout  # a vllm-admin member
        assert re.search(r"^tiny\s+ready\s+0\s+0\s+1\b", status, re.M), status
        refused = c.sh("vllmctl gateway status", user="stranger", check=False)
        assert refused.returncode != 0, refused.stdout
        engine = set(host.engine_pids())
        c.sh("systemctl restart vllm-gateway", timeout=60)
        assert set(host.engine_pids()) == engine  # the gateway is not the engine's parent
        assert client.completions.create(model="tiny", prompt="Hi", max_tokens=2).model == "tiny"
        score = c.sh("systemd-analyze security vllm-gateway.service --no-pager", check=False)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", score.stdout + score.stderr)
        print(f"vllm-gateway.service exposure under systemd: {m.group(1) if m else '?'}")
        journal = c.journal("vllm-gateway.service").lower()
        assert "permission denied" not in journal and "traceback" not in journal, journal
    finally:
        c.sh("systemctl stop vllm-gateway vllm-supervisor@tiny", timeout=120, check=False)
        c.write("/etc/vllm-supervisor/models.yaml", config(host.port, "tiny, tiny-b"))
