"""The gateway's state owner against fake instances whose admin calls the test completes by
hand: every routing rule, and the races (a request during a TTL unload, alternating clients,
a disconnect while queued)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from vllm_supervisor.gateway import router as router_mod
from vllm_supervisor.gateway.router import Router
from vllm_supervisor.gateway.slots import Denial, Lease, Policy
from vllm_supervisor.protocol.admin import Seen
from vllm_supervisor.protocol.states import DOWN


class Instances:
    """Admin calls that wait until the test answers them (complete())."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.diagnosis: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []
        self.pending: dict[str, asyncio.Future[Seen]] = {}
        self.reports: dict[str, Callable[[dict[str, object]], None]] = {}  # activations' states

    async def state(self, model: str, timeout: float = 3.0) -> Seen:
        return Seen(self.states[model], diagnosis=self.diagnosis.get(model))

    async def activate(
        self,
        model: str,
        swap: bool,
        timeout: float,
        on_state: Callable[[dict[str, object]], None] | None = None,
    ) -> Seen:
        self.calls.append(f"activate {model}" + (" --swap" if swap else ""))
        if on_state is not None:
            self.reports[model] = on_state
        return await self._wait(model)

    async def deactivate(
        self, model: str, timeout: float, options: dict[str, object] | None = None
    ) -> Seen:
        self.calls.append(f"deactivate {model}")
        return await self._wait(model)

    async def _wait(self, model: str) -> Seen:
        fut = self.pending[model] = asyncio.get_running_loop().create_future()
        return await fut

    def complete(self, model: str, state: str, **kw: object) -> None:
        self.states[model] = state
        self.pending.pop(model).set_result(Seen(state, **kw))  # type: ignore[arg-type]


