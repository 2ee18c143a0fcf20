"""The gateway's one owner of routing state: which model may take a request now, which must be
activated (or swapped in), and which has idled past its TTL.

Request handlers post messages and await their answer (a Lease or a Denial); one task
(`Router.run`) handles every message in order and alone starts activations and
deactivations, through the instances' admin sockets (InstancePort). That is llama-swap's
rule with its failure fixed: its #946 deadlocked a request that arrived during a TTL unload,
because handlers took decisions under scattered locks.

Two calls skip the inbox, and stay the owner's code: `lease_now` (a model that is ready,
under its cap, with nobody waiting: the common case) and `release`. Each runs the owner's
own rule to its end without an await, and asyncio runs one callback at a time, so no message
is ever handled halfway; they only save the round trip through the inbox, a task and a timer
per request, which were 5-7% of the gateway's CPU per request (issue 23). The rules
(docs/design.md, "The host gateway"):
- a request for a model that is being activated joins that activation;
- a model is never deactivated (TTL or swap) while it has requests in flight or waiting;
- a model that just became ready serves the requests that were waiting for it before a
  gpu_group peer may swap it out (two clients alternating models cannot thrash the GPU,
  llama-swap #19): later arrivals wait their turn behind the peer;
- waiting is bounded: `max_queue` (429), the load timeout and a client's disconnect
  (handlers cancel their wait), `concurrency` in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from vllm_supervisor.gateway.calls import Calls
from vllm_supervisor.gateway.errors import QuietLog
from vllm_supervisor.gateway.slots import (
    FREE,
    Acquire,
    Busy,
    Cancel,
    Deactivate,
    Denial,
    InstancePort,
    Lease,
    Message,
    Outcome,
    Policy,
    Progress,
    Release,
    Slot,
    Tick,
    Waiter,
    down,
    failed,
    snapshot,
)
from vllm_supervisor.protocol.admin import Seen
from vllm_supervisor.protocol.states import COMING, DOWN, UNKNOWN, State

KEPT_PHASES = 64  # phases a slot keeps for writers behind it (an activation makes about 6)


class Router:
    def __init__(
        self,
        policies: dict[str, Policy],
        instances: InstancePort,
        clock: Callable[[], float],
        load_timeout: float,
        refresh: float = 2.0,
        log: Any = None,
    ) -> None:
        self.slots = {name: Slot(name, p) for name, p in policies.items()}
        self.instances, self.clock = instances, clock
        self.load_timeout, self.refresh = load_timeout, refresh
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.calls = Calls(instances, self.inbox, clock, load_timeout)
        self._refreshed = -refresh
        self.log = log if log is not None else QuietLog()
        self.activations = 0  # admin activations started (metrics, tests)
        self.swaps = 0
        # Called as each activation ends: (model, swapped, seconds, state) - gateway/metrics.py.
        self.on_activation: Callable[[str, bool, float, str], None] | None = None
        # Called with every state seen: the catalogue follows the port a ready engine
        # serves on (an upgrade's promoted candidate; gateway/catalogue.py).
        self.on_seen: Callable[[str, Seen], object] | None = None

    # ---- what handlers call (they only post) -------------------------------------------------
    async def acquire(self, model: str) -> Lease | Denial:
        """Wait for a slot on MODEL: a Lease (Release it when the request ends) or a Denial.
        A cancelled wait (the client went away, the load timeout) leaves the queue."""
        waiter = Waiter(asyncio.get_running_loop().create_future(), self.clock())
        self.inbox.put_nowait(Acquire(model, waiter))
        try:
            return await waiter.answer
        except asyncio.CancelledError:
            self.inbox.put_nowait(Cancel(model, waiter))
            raise

    async def deactivate(self, model: str, options: dict[str, Any] | None = None) -> Seen | Denial:
        """Deactivate MODEL (the instance drains, then stops or sleeps): refused with 409 while
        the gateway has requests for it in flight or waiting, or a call under way."""
        answer: asyncio.Future[Seen | Denial] = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(Deactivate(model, answer, options or {}))
        return await answer

    def lease_now(self, model: str) -> Lease | None:
        """A Lease at once when MODEL would be served at once by `acquire`: ready, under its
        cap, and no request waiting for it or its gpu_group peers, nor in the inbox (they
        came first). None: ask `acquire`."""
        slot = self.slots[model]
        if (
            slot.queue
            or not self._grantable(slot)
            or not self.inbox.empty()
            or any(p.queue for p in self._peers(slot))
        ):
            return None
        slot.in_flight += 1
        slot.served += 1
        return Lease(model)

    def release(self, lease: Lease) -> None:
        """The request under LEASE ended: handled here and now (the waiters it lets in are
        answered at once)."""
        self.handle(Release(lease.model))

    def stale(self, model: str) -> None:
        """A forward found the engine gone: look again now."""
        self.calls.look(model)

    # ---- the owner ------------------------------------------------------------------------------
    async def run(self) -> None:
        ticker = asyncio.ensure_future(self.calls.tick(min(1.0, self.refresh)))
        try:
            while True:
                self.handle(await self.inbox.get())
        finally:
            ticker.cancel()
            self.calls.cancel_all()

    def handle(self, msg: Message) -> None:
        match msg:
            case Acquire(model, waiter):
                self._acquire(self.slots[model], waiter)
            case Release(model):
                slot = self.slots[model]
                slot.in_flight -= 1
                slot.last_done = self.clock()
                if slot.queue or any(p.queue for p in self._peers(slot)):
                    self._pump_group(slot)  # (a pump of empty queues does nothing)
            case Cancel(model, waiter):
                slot = self.slots[model]
                if waiter in slot.queue:
                    slot.queue.remove(waiter)
                self._pump_group(slot)
            case Outcome(model, seen, done, asked):
                self._outcome(self.slots[model], seen, done, asked)
            case Tick():
                self._on_tick()
            case Progress(model, state):
                slot = self.slots[model]
                phase = phase_of(state)
                if slot.busy is Busy.ACTIVATING and phase is not None:
                    self._set_phase(slot, phase)
            case Deactivate(model, answer, options):
                slot = self.slots[model]
                busy = slot.busy or (
                    f"{slot.in_flight} request(s) in flight, {len(slot.queue)} waiting"
                    if slot.in_flight or slot.queue
                    else None
                )
                if busy:
                    answer.set_result(Denial(409, f"model {model} is busy: {busy}", "busy"))
                else:
                    slot.busy = Busy.DEACTIVATING
                    slot.deactivations.append(answer)
                    self.calls.deactivate(model, options)

    def _acquire(self, slot: Slot, waiter: Waiter) -> None:
        if len(slot.queue) >= slot.policy.max_queue and not self._grantable(slot):
            retry = 1.0 if slot.seen.state == State.READY else 5.0
            self._answer(
                waiter,
                Denial(
                    429,
                    f"model {slot.name} is busy: {len(slot.queue)} requests are already "
                    f"waiting for it. Try again in a few seconds.",
                    "queue_full",
                    retry,
                    fix=f"max_queue {slot.policy.max_queue} reached (gateway.max_queue, or "
                    "the model's max_queue)",
                ),
            )
            return
        slot.queue.append(waiter)
        self._pump(slot)

    # ---- decisions -------------------------------------------------------------------------------
    def _ready(self, slot: Slot) -> bool:
        return slot.seen.state == State.READY and slot.busy is None

    def _grantable(self, slot: Slot) -> bool:
        cap = slot.policy.concurrency
        return self._ready(slot) and (cap == 0 or slot.in_flight < cap)

    def _peers(self, slot: Slot) -> list[Slot]:
        group = slot.policy.group
        if group is None:
            return []
        return [s for s in self.slots.values() if s is not slot and s.policy.group == group]

    def _turn(self, slot: Slot, waiter: Waiter) -> bool:
        """May this waiter be served now? Yes, unless a gpu_group peer waits for the GPU and
        the waiter came after this model became ready (its batch is served, then the peer's)."""
        if waiter.since <= slot.ready_at:
            return True
        return not any(p.queue for p in self._peers(slot))

    def _pump(self, slot: Slot) -> None:
        while slot.queue and self._grantable(slot) and self._turn(slot, slot.queue[0]):
            waiter = slot.queue.popleft()
            if self._answer(waiter, Lease(slot.name)):
                slot.in_flight += 1
                slot.served += 1
        if not slot.queue or slot.busy is not None or self._ready(slot):
            return
        state = slot.seen.state
        final = state in (DOWN, State.FAILED) or not (slot.policy.on_demand or state in COMING)
        if final and slot.seen_at < slot.queue[-1].since:
            # A denial must rest on a view taken after the request came: the service may
            # have started since the last refresh (systemctl start of both at once).
            if not slot.looking:
                slot.looking = True
                self.calls.look(slot.name)
            return
        if state == DOWN:
            self._deny_all(slot, down(slot))
        elif state == State.FAILED:
            self._deny_all(slot, failed(slot))
        elif not slot.policy.on_demand and state not in COMING:
            self._deny_all(
                slot,
                Denial(
                    503,
                    f"model {slot.name} is not loaded, and this server loads it only when its "
                    "operator says so. Ask the server's operator.",
                    "model_not_active",
                    fix=f"it is {state} with on_demand: false: vllmctl activate {slot.name}",
                ),
            )
        else:
            self._maybe_activate(slot)

    def _maybe_activate(self, slot: Slot) -> None:
        """Activate SLOT, swapping out its gpu_group's active member, but only once that
        member is idle: nothing in flight, nothing of its turn waiting, no call under way."""
        peers = self._peers(slot)
        active = [p for p in peers if p.busy or p.seen.state not in (*FREE, UNKNOWN)]
        # A peer not seen yet (the gateway just started) has nothing of ours in flight; the
        # instance's own group check (runtime/group.py) sees its real state.
        unseen = any(p.seen.state == UNKNOWN and not p.busy for p in peers)
        for peer in active:
            waiting = any(self._turn(peer, w) for w in peer.queue)
            if peer.in_flight or waiting or peer.busy:
                return  # its requests first; a Release or an Outcome pumps us again
        slot.busy, slot.activating_since = Busy.ACTIVATING, self.clock()
        self.activations += 1
        took = slot.seen.extra.get("time_to_ready")
        last = f" (its last start took {took:.0f} s)" if isinstance(took, int | float) else ""
        if active:  # the instance's --swap deactivates them; none may serve meanwhile
            self.swaps += 1
            slot.evicting = [p.name for p in active]
            for peer in active:
                peer.busy = Busy.SWAPPED_OUT
            names = ", ".join(slot.evicting)
            self._set_phase(slot, f"unloading {names} to make room on the GPU{last}")
        else:
            self._set_phase(slot, f"starting{last}")
        evicting = ", ".join(slot.evicting) or None
        self.log.info("activation begins", model=slot.name, swap_out=evicting,
                      waiting=len(slot.queue))  # fmt: skip
        self.calls.activate(slot.name, swap=bool(active) or unseen)

    def _pump_group(self, slot: Slot) -> None:
        """Pump SLOT and its peers, twice: a peer's queue emptied in the first pass (denied)
        can give SLOT its turn in the second."""
        for _ in range(2):
            for s in (slot, *self._peers(slot)):
                self._pump(s)

    def _outcome(self, slot: Slot, seen: Seen, done: str | None, asked: float) -> None:
        if self.on_seen is not None:
            self.on_seen(slot.name, seen)
        if done is Busy.ACTIVATING:
            took = self.clock() - slot.activating_since
            if self.on_activation is not None:
                self.on_activation(slot.name, bool(slot.evicting), took, seen.state)
            ok = seen.state == State.READY
            (self.log.info if ok else self.log.error)(
                "activated" if ok else "activation failed", model=slot.name,
                swapped_out=", ".join(slot.evicting) or None, seconds=round(took, 1),
                state=seen.state, reason=seen.reason or None,
            )  # fmt: skip
            self._set_phase(slot, f"ready after {took:.0f} s" if ok else f"{seen.state}")
        if done is Busy.DEACTIVATING:
            for fut in slot.deactivations:
                if not fut.done():
                    fut.set_result(seen)
            slot.deactivations = []
        if done is not None:
            slot.busy = None
            for name in slot.evicting:  # swapped out (or not): unknown until seen afresh
                peer = self.slots[name]
                peer.busy, peer.seen = None, Seen(UNKNOWN, f"swapped out for {slot.name}")
                self.calls.look(name)
            slot.evicting = []
        else:
            slot.looking = False
            if slot.busy is not None:
                return  # a refresh raced a call under way: the call's answer counts
        if seen.rejected is not None:  # the instance refused the call: no state in it
            if done is Busy.ACTIVATING:
                status, error = seen.rejected
                self._deny_all(slot, Denial(503, f"model {slot.name} could not be loaded. "
                                            "Ask the server's operator.", "activation_refused",
                                            fix=f"its instance refused the activation "
                                            f"({status}: {error})"))  # fmt: skip
            self.calls.look(slot.name)
            self._pump_group(slot)
            return
        was = slot.seen.state
        slot.seen, slot.seen_at = seen, max(slot.seen_at, asked)
        if seen.state == State.READY and was != State.READY:
            slot.ready_at = slot.last_done = self.clock()
        if done is Busy.ACTIVATING and seen.state != State.READY:
            if seen.state == State.FAILED:
                self._deny_all(slot, failed(slot))
            elif seen.state == DOWN:
                self._deny_all(slot, down(slot))
            elif seen.refused:
                self._deny_all(slot, Denial(503, f"model {slot.name} cannot be loaded now: "
                                            "another model holds its GPU. Try again later.",
                                            "busy", 5.0, fix=seen.refused))  # fmt: skip
            else:
                self._deny_all(slot, Denial(503, f"model {slot.name} did not finish loading. "
                                            "Try again in a minute.", "model_not_ready", 30.0,
                                            fix=f"it is {seen.state} ({seen.reason})"))  # fmt: skip
        self._pump_group(slot)

    def _on_tick(self) -> None:
        now = self.clock()
        for slot in self.slots.values():
            idle = now - slot.last_done
            ttl = slot.policy.ttl
            if (
                ttl > 0
                and self._ready(slot)
                and not slot.in_flight
                and not slot.queue
                and idle >= ttl
            ):
                slot.busy = Busy.DEACTIVATING
                self.calls.deactivate(slot.name)
        for slot in self.slots.values():  # a safety net: no wakeup can be missed for long
            if slot.queue:
                self._pump(slot)
        if now - self._refreshed >= self.refresh:
            self._refreshed = now
            for slot in self.slots.values():
                if slot.busy is None:
                    self.calls.look(slot.name)

    def _set_phase(self, slot: Slot, phase: str) -> None:
        if phase == slot.phase:
            return
        changed = slot.phase_set
        slot.phases.append(phase)
        if len(slot.phases) > KEPT_PHASES:  # a writer this far behind sees from the oldest kept
            drop = len(slot.phases) - KEPT_PHASES // 2
            del slot.phases[:drop]
            slot.phases_from += drop
        slot.phase_set = asyncio.Event()
        changed.set()

    # ---- what handlers read (the owner's state, never changed from outside) ------------------
    def serving(self, model: str) -> bool:
        """Would a request for MODEL be served at once (ready, under its cap)?"""
        return self._grantable(self.slots[model])

    def phase(self, model: str) -> tuple[str, asyncio.Event]:
        """What MODEL's activation does now, and an event set when that changes."""
        slot = self.slots[model]
        return slot.phase, slot.phase_set

    def phases(self, model: str, since: int | None) -> tuple[list[str], int, asyncio.Event]:
        """MODEL's phases from number SINCE on (None: from the current one), in order; the
        number to ask from next; an event set at the next change."""
        slot = self.slots[model]
        end = slot.phases_from + len(slot.phases)
        start = max(end - 1 if since is None else since, slot.phases_from)
        return slot.phases[start - slot.phases_from :], end, slot.phase_set

    # ---- answers ---------------------------------------------------------------------------------
    def _answer(self, waiter: Waiter, answer: Lease | Denial) -> bool:
        if waiter.answer.done():  # its handler gave up (timeout, disconnect)
            return False
        waiter.answer.set_result(answer)
        return True

    def _deny_all(self, slot: Slot, denial: Denial) -> None:
        while slot.queue:
            self._answer(slot.queue.popleft(), denial)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return snapshot(self.slots, self.clock())


def phase_of(state: dict[str, Any]) -> str | None:
    """An activating instance's state (runtime/status.as_dict), as a client reads it; None
    for an end (ready, failed, ...), which the activation's outcome says itself."""
    name = str(state.get("state") or "")
    if name not in COMING:
        return None
    progress = state.get("progress")
    if name == State.STARTING and isinstance(progress, dict) and progress.get("phase"):
        return str(progress["phase"]).replace("spawned", "starting the engine")
    if name == State.PROBING:
        return "checking that it answers"
    if name == State.RESTARTING:
        return f"restarting after a failure ({state.get('reason') or 'see the journal'})"
    return "starting the engine"
