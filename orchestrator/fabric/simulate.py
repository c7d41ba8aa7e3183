"""Discrete-event simulation of training on a placed fabric: step time, throughput, utilisation.

Each agent is a sequential process running *ops* on its core(s); each core runs one op at a
time (agents that share a core queue on it; a split agent's op runs on all its cores at once,
a 1/n share on each, and ends when the last share ends).  The schedule is not written down as
a formula: it follows from dependency rules, per micro-step k (mini-batch s has M of them):

* F(k), forward: needs the activation of step k on every in-link and a free slot in every
  out-link's send window (back-pressure, as a socket's high-water mark); labels and other
  side inputs are small and simply wait at the receiver.
* B(k), backward: a locked agent (one on a `backprop` link) needs the true gradient of step k
  from every `backprop` out-link; `dni`/`unlocked` out-links give a synthetic gradient at once.
  A decoupled agent runs SG forward + backward + update as one op; it never waits.
* U(s): a locked agent updates once per mini-batch, after its M backwards (GPipe: all M
  forwards then all M backwards; 1F1B: warm-up forwards, then one forward one backward).
* An agent on an `unlocked` in-link runs as agents/runtime/synthetic_input.py does: A(k), a full step
  on the input its synthetic-input (SI) model predicts, needs nothing; then R(k), the real
  step, needs the real input, regresses the SI model on it and forwards it for real, so only
  that forward lies on the chain's path.  A(k+1) follows R(k).
* G: a gradient target arriving on a `dni`/`unlocked` link trains the sender's SG model.  It
  runs as soon as the agent is free, before its next op.

Messages are flows: each holds every NoC link, NIU port and Ethernet link on its route, and
all flows active on a resource share its capacity equally; a flow's rate is its worst share,
capped by its unloaded rate (tt-npe's packet-size table), and is recomputed whenever a flow
sharing one of its resources starts or ends (an event-driven version of tt-npe's derating).
A message arrives its route's latency after its last byte leaves.
"""

from __future__ import annotations

import gc
import heapq
import math
from collections import deque
from dataclasses import dataclass, field

from .costs import GRADIENT_MODES, SCHEDULES, depth_to_sink, phases
from .errors import UnknownName
from .placement import Placement, compute_seconds, shard_pairs

SIM_MODES = ("backprop", "dni", "unlocked")
_TASK, _FLOW, _ARRIVE, _SOLO = 0, 1, 2, 3


class SimulationError(RuntimeError):
    """The simulated training cannot proceed (a dependency cycle); the message says where."""


@dataclass
class SimResult:
    """What one simulation predicts (times in seconds)."""

    mode: str
    schedule: str
    microbatches: int
    steps: int
    samples_per_step: int
    step_time_s: float
    samples_per_s: float
    makespan_s: float
    core_utilisation: float  # mean busy fraction of the cores in use, steady state
    link_utilisation_max: float
    cores: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)  # NoC and Ethernet links, busiest first
    ports: list[dict] = field(default_factory=list)  # the busiest NIU ports
    critical_path: dict = field(default_factory=dict)
    messages: int = 0
    events: int = 0
    trace: list[dict] | None = None

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "trace"}
        return out


class _Agent:
    __slots__ = ("i", "name", "cores", "every", "locked", "learns", "unlocked", "t_fwd", "t_bwd", "t_upd",
                 "wait_in", "grad_in", "out", "paced", "bp_out", "busy", "debt", "debt_kind",
                 "debt_k", "left", "ops", "pc", "s", "op", "began", "cause", "starved", "solo", "base", "fuse", "free_at")

    def __init__(self, i: int, name: str) -> None:
        self.i, self.name = i, name
        self.busy = False
        self.debt = 0.0  # seconds of SG / SI training queued behind the current op
        self.debt_kind, self.debt_k = "G", 0
        self.began = math.inf
        self.starved = False  # its next F waits for a free slot in a send window
        self.free_at = 0.0  # a solo agent's cores are busy with SG training until then
        self.ops: list = []
        self.pc = 0
        self.base = 0  # ops hold micro-steps relative to this
        self.s = -1
        self.op = None
        self.cause = None