class Rig:
    def __init__(self, states: dict[str, str], **policy: object) -> None:
        self.inst = Instances(states)
        group = policy.pop("group", None)
        base = replace(Policy(), **policy)  # type: ignore[arg-type]
        self.router = Router(
            {m: replace(base, group=group) for m in states},
            self.inst,
            time.monotonic,
            load_timeout=60,
            refresh=0.05,
        )
        self.task = asyncio.ensure_future(self.router.run())

    def ask(self, model: str) -> asyncio.Task[Lease | Denial]:
        return asyncio.ensure_future(self.router.acquire(model))

    async def until(self, cond: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, (self.inst.calls, self.router.snapshot())
            await asyncio.sleep(0.005)

    async def settle(self) -> None:
        """Until the router has looked at every model since now (not a fixed sleep: on a
        loaded machine two refresh periods were not always two refreshes)."""
        since = time.monotonic()
        await self.until(
            lambda: all(s.seen_at >= since for s in self.router.slots.values() if not s.busy)
        )

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_request_activates_and_the_next_ones_join_that_activation() -> None:
    rig = Rig({"a": "inactive"})
    first, second = rig.ask("a"), rig.ask("a")
    await rig.until(lambda: "a" in rig.inst.pending)
    third = rig.ask("a")
    await asyncio.sleep(0.1)
    assert rig.inst.calls == ["activate a"]  # one activation for all three
    rig.inst.complete("a", "ready")
    assert [await t for t in (first, second, third)] == [Lease("a")] * 3
    assert rig.router.snapshot()["a"]["in_flight"] == 3
    await rig.close()


async def test_a_full_queue_is_429_with_retry_after_and_a_cancelled_wait_leaves_it() -> None:
    rig = Rig({"a": "inactive"}, max_queue=2)
    waiting = [rig.ask("a"), rig.ask("a")]
    await rig.until(lambda: rig.router.snapshot()["a"]["queued"] == 2)
    denial = await rig.ask("a")
    assert isinstance(denial, Denial) and denial.status == 429 and denial.retry_after
    assert "2 requests are already waiting for it. Try again" in denial.message
    assert denial.fix is not None and "max_queue 2 reached" in denial.fix
    waiting[0].cancel()  # the client went away
    await rig.until(lambda: rig.router.snapshot()["a"]["queued"] == 1)
    late = rig.ask("a")  # room again
    await rig.until(lambda: rig.router.snapshot()["a"]["queued"] == 2)
    rig.inst.complete("a", "ready")
    assert await waiting[1] == Lease("a") and await late == Lease("a")
    assert rig.router.snapshot()["a"]["in_flight"] == 2
    await rig.close()


async def test_concurrency_caps_requests_in_flight() -> None:
    rig = Rig({"a": "ready"}, concurrency=2)
    await rig.settle()
    leases = [await rig.ask("a"), await rig.ask("a")]
    third = rig.ask("a")
    await asyncio.sleep(0.1)
    assert not third.done() and rig.router.snapshot()["a"]["queued"] == 1
    rig.router.release(leases[0])  # type: ignore[arg-type]
    assert await third == Lease("a")
    await rig.close()


async def test_a_ready_model_under_its_cap_leases_at_once_and_only_then() -> None:
    """The fast path (issue 23) grants exactly what acquire would grant at once, and nothing
    acquire would make wait: a full cap, a queue, a peer waiting for the GPU, a model that is
    not ready."""
    rig = Rig({"a": "ready", "b": "inactive", "c": "inactive"}, concurrency=2, group="card0")
    router = rig.router
    assert router.lease_now("a") is None  # not seen yet: UNKNOWN is not ready
    await rig.settle()
    first, second = router.lease_now("a"), router.lease_now("a")
    assert first == second == Lease("a")
    assert router.lease_now("a") is None  # the cap: the third waits in acquire
    third = rig.ask("a")
    await rig.until(lambda: router.snapshot()["a"]["queued"] == 1)
    router.release(first)  # type: ignore[arg-type]
    now = router.snapshot()["a"]  # release is handled at once: the waiter got its turn
    assert (now["queued"], now["in_flight"]) == (0, 2)
    assert await third == Lease("a")
    router.release(second)  # type: ignore[arg-type]
    # a peer waits for the GPU: a's new requests wait their turn behind it
    for_b = rig.ask("b")
    await rig.until(lambda: router.snapshot()["b"]["queued"] == 1)
    assert router.lease_now("a") is None
    for_b.cancel()
    await rig.until(lambda: router.snapshot()["b"]["queued"] == 0)
    assert router.lease_now("a") == Lease("a")
    assert router.lease_now("c") is None and router.snapshot()["a"]["served"] == 4
    await rig.close()


async def test_failed_down_and_not_on_demand_models_answer_503_saying_why() -> None:
    rig = Rig({"f": "failed", "d": DOWN, "o": "inactive"})
    rig.router.slots["o"].policy = replace(rig.router.slots["o"].policy, on_demand=False)
    rig.inst.diagnosis["f"] = {"title": "T", "cause": "C", "fix": "X"}
    await rig.settle()
    failed, down, off = await rig.ask("f"), await rig.ask("d"), await rig.ask("o")
    # The client reads what happened and whether to retry; the operator's fix is for the log.
    assert isinstance(failed, Denial) and failed.message == (
        "model f could not be started (T). Try again later, or ask the server's operator."
    )
    assert failed.fix == "C; fix: X (vllmctl status f)"
    assert isinstance(down, Denial) and down.fix == "systemctl start vllm-supervisor@d"
    assert "not running" in down.message and "systemctl" not in down.message
    assert isinstance(off, Denial) and off.fix == "it is inactive with on_demand: false: " + (
        "vllmctl activate o"
    )
    assert "vllmctl" not in off.message
    assert rig.inst.calls == []  # none of them was activated
    await rig.close()


async def test_a_service_started_since_the_last_look_is_looked_at_before_a_denial() -> None:
    """systemctl start of an instance and the gateway at once: the gateway's first look says
    the instance is down; a request after it started must not be denied on that view."""
    rig = Rig({"a": DOWN})
    await rig.settle()
    rig.router.refresh = 3600.0  # no periodic look from now on: only the request's own
    rig.inst.states["a"] = "inactive"
    waiting = rig.ask("a")
    await rig.until(lambda: rig.inst.calls == ["activate a"])
    rig.inst.complete("a", "ready")
    assert await waiting == Lease("a")
    await rig.close()


async def test_an_activation_that_fails_answers_its_waiters_with_the_diagnosis() -> None:
    rig = Rig({"a": "inactive"})
    waiting = rig.ask("a")
    await rig.until(lambda: "a" in rig.inst.pending)
    diag = {"title": "GPU out of memory", "cause": "c", "fix": "lower max_model_len"}
    rig.inst.complete("a", "failed", diagnosis=diag)
    got = await waiting
    assert isinstance(got, Denial) and got.status == 503 and "GPU out of memory" in got.message
    assert got.fix is not None and "lower max_model_len" in got.fix
    await rig.close()


async def test_a_swap_waits_for_the_active_peers_requests_then_swaps() -> None:
    rig = Rig({"a": "ready", "b": "inactive"}, group="card0")
    await rig.settle()
    lease = await rig.ask("a")
    for_b = rig.ask("b")
    await asyncio.sleep(0.1)
    assert rig.inst.calls == []  # a still serves one: b waits, a is not evicted
    rig.router.release(lease)  # type: ignore[arg-type]
    await rig.until(lambda: rig.inst.calls == ["activate b --swap"])
    late_a = rig.ask("a")  # a is being swapped out: it waits
    await asyncio.sleep(0.1)
    assert not late_a.done()
    rig.inst.complete("b", "ready")
    rig.inst.states["a"] = "inactive"
    assert await for_b == Lease("b")
    assert not late_a.done()  # b serves what waited for it first; a waits for the GPU
    rig.router.release(Lease("b"))
    await rig.until(lambda: rig.inst.calls[-1:] == ["activate a --swap"])
    rig.inst.complete("a", "ready")
    rig.inst.states["b"] = "inactive"
    assert await late_a == Lease("a")
    assert rig.router.swaps == 2
    await rig.close()


async def test_a_model_that_just_became_ready_serves_its_waiters_before_a_swap() -> None:
    """Two clients alternating models get batches, not a swap per request (llama-swap #19)."""
    rig = Rig({"a": "inactive", "b": "inactive"}, group="card0")
    await rig.settle()
    a1, a2 = rig.ask("a"), rig.ask("a")
    await rig.until(lambda: "a" in rig.inst.pending)
    b1 = rig.ask("b")  # arrives while a loads
    rig.inst.complete("a", "ready")
    assert await a1 == Lease("a") and await a2 == Lease("a")  # a's batch, despite b waiting
    a3 = rig.ask("a")  # after a became ready, with b waiting: not its turn
    await asyncio.sleep(0.1)
    assert not a3.done() and not b1.done() and rig.inst.calls == ["activate a"]
    rig.router.release(Lease("a"))
    rig.router.release(Lease("a"))
    await rig.until(lambda: rig.inst.calls[-1:] == ["activate b --swap"])
    rig.inst.complete("b", "ready")
    assert await b1 == Lease("b")
    a3.cancel()
    await rig.close()


async def test_the_idle_ttl_counts_from_the_end_of_the_last_request() -> None:
    rig = Rig({"a": "ready"}, ttl=0.3)
    await rig.settle()
    lease = await rig.ask("a")
    await asyncio.sleep(0.5)  # longer than the ttl, but in flight: no deactivation
    assert rig.inst.calls == []
    rig.router.release(lease)  # type: ignore[arg-type]
    t0 = time.monotonic()
    await rig.until(lambda: rig.inst.calls == ["deactivate a"])
    assert time.monotonic() - t0 >= 0.25
    await rig.close()


async def test_a_request_during_a_ttl_deactivation_waits_and_reactivates() -> None:
    """llama-swap #946: a request that arrived during a TTL unload deadlocked."""
    rig = Rig({"a": "ready"}, ttl=0.1)
    await rig.settle()
    await rig.until(lambda: rig.inst.calls == ["deactivate a"])
    during = rig.ask("a")
    await asyncio.sleep(0.05)
    assert not during.done()
    rig.inst.complete("a", "inactive")
    await rig.until(lambda: rig.inst.calls == ["deactivate a", "activate a"])
    rig.inst.complete("a", "ready")
    assert await during == Lease("a")
    await rig.close()


async def test_a_model_deactivated_elsewhere_is_seen_and_activated_on_the_next_request() -> None:
    rig = Rig({"a": "ready"})
    await rig.settle()
    rig.inst.states["a"] = "inactive"  # an operator ran vllmctl deactivate
    await rig.settle()
    waiting = rig.ask("a")
    await rig.until(lambda: rig.inst.calls == ["activate a"])
    rig.inst.complete("a", "ready")
    assert await waiting == Lease("a")
    await rig.close()


async def test_an_activation_reports_its_phases_to_those_who_wait() -> None:
    """gateway/progress.py shows these to a streamed chat waiting for the load."""
    rig = Rig({"a": "inactive"})
    rig.router.slots["a"].seen = Seen("inactive", extra={"time_to_ready": 41.2})
    waiting = rig.ask("a")
    await rig.until(lambda: "a" in rig.inst.reports)
    phase, changed = rig.router.phase("a")
    assert phase == "starting (its last start took 41 s)" and not changed.is_set()
    rig.inst.reports["a"]({"state": "starting", "progress": {"phase": "loading weights"}})
    await rig.until(changed.is_set)
    assert rig.router.phase("a")[0] == "loading weights"
    rig.inst.reports["a"]({"state": "probing"})
    await rig.until(lambda: rig.router.phase("a")[0] == "checking that it answers")
    rig.inst.complete("a", "ready")
    assert await waiting == Lease("a")
    assert rig.router.phase("a")[0].startswith("ready after ")
    await rig.close()


async def test_a_writer_that_wakes_after_two_phases_is_given_both_in_order() -> None:
    """A phase followed by the next before the writer woke was lost: CI's load test saw
    "checking that it answers" missing between "HTTP server up" and "ready" (stop 29)."""
    rig = Rig({"a": "inactive"})
    waiting = rig.ask("a")
    await rig.until(lambda: "a" in rig.inst.reports)
    shown, since, changed = rig.router.phases("a", None)
    assert shown == ["starting"]
    rig.inst.reports["a"]({"state": "starting", "progress": {"phase": "loading weights"}})
    rig.inst.reports["a"]({"state": "probing"})
    await rig.until(lambda: rig.router.phase("a")[0] == "checking that it answers")
    assert changed.is_set()
    shown, since, changed = rig.router.phases("a", since)
    assert shown == ["loading weights", "checking that it answers"]
    assert rig.router.phases("a", since)[0] == [] and not changed.is_set()
    rig.inst.complete("a", "ready")
    assert await waiting == Lease("a")
    shown, _, _ = rig.router.phases("a", since)
    assert len(shown) == 1 and shown[0].startswith("ready after ")
    await rig.close()


async def test_a_writer_far_behind_is_given_the_phases_kept() -> None:
    """The slot keeps KEPT_PHASES at most; a writer asking from before them gets the oldest
    kept on, never a slice past the end or a phase twice."""
    rig = Rig({"a": "inactive"})
    slot = rig.router.slots["a"]
    for i in range(3 * router_mod.KEPT_PHASES):
        rig.router._set_phase(slot, f"p{i}")
    assert len(slot.phases) <= router_mod.KEPT_PHASES
    shown, end, _ = rig.router.phases("a", 0)
    assert shown == slot.phases and end == 3 * router_mod.KEPT_PHASES
    assert shown[-1] == f"p{end - 1}" and rig.router.phases("a", end)[0] == []
    assert rig.router.phases("a", None)[0] == [f"p{end - 1}"]
    await rig.close()


async def test_a_swap_is_shown_as_unloading_the_peer() -> None:
    rig = Rig({"a": "ready", "b": "inactive"}, group="card0")
    await rig.settle()
    waiting = rig.ask("b")
    await rig.until(lambda: "b" in rig.inst.pending)
    assert rig.router.phase("b")[0] == "unloading a to make room on the GPU"
    rig.inst.complete("b", "ready")
    assert await waiting == Lease("b")
    await rig.close()


async def test_an_instance_that_refuses_the_call_itself_leaves_the_state_it_had() -> None:
    """A 4xx of the instance (a bad option) carries no state: the model is not taken for
    down, and an operator's deactivate gets the refusal to pass on."""
    rig = Rig({"a": "ready"})
    await rig.settle()
    asked = asyncio.ensure_future(rig.router.deactivate("a", {"drain_timeout": 1.0}))
    await rig.until(lambda: "a" in rig.inst.pending)
    rig.inst.pending.pop("a").set_result(Seen("down", rejected=(400, "drain_timeout bad")))
    got = await asked
    assert isinstance(got, Seen) and got.rejected == (400, "drain_timeout bad")
    assert rig.router.snapshot()["a"]["state"] == "ready"
    assert await rig.ask("a") == Lease("a")
    await rig.close()
