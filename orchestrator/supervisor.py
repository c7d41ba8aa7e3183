"""Running a planned topology: launch, registration barrier, start, supervise, stop, summarise.

The supervisor owns the control plane (a ROUTER the agents' DEALERs connect to).  It
never touches training data.  A run ends when every terminal agent has reported its final
evaluation, when an agent fails (its traceback is shown under its name), or on SIGINT or
SIGTERM; in every case each agent gets STOP, then SIGTERM, then SIGKILL, and the ipc
directory is removed, so no process or socket file outlives the run.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import zmq

from ..agents.runtime.admission import RejectLog
from ..protocol import (
    IpcNamespace,
    Kind,
    Message,
    ProtocolError,
    bind_router,
    new_context,
    send_routed,
    tcp_endpoint,
)
from ..protocol.curve import start_authenticator
from ..protocol.lifecycle import Lifecycle
from ..protocol.transport import recv_routed_with_user
from .keys import RunKeys, fresh_run_keys
from .launcher import AgentHandle, Launcher
from .plan import RunPlan
from .progress import Progress
from .reports import COUNTERS, check_report, counters
from .rundir import RunDir

STOP_GRACE_S = 2.0

log = logging.getLogger("synthgrad.orchestrator")


class RunFailed(RuntimeError):
    """An agent failed or vanished; the message names it and carries its traceback."""


class Interrupted(RuntimeError):
    """The run was stopped by a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@dataclass
class AgentRecord:
    """What the supervisor knows of one agent: its process, lifecycle state and last metrics."""

    handle: AgentHandle
    pid: int | None = None
    steps: int = 0
    state: Lifecycle = Lifecycle.SPAWNED
    last_metrics: dict = field(default_factory=dict)

    def advance(self, state: Lifecycle) -> None:
        self.state = self.state.advance(state)

    def summary(self) -> dict:
        """summary.json's entry for this agent; the counters as of its last metrics report."""
        return {
            "pid": self.pid, "steps": self.steps, "state": self.state.value, "restarts": 0,
            **{prefix[:-1]: counters(self.last_metrics, prefix) for prefix in COUNTERS},
        }