class _Link:
    __slots__ = ("i", "src", "dst", "mode", "every", "fwd", "bwd", "arrived_act",
                 "arrived_grad", "sent", "consumed", "t_g", "name")

    def __init__(self, i: int) -> None:
        self.i = i
        self.arrived_act: set[int] = set()
        self.arrived_grad: set[int] = set()
        self.sent = 0
        self.consumed = 0


def simulate(placement: Placement, mode: str | None = "dni", microbatches: int = 1, schedule: str = "gpipe",
             steps: int = 12, window: int = 2, trace: bool = False, trace_limit: int = 200_000) -> SimResult:
    """Simulate `steps` mini-batches of `microbatches` micro-batches each.

    `mode` overrides every gradient-carrying link (None keeps the workload's own modes).  The
    workload's costs are per micro-batch.  Step time is measured over the second half of the
    run (after the pipeline has filled).
    """
    if mode is not None and mode not in SIM_MODES:
        raise UnknownName("simulation mode", mode, SIM_MODES)
    if schedule not in SCHEDULES:
        raise UnknownName("schedule", schedule, SCHEDULES)
    if microbatches < 1 or steps < 1:
        raise ValueError("microbatches and steps must be at least 1")
    sim = _Simulator(placement, mode, microbatches, schedule, steps, window, trace, trace_limit)
    # The event loop allocates millions of short-lived tuples and lists but never a reference
    # cycle, so reference counting frees them all; the cycle collector would only re-scan the
    # long-lived ones, over and over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return sim.run()
    finally:
        if collecting:
            gc.enable()


class _Simulator:
    def __init__(self, placement: Placement, mode: str | None, M: int, schedule: str, steps: int,
                 window: int, trace: bool, trace_limit: int) -> None:
        problem = placement.problem
        self.fabric = fabric = problem.fabric
        wl = problem.workload.with_mode(mode)
        self.wl, self.M, self.schedule, self.steps = wl, M, schedule, steps
        self.mode = mode or "as-given"
        ph = phases(wl)
        below = depth_to_sink(wl)
        unlocked = {link.dst for link in wl.links if link.mode == "unlocked"}
        locked = {link.src for link in wl.links if link.mode == "backprop"} | {
            link.dst for link in wl.links if link.mode == "backprop"}
        self.agents: list[_Agent] = []
        for i, a in enumerate(wl.agents):
            ag = _Agent(i, a.name)
            units = problem.agent_units[i]
            ag.cores = [int(placement.unit_core[u]) for u in units]
            n = len(units)
            ag.every = a.tick_every
            ag.locked = a.name in locked
            ag.learns = a.bwd_flops > 0 or a.update_flops > 0 or a.param_bytes > 0
            p = ph[a.name]

            def secs(flops: float, rows: int = a.rows, n: int = n) -> float:
                return compute_seconds(fabric, flops, rows) / n

            ag.unlocked = a.name in unlocked
            if ag.unlocked:  # A: step on the predicted input; R: SI regression + real forward
                ag.t_bwd, ag.t_fwd, ag.t_upd = secs(p.si + p.fwd + p.sg + p.bwd + p.update), secs(p.si_train + p.fwd), 0.0
            elif ag.locked:
                ag.t_fwd, ag.t_bwd, ag.t_upd = secs(p.fwd), secs(p.sg + p.bwd), secs(p.update)
            else:
                ag.t_fwd, ag.t_bwd, ag.t_upd = secs(p.fwd), secs(p.sg + p.bwd + p.update), 0.0
            ag.wait_in, ag.grad_in, ag.out, ag.paced, ag.bp_out = [], [], [], [], []
            self.agents.append(ag)
        self.window = max(window, M) if locked else window
        hosted: dict[int, int] = {}
        for ag in self.agents:
            for core in ag.cores:
                hosted[core] = hosted.get(core, 0) + 1
        for ag in self.agents:  # alone on its cores: an op is one event, whatever the split
            ag.solo = all(hosted[c] == 1 for c in ag.cores)
        self.links: list[_Link] = []
        self.shards: list[tuple[int, ...]] = []  # the route of every message shard
        for j, spec in enumerate(wl.links):
            lk = _Link(j)
            lk.src, lk.dst = self.agents[wl.index[spec.src]], self.agents[wl.index[spec.dst]]
            lk.mode, lk.every = spec.mode, wl.every(spec)
            lk.name = f"{spec.src}->{spec.dst}"
            lk.t_g = compute_seconds(fabric, spec.sg_train_flops, wl.agents[lk.src.i].rows) / len(lk.src.cores)
            lk.fwd = self._subflows(lk.src.cores, lk.dst.cores, spec.bytes)
            lk.bwd = self._subflows(lk.dst.cores, lk.src.cores, spec.bytes)
            lk.dst.wait_in.append(lk)
            lk.src.out.append(lk)
            if spec.mode in GRADIENT_MODES and lk.src.learns:
                lk.dst.grad_in.append(lk)
                if spec.mode == "backprop":
                    lk.src.bp_out.append(lk)
            self.links.append(lk)
        # Side inputs (labels, context: `none` links into an agent that also has a gradient-
        # carrying input) are small and wait in the receiver's buffer; the send window paces
        # the other links, as a socket's high-water mark paces a pipeline of activations.
        for lk in self.links:
            side = lk.mode == "none" and any(o.mode != "none" for o in lk.dst.wait_in)
            if not side:
                lk.src.paced.append(lk)
        self.below = [below[a.name] for a in wl.agents]
        self._templates: list[list[tuple[str, int]]] = [[] for _ in self.agents]
        self.trace_on, self.trace_limit = trace, trace_limit
        self.trace: list[dict] = []

    def _subflows(self, a_cores: list[int], b_cores: list[int], nbytes: float) -> list[tuple]:
        """The shards of one message (placement.shard_pairs): route, bytes, latency, rate, id."""
        pairs = shard_pairs(a_cores, b_cores)
        out = []
        for a, b in pairs:
            share = nbytes / len(pairs)
            if a == b:
                out.append((None, share, 0.0, math.inf, -1))
            else:
                r = self.fabric.route(a, b)
                base = min(r.capacity, self.fabric.transfer_rate(share))
                out.append((r.resources, share, r.latency_s, base, len(self.shards)))
                self.shards.append(r.resources)
        return out

    # ------------------------------------------------------------------ program

    def _program(self, ag: _Agent, s: int) -> tuple[list[tuple[str, int]], int]:
        """The ops of agent `ag` in mini-batch `s`: (kind, micro-step k - base), and base.

        An agent that acts every step runs the same program each mini-batch, shifted."""
        M = self.M
        if ag.every == 1:
            if not self._templates[ag.i]:
                self._templates[ag.i] = self._ops(ag, list(range(M)))
            return self._templates[ag.i], s * M
        return self._ops(ag, [s * M + m for m in range(M) if (s * M + m) % ag.every == 0]), 0

    def _ops(self, ag: _Agent, ks: list[int]) -> list[tuple[str, int]]:
        if not ks:
            return []
        if not ag.learns:
            return [("F", k) for k in ks]
        if ag.unlocked:  # as agents/runtime/synthetic_input.py: A(k) then R(k), strictly in order
            return [op for k in ks for op in (("A", k), ("R", k))]
        if not ag.locked:
            return [op for k in ks for op in (("F", k), ("B", k))]
        if self.schedule == "gpipe":
            ops = [("F", k) for k in ks] + [("B", k) for k in ks]
        else:  # 1F1B: warm-up forwards, then one forward one backward, then the rest
            warm = min(self.below[ag.i], len(ks))
            ops = [("F", k) for k in ks[:warm]]
            for j in range(len(ks) - warm):
                ops += [("F", ks[warm + j]), ("B", ks[j])]
            ops += [("B", k) for k in ks[len(ks) - warm :]]
        return ops + [("U", ks[-1])]

    def _classify_routes(self, cap: list[float]) -> tuple[list[bool], list[float]]:
        """Which shard routes are private, and which agents may fuse F and B into one event.

        A shard whose route no other shard touches contends only with its own messages, so
        its flows are tracked per shard, not per resource (the same shares, far fewer steps).
        A decoupled agent alone on its cores whose activation routes only it sends over (with
        its other messages) runs F and B as one event: the activation's flows are scheduled to
        start at F's end (nobody else can start a flow on those routes meanwhile) and B follows
        at once.  Same times, fewer events; SG training that arrives meanwhile runs after B.
        """
        n_res = self.fabric.n_resources
        use = [0] * n_res
        senders: list[set[int]] = [set() for _ in range(n_res)]
        sender_of = [0] * len(self.shards)
        for lk in self.links:
            for shards, who in ((lk.fwd, lk.src.i), (lk.bwd, lk.dst.i)):
                for resources, *_, sid in shards:
                    if resources is not None:
                        sender_of[sid] = who
                        for res in resources:
                            use[res] += 1
                            senders[res].add(who)
        own = [all(use[res] == 1 for res in route) for route in self.shards]
        sender_only = [all(senders[res] == {sender_of[sid]} for res in route) for sid, route in enumerate(self.shards)]
        for ag in self.agents:
            ag.fuse = (ag.solo and ag.learns and not ag.locked and not ag.unlocked and bool(ag.out)
                       and all(sh[0] is not None and sender_only[sh[4]] for lk in ag.out for sh in lk.fwd))
        return own, [min(cap[res] for res in route) for route in self.shards]

    # --------------------------------------------------------------------- run

    def run(self) -> SimResult:
        fabric = self.fabric
        cap = fabric.capacity.tolist()
        n_res = fabric.n_resources
        res_flows: list[set[int] | None] = [None] * n_res  # the flows holding each resource
        flows: list[list | None] = []  # by flow id; None once arrived
        heap: list = []
        push, pop = heapq.heappush, heapq.heappop
        seq = 0
        core_busy = [False] * fabric.n_cores
        core_queue = [deque() for _ in range(fabric.n_cores)]
        steps, window = self.steps, self.window
        # Steady state: from the end of mini-batch `first` to the end of `last`, leaving out
        # the pipeline's fill and its drain (upstream agents finish early once work runs out).
        first = steps // 4
        last = steps - 1 - min(window, steps // 4)
        if last <= first:  # too few steps for a steady state: measure the whole run
            first, last = -1, steps - 1
        win = [0.0 if first < 0 else math.inf, math.inf]  # the window's start and end, once known
        # Only the last mini-batch's critical path is reported: earlier records drop their
        # causes, so the history behind them is freed as the run goes.
        traced_from = last * self.M
        shard_bytes = [0.0] * len(self.shards)  # bytes each shard route moved in the window
        shard_own, shard_cap = self._classify_routes(cap)
        shard_flows: list[set[int]] = [set() for _ in self.shards]  # flows on each private route
        core_work = [0.0] * fabric.n_cores
        solo_work = [0.0] * len(self.agents)
        expected = [0] * steps
        for ag in self.agents:
            for s in range(steps):
                expected[s] += 1 if self._program(ag, s)[0] else 0
        done_count = [0] * steps
        t_done = [0.0] * steps
        last_rec: list = [None] * steps
        now = 0.0
        messages = 0
        trace_on = self.trace_on
        trace = self.trace

        def rate_of(f: list) -> float:
            r = f[11]
            if f[12]:  # its route is its own: only flows of the same shard share it
                share = shard_cap[f[5]] / len(shard_flows[f[5]])
                return share if share < r else r
            for res in f[4]:
                share = cap[res] / len(res_flows[res])
                if share < r:
                    r = share
            return r

        def reprice(fids: set[int]) -> None:
            """New shares for flows still sending; a flow in its latency tail keeps its slot."""
            nonlocal seq
            for g in fids:
                fl = flows[g]
                if now >= fl[10]:
                    continue
                fl[0] -= fl[1] * (now - fl[2])
                fl[2] = now
                fl[1] = rate_of(fl)
                fl[10] = now + max(fl[0], 0.0) / fl[1]
                fl[3] += 1
                seq += 1
                push(heap, (fl[10] + fl[7], seq, _FLOW, g, fl[3]))

        def hold(fid: int, resources: tuple[int, ...], sid: int) -> set[int] | None:
            """Put flow `fid` on its route; return the flows it now shares a resource with."""
            affected = None
            if shard_own[sid]:
                members = shard_flows[sid]
                if members:
                    affected = set(members)
                members.add(fid)
                return affected
            for res in resources:
                members = res_flows[res]
                if members is None:
                    res_flows[res] = {fid}
                    continue
                if members:
                    if affected is None:
                        affected = set(members)
                    else:
                        affected |= members
                members.add(fid)
            return affected

        def send(lk: _Link, shards: list, k: int, kind: str, cause) -> None:
            """Start a message: one flow per shard, each holding its route until it arrives
            (wormhole switching); `msg[0]` counts shards still to arrive."""
            nonlocal seq, messages
            messages += 1
            msg = [len(shards), lk, k, kind, now, cause if k >= traced_from else None]
            for resources, share, latency, base, sid in shards:
                if resources is None:  # same core: a copy inside L1
                    seq += 1
                    push(heap, (now, seq, _ARRIVE, msg))
                    continue
                fid = len(flows)
                own = shard_own[sid]
                affected = hold(fid, resources, sid)
                fl = [share, base, now, 0, resources, sid, msg, latency, now, share, 0.0, base, own]
                flows.append(fl)
                if affected:
                    fl[1] = rate_of(fl)
                fl[10] = now + share / fl[1]
                seq += 1
                push(heap, (fl[10] + latency, seq, _FLOW, fid, 0))
                if affected:
                    reprice(affected)

        def start(ag: _Agent, kind: str, k: int, secs: float) -> None:
            """Start an op; queued SG training runs first, as part of it."""
            nonlocal seq
            if ag.debt:
                kind, secs, ag.debt = ag.debt_kind + "+" + kind, secs + ag.debt, 0.0
            ag.busy = True
            ag.op = (kind, k, ag.cause if k >= traced_from else None)
            seq += 1
            if ag.solo:
                t0 = ag.free_at if ag.free_at > now else now
                push(heap, (t0 + secs, seq, _SOLO, ag, t0, t0))
                return
            ag.left = len(ag.cores)
            ag.began = math.inf
            for core in ag.cores:
                if core_busy[core]:
                    core_queue[core].append((ag, secs))
                else:
                    core_busy[core] = True
                    seq += 1
                    push(heap, (now + secs, seq, _TASK, core, ag, now))

        def train(ag: _Agent) -> None:
            """Run queued SG training while the agent waits.  A solo agent needs no event for
            it: its cores are busy until `free_at`, and its next op starts no earlier."""
            secs, ag.debt = ag.debt, 0.0
            if not ag.solo:
                start(ag, ag.debt_kind, ag.debt_k, secs)
                return
            t0 = ag.free_at if ag.free_at > now else now
            ag.free_at = t1 = t0 + secs
            if t1 > win[0]:
                overlap = min(t1, win[1]) - max(t0, win[0])
                if overlap > 0:
                    solo_work[ag.i] += overlap
            if trace_on and len(trace) < self.trace_limit:
                trace.append({"name": f"{ag.debt_kind} {ag.debt_k}", "cat": "compute", "ph": "X",
                              "ts": t0 * 1e6, "dur": secs * 1e6, "pid": 0, "tid": ag.i})

        def idle_routes(ag: _Agent, k: int) -> bool:
            """No flow holds any resource of the agent's activation routes at this step."""
            for lk in ag.out:
                if k % lk.every == 0:
                    for resources, _, _, _, sid in lk.fwd:
                        if shard_own[sid]:
                            if shard_flows[sid]:
                                return False
                        else:
                            for res in resources:
                                if res_flows[res]:
                                    return False
            return True

        def fused(ag: _Agent, kind: str, k: int, secs: float, cause) -> None:
            """F and B of a decoupled agent as one event (see `_classify_routes`)."""
            nonlocal seq, messages
            if ag.debt:
                kind, secs, ag.debt = ag.debt_kind + "+" + kind, secs + ag.debt, 0.0
            t0 = ag.free_at if ag.free_at > now else now
            mid = t0 + secs
            rec = (ag.name, kind, k, t0, mid, cause) if k >= traced_from else None
            if trace_on and len(trace) < self.trace_limit:
                trace.append({"name": f"{kind} {k}", "cat": "compute", "ph": "X", "ts": t0 * 1e6,
                              "dur": secs * 1e6, "pid": 0, "tid": ag.i})
            for lk in ag.out:
                if k % lk.every == 0:
                    messages += 1
                    msg = [len(lk.fwd), lk, k, "msg-act", mid, rec]
                    for resources, share, latency, base, sid in lk.fwd:
                        fid = len(flows)
                        own = shard_own[sid]
                        hold(fid, resources, sid)  # the routes are idle: nobody to reprice
                        t_x = mid + share / base
                        flows.append([share, base, mid, 0, resources, sid, msg, latency, mid, share, t_x, base, own])
                        seq += 1
                        push(heap, (t_x + latency, seq, _FLOW, fid, 0))
            ag.pc += 1  # the B that follows
            ag.busy = True
            ag.op = ("B", k, rec)
            seq += 1
            push(heap, (mid + ag.t_bwd, seq, _SOLO, ag, t0, mid))

        def try_start(ag: _Agent, cause) -> None:
            """Start the agent's next op if it can.  Queued SG/SI training (`debt`) runs first:
            folded into the next F/B/U when that is ready, else on its own."""
            if ag.busy:
                return
            ag.cause = cause
            ag.starved = False
            while ag.pc >= len(ag.ops):
                if ag.s + 1 >= steps:
                    if ag.debt:
                        train(ag)
                    return
                ag.s += 1
                ag.ops, ag.base = self._program(ag, ag.s)
                ag.pc = 0
            kind, k = ag.ops[ag.pc]
            k += ag.base
            if kind == "F" or kind == "R":
                wait = ag.wait_in
                for lk in wait:
                    if k % lk.every == 0 and k not in lk.arrived_act:
                        break
                else:
                    for lk in ag.paced:
                        if k % lk.every == 0 and lk.sent - lk.consumed >= window:
                            break
                    else:
                        for lk in ag.out:
                            if k % lk.every == 0:
                                lk.sent += 1
                        ag.pc += 1
                        if ag.fuse and idle_routes(ag, k):
                            fused(ag, kind, k, ag.t_fwd, cause)
                        else:
                            start(ag, kind, k, ag.t_fwd)
                        credit = None
                        for lk in wait:  # consume the inputs: their senders get a slot back
                            if k % lk.every == 0:
                                lk.arrived_act.discard(k)
                                lk.consumed += 1
                                src = lk.src
                                if src.starved and not src.busy:
                                    if credit is None and k >= traced_from:
                                        credit = (ag.name, "credit", k, now, now, cause)
                                    try_start(src, credit)
                        return
                    ag.starved = True  # waits for a send slot: a consumer's F will call back
            elif kind == "A":
                ag.pc += 1
                start(ag, kind, k, ag.t_bwd)
                return
            elif kind == "B":
                for lk in ag.bp_out:
                    if k % lk.every == 0 and k not in lk.arrived_grad:
                        break
                else:
                    for lk in ag.bp_out:
                        lk.arrived_grad.discard(k)
                    ag.pc += 1
                    start(ag, kind, k, ag.t_bwd)
                    return
            else:
                ag.pc += 1
                start(ag, kind, k, ag.t_upd)
                return
            if ag.debt:  # the program op waits: train the SG models meanwhile
                train(ag)

        def finish(ag: _Agent) -> None:
            kind, k, cause = ag.op
            t0 = ag.began
            rec = (ag.name, kind, k, t0, now, cause) if k >= traced_from else None
            if trace_on and len(trace) < self.trace_limit:
                trace.append({"name": f"{kind} {k}", "cat": "compute", "ph": "X", "ts": t0 * 1e6,
                              "dur": (now - t0) * 1e6, "pid": 0, "tid": ag.i})
            ag.busy = False
            last_kind = kind[-1]
            if last_kind == "F" or last_kind == "R":
                for out in ag.out:
                    if k % out.every == 0:
                        send(out, out.fwd, k, "msg-act", rec)
            if last_kind == "B" or last_kind == "R":
                for inl in ag.grad_in:
                    if k % inl.every == 0:
                        send(inl, inl.bwd, k, "msg-grad", rec)
            if last_kind in "FBURA" and ag.pc >= len(ag.ops):
                s = ag.s
                done_count[s] += 1
                if done_count[s] == expected[s]:
                    t_done[s] = now
                    last_rec[s] = rec
                    if s == first:
                        win[0] = now
                    if s == last:
                        win[1] = now
            try_start(ag, rec)

        def arrive(msg: list) -> None:
            msg[0] -= 1
            if msg[0]:
                return
            _, lk, k, kind, t_sent, cause = msg
            rec = (lk.name, kind, k, t_sent, now, cause) if k >= traced_from else None
            if trace_on and len(trace) < self.trace_limit:
                trace.append({"name": f"{kind[4:]} {k}", "cat": "message", "ph": "X", "ts": t_sent * 1e6,
                              "dur": (now - t_sent) * 1e6, "pid": 1, "tid": lk.i})
            if kind == "msg-act":
                dst = lk.dst
                lk.arrived_act.add(k)
                if not dst.busy:
                    try_start(dst, rec)
            else:
                src = lk.src
                if lk.mode == "backprop":
                    lk.arrived_grad.add(k)
                elif lk.t_g > 0:
                    src.debt += lk.t_g
                    src.debt_kind, src.debt_k = "G", k
                if not src.busy:
                    try_start(src, rec)

        for ag in self.agents:
            try_start(ag, None)
        events = 0
        while heap:
            item = pop(heap)
            now = item[0]
            events += 1
            kind = item[2]
            if kind == _SOLO:
                ag = item[3]
                t0 = item[4]  # busy since; the op itself began at item[5]
                ag.began = item[5]
                if now > win[0]:
                    overlap = min(now, win[1]) - max(t0, win[0])
                    if overlap > 0:
                        solo_work[ag.i] += overlap
                finish(ag)
            elif kind == _TASK:
                core, ag = item[3], item[4]
                t0 = item[5]
                if t0 < ag.began:
                    ag.began = t0
                if now > win[0]:
                    overlap = min(now, win[1]) - max(t0, win[0])
                    if overlap > 0:
                        core_work[core] += overlap
                q = core_queue[core]
                if q:
                    nxt, secs = q.popleft()
                    seq += 1
                    push(heap, (now + secs, seq, _TASK, core, nxt, now))
                else:
                    core_busy[core] = False
                ag.left -= 1
                if ag.left == 0:
                    finish(ag)
            elif kind == _FLOW:
                g = item[3]
                fl = flows[g]
                if fl is None or fl[3] != item[4]:
                    continue  # repriced since: a newer event stands for it
                flows[g] = None
                if now > win[0]:  # the bytes it moved inside the window, at its average rate
                    t_x = fl[10]
                    overlap = min(t_x, win[1]) - max(fl[8], win[0])
                    if overlap > 0:
                        shard_bytes[fl[5]] += fl[9] * overlap / (t_x - fl[8]) if t_x > fl[8] else fl[9]
                affected = None
                if fl[12]:
                    members = shard_flows[fl[5]]
                    members.discard(g)
                    if members:
                        affected = set(members)
                else:
                    for res in fl[4]:
                        members = res_flows[res]
                        members.discard(g)
                        if members:
                            if affected is None:
                                affected = set(members)
                            else:
                                affected |= members
                if affected:
                    reprice(affected)
                arrive(fl[6])
            else:
                arrive(item[3])
        stuck = [ag.name for ag in self.agents if ag.s < steps - 1 or ag.pc < len(ag.ops)]
        if stuck:
            raise SimulationError(
                f"the simulation stopped with agents waiting: {', '.join(stuck[:8])} "
                "(a cycle of links, or a link mode that leaves a forward without its input)")
        for ag in self.agents:
            if ag.solo:
                for core in ag.cores:
                    core_work[core] += solo_work[ag.i]
        res_bytes = [0.0] * n_res
        for sid, moved in enumerate(shard_bytes):
            for res in self.shards[sid]:
                res_bytes[res] += moved
        return self._result(now, t_done, last_rec, (first, last), core_work, res_bytes, messages, events)

    # ------------------------------------------------------------------ result

    def _result(self, end: float, t_done: list[float], last_rec: list, span: tuple[int, int],
                core_work: list[float], res_bytes: list[float], messages: int, events: int) -> SimResult:
        M = self.M
        first, last = span
        window_t = t_done[last] - (t_done[first] if first >= 0 else 0.0)
        step_time = window_t / (last - first)
        fabric = self.fabric
        samples = self.wl.batch * M
        names: dict[int, list[str]] = {}
        for ag in self.agents:
            for core in ag.cores:
                names.setdefault(core, []).append(ag.name)
        cores = []
        for core in sorted(names):
            chip, x, y = fabric.coords(core)
            util = core_work[core] / window_t if window_t > 0 else 0.0
            cores.append({"chip": chip, "x": x, "y": y, "utilisation": util, "agents": names[core]})
        mean_util = sum(c["utilisation"] for c in cores) / len(cores) if cores else 0.0
        links, ports = [], []
        for r, nbytes in enumerate(res_bytes):
            if nbytes > 0 and window_t > 0:
                name = fabric.describe_resource(r)
                (ports if "niu" in name else links).append(
                    {"resource": r, "name": name, "utilisation": nbytes / (fabric.capacity[r] * window_t), "bytes": nbytes})
        links.sort(key=lambda d: -d["utilisation"])
        ports.sort(key=lambda d: -d["utilisation"])
        trace = None
        if self.trace_on:
            trace = self._trace_meta() + self.trace
        return SimResult(
            mode=self.mode, schedule=self.schedule, microbatches=M, steps=self.steps, samples_per_step=samples,
            step_time_s=step_time, samples_per_s=samples / step_time if step_time > 0 else math.inf,
            makespan_s=end, core_utilisation=mean_util,
            link_utilisation_max=links[0]["utilisation"] if links else 0.0,
            cores=cores, links=links, ports=ports[:16],
            critical_path=_critical_path(last_rec[last], last * M),
            messages=messages, events=events, trace=trace)

    def _trace_meta(self) -> list[dict]:
        meta = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "agents (compute)"}},
                {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "links (messages)"}}]
        for ag in self.agents:
            chip, x, y = self.fabric.coords(ag.cores[0])
            meta.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": ag.i,
                         "args": {"name": f"{ag.name} @chip{chip}({x},{y})"}})
        for lk in self.links:
            meta.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": lk.i, "args": {"name": lk.name}})
        return meta


def _critical_path(rec, first_step: int) -> dict:
    """Walk back from the op that completed the last mini-batch through what each op or
    message waited on last, while the work belongs to that mini-batch (micro-steps from
    `first_step`)."""
    segments = []
    compute = comm = 0.0
    while rec is not None and rec[2] >= first_step:
        who, kind, k, t0, t1, cause = rec
        segments.append({"what": kind, "who": who, "step": k, "start_s": t0, "end_s": t1})
        if kind.startswith("msg"):
            comm += t1 - t0
        else:
            compute += t1 - t0
        rec = cause
    segments.reverse()
    return {"compute_s": compute, "communication_s": comm, "segments": segments[-64:],
            "length": len(segments)}