class Supervisor:
    """Runs one plan to its end; `run()` returns the summary dict."""

    def __init__(
        self,
        plan: RunPlan,
        run_dir: RunDir,
        launcher: Launcher,
        progress: Progress,
        started_at: float | None = None,
        keys: RunKeys | None = None,
    ) -> None:
        """`keys`: a tcp run's keys (orchestrator/keys.py); None on tcp makes fresh ones."""
        self.started_at = started_at if started_at is not None else time.monotonic()
        self.plan = plan
        self.run_dir = run_dir
        self.launcher = launcher
        self.progress = progress
        self.run_id = run_dir.path.name
        self.zctx = new_context()
        self.ipc = IpcNamespace()
        run = plan.topology.run
        self.keys, self.auth, self.data_endpoints = None, None, {}
        if run.transport == "tcp":  # CURVE is mandatory on tcp (docs/security.md)
            self.keys = keys or fresh_run_keys(run_dir.path, plan.order)
            self.auth = start_authenticator(self.zctx, self.keys.allow_list(log))  # before the bind
        where = tcp_endpoint(run.bind) if self.keys else self.ipc.endpoint("control")
        self.router, self.endpoint = bind_router(self.zctx, where, hwm=0, curve=self.keys and self.keys.server)
        self.agents: dict[str, AgentRecord] = {}
        self.evaluations: list[dict] = []
        self.budget = 0
        self.rejected: Counter[str] = Counter()  # control messages dropped, by reason (reports.py)
        self.reject_log = RejectLog(log, "control plane")
        self.unreachable: set[str] = set()
        self._signal: int | None = None
        self.timings: dict[str, float] = {}

    # ----------------------------------------------------------------- signals
    def _on_signal(self, signum, _frame) -> None:
        self._signal = signum

    def _check_signal(self) -> None:
        if self._signal is not None:
            raise Interrupted(self._signal)

    # ----------------------------------------------------------------- messaging
    def _send(self, name: str, kind: Kind, meta: dict | None = None) -> bool:
        """Send to one agent; False when it is not reachable now.

        The ROUTER is `ROUTER_MANDATORY` (protocol/sockets.py), so a peer that is gone raises
        EHOSTUNREACH instead of the message vanishing: that is logged once per agent and
        reported as False, never raised; whether the agent is dead is `_check_processes`'s
        call, from its process.
        """
        try:
            send_routed(self.router, name.encode(), Message(kind=kind, run=self.run_id, meta=meta or {}), zmq.NOBLOCK)
        except zmq.ZMQError as err:
            if err.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                raise
            if name not in self.unreachable:
                self.unreachable.add(name)
                log.warning("agent %r is not reachable on the control socket (%s); not sending %s", name, err, kind.name)
            return False
        self.unreachable.discard(name)
        return True

    def _refuse_stranger(self, identity: bytes, msg: Message) -> None:
        """A control message from a name that is not an agent of this run: an ERROR reply
        (so a misconfigured agent learns why) and a log line; never an exception."""
        name = identity.decode(errors="replace")
        self._reject("stranger", f"{msg.kind.name} from {name!r}: no agent of this run has that name")
        if msg.kind == Kind.HELLO:
            reply = Message(kind=Kind.ERROR, run=self.run_id, meta={"error": f"no agent named {name!r} in run {self.run_id}"})
            try:
                send_routed(self.router, identity, reply, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # gone already

    def _receive(self, timeout_ms: int) -> tuple[str, Message] | None:
        try:
            got = recv_routed_with_user(self.router, timeout_ms=timeout_ms)
        except ProtocolError as err:
            self._reject("decode", str(err))
            return None
        if got is None:
            return None
        identity, user, msg = got
        name = identity.decode(errors="replace")
        if name not in self.agents:
            self._refuse_stranger(identity, msg)
            return None
        if self.keys is not None and user != self.keys.agents[name].decode():
            # A listed key speaking under another agent's name: the key is the identity.
            self._reject("key", f"{msg.kind.name} from {name!r}: its connection holds another agent's CURVE key")
            return None
        if msg.run != self.run_id and not (msg.kind == Kind.HELLO and msg.run == ""):
            self._reject("run", f"{msg.kind.name} from {name!r} carries run {msg.run!r}, not {self.run_id!r}")
            return None
        problem = check_report(msg.kind, msg.meta)
        if problem is not None:
            self._reject("report", f"{msg.kind.name} from {name!r}: {problem}")
            return None
        return name, msg

    def _reject(self, reason: str, detail: str) -> None:
        """Drop one control message: counted by reason (summary.json's `control_rejected`) and
        logged with a rate limit; never an exception."""
        self.rejected[reason] += 1
        self.reject_log(reason, detail)

    def _handle(self, name: str, msg: Message) -> None:
        state = self.agents[name]
        if msg.kind == Kind.ERROR:
            state.advance(Lifecycle.FAILED)
            raise RunFailed(f"agent {name!r} failed:\n{msg.meta.get('error', '')}")
        if msg.kind == Kind.HELLO:
            state.advance(Lifecycle.REGISTERED)
            state.pid = msg.meta.get("pid", state.handle.pid)
        elif msg.kind == Kind.HEARTBEAT and msg.meta.get("state") == Lifecycle.READY.value:
            state.advance(Lifecycle.READY)
            self.budget = max(self.budget, int(msg.meta.get("budget", 0)))
            if self.keys is not None:  # tcp: the ports the agent bound, for START
                self.data_endpoints[name] = self._bound_endpoints(name, msg.meta.get("endpoints"))
        elif msg.kind == Kind.METRICS:
            meta = dict(msg.meta)
            state.steps = int(meta.get("steps", state.steps))
            state.last_metrics = meta
            if meta.pop("final_report", False):
                state.advance(Lifecycle.STOPPED)
            self.run_dir.record(name, msg.step, meta)
            if "eval" in meta:
                self.evaluations.append({"agent": name, **meta})
            self.progress.update(name, meta, self.budget)

    @staticmethod
    def _bound_endpoints(name: str, given) -> dict[str, str]:
        def usable(plane: str) -> bool:
            return isinstance(given.get(plane), str) and given[plane].startswith("tcp://")

        if not isinstance(given, dict) or not (usable("fwd") and usable("bwd")):
            raise RunFailed(f"agent {name!r} reported no tcp endpoints for fwd and bwd: {given!r}")
        return {"fwd": given["fwd"], "bwd": given["bwd"]}

    def _check_processes(self, stopping: bool = False) -> None:
        for name, state in self.agents.items():
            code = state.handle.exitcode
            if code is not None and not stopping and state.state is not Lifecycle.STOPPED:
                state.advance(Lifecycle.FAILED)
                tail = self.run_dir.log_tail(name)
                raise RunFailed(f"agent {name!r} exited unexpectedly with code {code}; its log ends:\n{tail}")

    def _pump(self, timeout_ms: int = 100) -> None:
        """Handle control messages for up to `timeout_ms`, then check processes and signals."""
        got = self._receive(timeout_ms)
        while got is not None:
            self._handle(*got)
            got = self._receive(0)
        self._check_processes()
        self._check_signal()

    def _wait_for(self, state: Lifecycle, timeout_s: float) -> None:
        """Pump control messages until every agent has reached `state`."""
        deadline = time.monotonic() + timeout_s
        what = {Lifecycle.REGISTERED: "register", Lifecycle.READY: "become ready"}[state]
        while not all(s.state.reached(state) for s in self.agents.values()):
            if time.monotonic() > deadline:
                missing = [n for n, s in self.agents.items() if not s.state.reached(state)]
                raise RunFailed(f"agents {missing} did not {what} within {timeout_s:.0f} s (run.register_timeout_s)")
            self._pump()

    # ----------------------------------------------------------------- phases
    def _launch(self) -> None:
        t0 = time.monotonic()
        for name in self.plan.order:
            keys_dir = str(self.keys.path) if self.keys else None
            handle = self.launcher.start(name, self.endpoint, str(self.run_dir.log_path(name)), keys_dir)
            self.agents[name] = AgentRecord(handle=handle, pid=handle.pid)
        timeout = self.plan.topology.run.register_timeout_s
        self._wait_for(Lifecycle.REGISTERED, timeout)
        self.timings["spawn_s"] = time.monotonic() - t0
        self.timings["registered_s"] = time.monotonic() - self.started_at  # from the command's start
        self.run_dir.write_json(
            "agents.json",
            {"ipc_dir": self.ipc.path, "control": self.endpoint, "agents": {n: {"pid": s.pid} for n, s in self.agents.items()}},
        )
        if self.keys is None:
            plane = {"endpoints": {n: {"fwd": self.ipc.endpoint(f"{n}.f"), "bwd": self.ipc.endpoint(f"{n}.b")} for n in self.agents}}
        else:  # tcp: agents bind ephemeral ports and report them when ready; START carries them
            plane = {"keys": self.keys.wire()}
        for name in self.agents:
            meta = {"spec": self.plan.agents[name].to_wire(), "run_dir": str(self.run_dir.path), **plane}
            self._send(name, Kind.WELCOME, meta)
        self._wait_for(Lifecycle.READY, timeout)
        if self.keys is not None:
            self.run_dir.write_json("endpoints.json", {"control": self.endpoint, "agents": self.data_endpoints})
        self.timings["ready_s"] = time.monotonic() - t0

    def _train(self) -> None:
        terminals = self.plan.terminals
        start = {"endpoints": self.data_endpoints} if self.keys is not None else None
        for name, state in self.agents.items():
            self._send(name, Kind.START, start)
            state.advance(Lifecycle.RUNNING)
        self.t_start = time.monotonic()
        next_beat = 0.0
        finals = set()
        while not terminals or len(finals) < len(terminals):
            self._pump()
            finals = {e["agent"] for e in self.evaluations if e.get("final")}
            if not terminals and self.agents[self.plan.source].steps >= self.budget:
                break
            if time.monotonic() >= next_beat:
                for name in self.agents:
                    self._send(name, Kind.HEARTBEAT)
                next_beat = time.monotonic() + 1.0
        self.timings["wall_s"] = time.monotonic() - self.t_start

    def _stop(self) -> None:
        """STOP to all, wait for their final reports, then TERM and KILL what remains."""
        for name, state in self.agents.items():
            state.advance(Lifecycle.STOPPING)
            self._send(name, Kind.STOP)  # False when it never registered or is gone
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(s.handle.is_alive() for s in self.agents.values()):
            got = self._receive(50)
            if got is not None and got[1].kind != Kind.ERROR:
                self._handle(*got)
        for action in ("terminate", "kill"):
            alive = [s.handle for s in self.agents.values() if s.handle.is_alive()]
            for handle in alive:
                getattr(handle, action)()
            for handle in alive:
                handle.join(timeout=1.0)

    def run(self) -> dict:
        """Run the plan; raises `RunFailed` or `Interrupted` after cleaning up."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._launch()
            self._train()
        finally:
            self._stop()
            self.router.close(0)
            if self.auth is not None:  # its thread uses sockets of the context: stop it first
                self.auth.stop()
            self.zctx.term()
            self.ipc.cleanup()
            self.run_dir.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.summary()

    def summary(self) -> dict:
        run = self.plan.topology.run
        wall = self.timings.get("wall_s", 0.0)
        steps = self.agents[self.plan.source].steps if self.plan.source in self.agents else 0
        finals = [e for e in self.evaluations if e.get("final")]
        metrics = {k: v for k, v in (finals[-1] if finals else {}).items() if k.startswith("test_")}
        return {
            "run_dir": str(self.run_dir.path),
            "run_id": self.run_id,
            "steps": steps,
            "wall_s": wall,
            "samples_per_s": steps * run.batch_size / wall if wall else 0.0,
            "metrics": metrics,
            "evaluations": self.evaluations,
            "timings": self.timings,
            "control_rejected": dict(self.rejected),
            "agents": {n: s.summary() for n, s in self.agents.items()},
        }

