"""Running a planned topology: launch, registration barrier, start, supervise, stop, summarise.

The supervisor owns the control plane (a ROUTER the agents' DEALERs connect to).  It
never touches training data.  A run ends when every terminal agent has reported its final
evaluation, when an agent fails (its traceback is shown under its name), or on SIGINT or
SIGTERM; in every case each agent gets STOP, then SIGTERM, then SIGKILL, and the ipc
directory is removed, so no process or socket file outlives the run.

Faults while training (docs/fault-tolerance.md): an agent whose process exits is seen at
once, one silent for `run.hang_timeout_s` is killed; either is restarted from its latest
checkpoint (`restarts.py`) while its peers go on, up to `run.max_restarts` times.  An
exception an agent reports (ERROR) is not restarted: the same code would raise again.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import time
from collections import Counter

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
from .checkpoints import Checkpoints
from .keys import RunKeys, fresh_run_keys
from .launcher import Launcher
from .plan import RunPlan
from .progress import Progress
from .reports import check_report
from .restarts import AgentRecord, RestartPolicy, RunFailed
from .rundir import RunDir
from .status import StatusBoard, agent_row, link_rows

STOP_GRACE_S = 2.0

log = logging.getLogger("synthgrad.orchestrator")


class Interrupted(RuntimeError):
    """The run was stopped by a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


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
        resume: dict | None = None,
    ) -> None:
        """`keys`: a tcp run's keys (orchestrator/keys.py); None on tcp makes fresh ones.
        `resume`: a checkpoint manifest (checkpoints.py) every agent starts from."""
        self.started_at = started_at if started_at is not None else time.monotonic()
        self.plan = plan
        self.run_dir = run_dir
        self.launcher = launcher
        self.progress = progress
        self.run_id = run_dir.path.name
        self.zctx = new_context()
        run = plan.topology.run
        self.ipc = IpcNamespace() if run.transport == "ipc" else None
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
        self.resume = resume
        self.checkpoints = Checkpoints(run_dir.path / "checkpoints", plan.order, plan.source, run)
        self.resumed_steps = 0  # training steps done before this run (--resume)
        if resume is not None:
            self.resumed_steps = int(resume["agents"][plan.source].get("steps", 0))
            self.checkpoints.last_step = self.resumed_steps  # the next round one interval on
        unlocked = any(link.mode.has_synthetic_input for agent in plan.agents.values() for link in agent.in_links)
        self.policy = RestartPolicy(run, plan.source, unlocked)
        self.faults: list[dict] = []  # one entry per fault: agent, cause, detection and rejoin times
        self.training = False
        self._last_check = time.monotonic()
        self.board = StatusBoard(run_dir.path, self.run_id, self.started_at)
        self.phase = "starting"
        self.tensorboard = None
        if run.tensorboard:  # the CLI checked the package is there before anything started
            from .tensorboard import TensorBoardWriter

            self.tensorboard = TensorBoardWriter(run_dir.path / "tensorboard", plan.samples_per_step, heads=plan.terminals)

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
        state.heard()
        if msg.kind == Kind.ERROR:
            state.advance(Lifecycle.FAILED)
            raise RunFailed(f"agent {name!r} failed:\n{msg.meta.get('error', '')}")
        if msg.kind == Kind.HELLO:
            state.advance(Lifecycle.REGISTERED)
            state.pid = msg.meta.get("pid", state.handle.pid)
            state.host = msg.meta.get("host", socket.gethostname())
            if self.training:  # a restarted agent: its plan, and the checkpoint to start from
                self._welcome(name, self.checkpoints.latest(only=name))
        elif msg.kind == Kind.HEARTBEAT and msg.meta.get("state") == Lifecycle.READY.value:
            state.advance(Lifecycle.READY)
            state.ready_ns = time.monotonic_ns()  # the clock-offset round trip (START answers it)
            self.budget = max(self.budget, int(msg.meta.get("budget", 0)))
            if self.keys is not None:  # tcp: the ports the agent bound, for START
                self.data_endpoints[name] = self._bound_endpoints(name, msg.meta.get("endpoints"))
            if self.training and state.down:
                self._rejoin(name)
        elif msg.kind == Kind.CHECKPOINT:
            others = self.checkpoints.on_report(name, msg.meta)
            if others is not None:
                for other in self.agents:
                    if other != name:
                        self._send(other, Kind.CHECKPOINT, others)
        elif msg.kind == Kind.METRICS:
            meta = dict(msg.meta)
            state.steps = int(meta.get("steps", state.steps))
            state.last_metrics = meta
            if meta.pop("final_report", False):
                state.advance(Lifecycle.STOPPED)
            self.run_dir.record(name, msg.step, meta)
            if "eval" in meta:
                self.evaluations.append({"agent": name, **meta})
            else:
                state.latest.update(meta)
                if "first_step_s" not in self.timings and state.steps and name != self.plan.source:
                    self.timings["first_step_s"] = time.monotonic() - self.started_at
            if self.tensorboard is not None:
                self.tensorboard.record(name, meta)
            self.progress.update(name, meta, self.budget)

    @staticmethod
    def _bound_endpoints(name: str, given) -> dict[str, str]:
        def usable(plane: str) -> bool:
            return isinstance(given.get(plane), str) and given[plane].startswith("tcp://")

        if not isinstance(given, dict) or not (usable("fwd") and usable("bwd")):
            raise RunFailed(f"agent {name!r} reported no tcp endpoints for fwd and bwd: {given!r}")
        return {"fwd": given["fwd"], "bwd": given["bwd"]}

    def _check_processes(self) -> None:
        """Exits and hangs.  Before training every exit is fatal; while training, an exit,
        or silence past `run.hang_timeout_s` in a running agent, is a fault (`_fault`)."""
        run = self.plan.topology.run
        now = time.monotonic()
        if now - self._last_check > 2 * run.heartbeat_s:
            # This process itself did not run (SIGSTOP, a suspended laptop, a starved CPU):
            # the agents' heartbeats are still unread, so nobody's silence means anything yet.
            if self.training:
                log.warning("the orchestrator did not run for %.1f s; every agent gets a fresh hang timeout", now - self._last_check)
            for state in self.agents.values():
                state.heard()
        self._last_check = now
        for name, state in self.agents.items():
            if state.restart_at is not None:  # no process now: it starts at restart_at
                continue
            code = state.handle.exitcode
            if code is not None:
                cause = f"exited with code {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"
                if not self.training:
                    state.advance(Lifecycle.FAILED)
                    raise RunFailed(f"agent {name!r} {cause} unexpectedly; its log ends:\n{self.run_dir.log_tail(name)}")
                self._fault(name, cause, now)
                continue
            silent = now - state.last_heard
            limit = run.hang_timeout_s if state.state is Lifecycle.RUNNING else run.register_timeout_s
            if self.training and silent > limit:
                state.handle.kill()  # a hung (or stopped) process: it cannot be asked
                state.handle.join(timeout=1.0)
                self._fault(name, f"was silent for {silent:.1f} s (hang timeout {limit:g} s), killed", now)
            elif self.training and silent > 3 * run.heartbeat_s and not state.late_warned:
                state.late_warned = True
                log.warning("agent %r is late: no heartbeat for %.1f s (hang timeout %g s)", name, silent, limit)
        if self.training:
            self.progress.late({n: now - s.last_heard for n, s in self.agents.items() if not s.down and now - s.last_heard > 3 * run.heartbeat_s})

    # ----------------------------------------------------------------- faults
    def _fault(self, name: str, cause: str, now: float) -> None:
        """An agent died or hung while training: restart it later, or end the run.

        Its fault entry in summary.json: `t` (s since training began), `silent_s` (since it
        was last heard: for a hang, the timeout plus the detection delay)."""
        state = self.agents[name]
        refusal = self.policy.refusal(name, state)
        log.warning("agent %r %s", name, cause)
        silent = now - state.last_heard
        state.went_down(now)
        self.checkpoints.abandon(f"agent {name!r} {cause}")
        self.faults.append(
            {"agent": name, "cause": cause, "t": round(now - self.t_start, 3), "silent_s": round(silent, 3), "restart": refusal is None}
        )
        if refusal is not None:
            raise RunFailed(f"agent {name!r} {cause}; {refusal}; its log ends:\n{self.run_dir.log_tail(name)}")
        delay = self.policy.delay_s(state)
        state.restarts += 1
        state.restart_at = now + delay
        log.warning("restarting %r in %.1f s (restart %d of %d); its peers go on", name, delay, state.restarts, self.plan.topology.run.max_restarts)
        self._beat()  # tell the peers at once: messages to it are dropped and counted

    def _relaunch_due(self, now: float) -> None:
        for name, state in self.agents.items():
            if state.restart_at is not None and now >= state.restart_at:
                keys_dir = str(self.keys.path) if self.keys else None
                state.relaunched(self.launcher.start(name, self.endpoint, str(self.run_dir.log_path(name)), keys_dir))
                self._write_agents()

    def _write_agents(self) -> None:
        """agents.json: the ipc folder, the control endpoint and every agent's current pid
        and incarnation (rewritten at each restart)."""
        agents = {n: {"pid": s.pid, "incarnation": s.incarnation, "restarts": s.restarts} for n, s in self.agents.items()}
        ipc_dir = self.ipc.path if self.ipc is not None else None
        self.run_dir.write_json("agents.json", {"ipc_dir": ipc_dir, "control": self.endpoint, "agents": agents})

    def _rejoin(self, name: str) -> None:
        """A restarted agent is ready: START it; its peers learn its new incarnation."""
        state = self.agents[name]
        self._start(name)
        state.advance(Lifecycle.RUNNING)
        outage = state.rejoined(time.monotonic())
        fault = next(f for f in reversed(self.faults) if f["agent"] == name)
        fault["rejoined_after_s"] = round(outage, 3)
        log.warning("agent %r rejoined after %.1f s down (restart %d)", name, outage, state.restarts)
        self._write_agents()
        self._beat()

    def _beat(self) -> None:
        """The orchestrator's heartbeat: which agents are down and each one's incarnation."""
        meta = {
            "down": [n for n, s in self.agents.items() if s.down],
            "incarnations": {n: s.incarnation for n, s in self.agents.items() if s.incarnation},
        }
        for name, state in self.agents.items():
            if not state.down:
                self._send(name, Kind.HEARTBEAT, meta)

    def _welcome(self, name: str, checkpoint: dict | None) -> None:
        meta = {"spec": self.plan.agents[name].to_wire(), "run_dir": str(self.run_dir.path)}
        if self.keys is None:
            meta["endpoints"] = {n: {"fwd": self.ipc.endpoint(f"{n}.f"), "bwd": self.ipc.endpoint(f"{n}.b")} for n in self.agents}
        else:  # tcp: agents bind ephemeral ports and report them when ready; START carries them
            meta["keys"] = self.keys.wire()
            if name in self.data_endpoints:  # a restart binds the ports its peers know
                meta["bind"] = self.data_endpoints[name]
        if checkpoint is not None and name in checkpoint["agents"]:
            entry = checkpoint["agents"][name]
            meta["restore"] = {"file": entry["file"], "sha256": entry["sha256"]}
        meta["incarnations"] = {n: s.incarnation for n, s in self.agents.items() if s.incarnation}
        if self.training:  # a restart: its peers went on, so it takes the next step it gets
            meta["rejoin"] = True
        self._send(name, Kind.WELCOME, meta)

    def _start(self, name: str) -> None:
        """START one agent, with what it needs to put its clock on ours (agents/runtime/
        trace.py `clock_offset`): when its ready heartbeat came, and when this leaves."""
        meta = {"endpoints": self.data_endpoints} if self.keys is not None else {}
        meta["clock"] = {"received_ns": self.agents[name].ready_ns, "sent_ns": time.monotonic_ns()}
        self._send(name, Kind.START, meta)

    def _pump(self, timeout_ms: int = 100, signals: bool = True) -> None:
        """Handle control messages for up to `timeout_ms`, then check processes and signals."""
        got = self._receive(timeout_ms)
        while got is not None:
            self._handle(*got)
            got = self._receive(0)
        self._check_processes()
        if signals:
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
            if self.board.due(time.monotonic()):
                self._publish()

    # ----------------------------------------------------------------- phases
    def _mark(self, event: str) -> None:
        """summary.json's `timings[event]`: seconds since the command started (one origin)."""
        self.timings[event] = time.monotonic() - self.started_at

    def _launch(self) -> None:
        for name in self.plan.order:
            keys_dir = str(self.keys.path) if self.keys else None
            handle = self.launcher.start(name, self.endpoint, str(self.run_dir.log_path(name)), keys_dir)
            self.agents[name] = AgentRecord(handle=handle, pid=handle.pid)
        self._mark("spawn_s")  # every agent process launched
        self._publish()
        timeout = self.plan.topology.run.register_timeout_s
        self._wait_for(Lifecycle.REGISTERED, timeout)
        self._mark("registered_s")
        self._write_agents()
        for name in self.agents:
            self._welcome(name, self.resume)
        self._wait_for(Lifecycle.READY, timeout)
        if self.keys is not None:
            self.run_dir.write_json("endpoints.json", {"control": self.endpoint, "agents": self.data_endpoints})
        self._mark("ready_s")

    def _train(self) -> None:
        terminals = self.plan.terminals
        for name, state in self.agents.items():
            self._start(name)
            state.advance(Lifecycle.RUNNING)
        self.t_start = time.monotonic()
        self.training = True
        self.phase = "training"
        self._mark("start_s")
        every = self.plan.topology.run.heartbeat_s
        next_beat = 0.0
        finals = set()
        while not terminals or len(finals) < len(terminals):
            self._pump()
            finals = {e["agent"] for e in self.evaluations if e.get("final")}
            source_steps = self.agents[self.plan.source].steps
            if not terminals and source_steps >= self.budget:
                break
            now = time.monotonic()
            self._relaunch_due(now)
            self.checkpoints.expire(now)
            if self.checkpoints.due(source_steps, now) and not any(s.down for s in self.agents.values()):
                self._send(self.plan.source, Kind.CHECKPOINT, self.checkpoints.begin(source_steps, now))
            if now >= next_beat:
                self._beat()
                next_beat = now + every
            if self.board.due(now):
                self._publish()
        self._end_training()

    def _end_training(self) -> None:
        """Training is over (done, failed or interrupted): its length and when it ended."""
        self.timings["wall_s"] = time.monotonic() - self.t_start
        self._mark("end_s")

    def _last_checkpoint(self, timeout_s: float = 10.0) -> None:
        """Interrupted while training: one more checkpoint round (so `--resume` loses
        nothing), waited for at most `timeout_s`."""
        if any(s.down for s in self.agents.values()):
            return
        self.checkpoints.abandon("interrupted; a last round replaces it")
        steps = self.agents[self.plan.source].steps
        self._send(self.plan.source, Kind.CHECKPOINT, self.checkpoints.begin(steps, time.monotonic()))
        deadline = time.monotonic() + timeout_s
        while self.checkpoints.current is not None and time.monotonic() < deadline:
            self._pump(signals=False)
        if self.checkpoints.current is not None:
            self.checkpoints.abandon(f"not complete within {timeout_s:.0f} s of the signal")

    def _stop(self) -> None:
        """STOP to all, wait for their final reports, then TERM and KILL what remains."""
        self.training = False
        self.phase = "stopping"
        if self.agents:
            self._publish()
        for name, state in self.agents.items():
            state.advance(Lifecycle.STOPPING)
            self._send(name, Kind.STOP)  # False when it never registered or is gone
        # Connections are made; nothing needs the socket paths any more, so they go now: a
        # SIGKILL during the stop (systemd's, timeout -k's) then leaves no ipc folder behind.
        if self.ipc is not None:
            self.ipc.cleanup()
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
        self._mark("stopped_s")  # every agent process has exited

    # ----------------------------------------------------------------- status
    def publish_end(self, state: str, exit_code: int, summary_path, summary: dict) -> None:
        """The run has ended (`state`: finished, failed or interrupted) and summary.json is
        written: status.json's last rewrite says so, with the exit code the command returns
        and the summary's samples/s (over the whole training, not the last report's)."""
        self.phase = state
        self._publish(exit_code=exit_code, summary=str(summary_path), samples_per_s=summary.get("samples_per_s") or None)

    def _publish(self, **end) -> None:
        """Rewrite status.json (orchestrator/status.py) with the run as it is now."""
        steps = self.agents[self.plan.source].steps if self.plan.source in self.agents else 0
        # The run's rate is its head's, as on the progress line (the source may run ahead).
        head = next((self.agents[t].latest for t in self.plan.terminals if t in self.agents), None)
        if head is None:
            head = self.agents[self.plan.source].latest if self.plan.source in self.agents else {}
        rate = head.get("steps_per_s")
        rate = rate if isinstance(rate, (int, float)) and rate > 0 else None
        left = max(self.budget - steps, 0) if self.budget else None
        evals = [e for e in self.evaluations if "test_accuracy" in e]
        fields = dict(
            steps=steps,
            budget=self.budget or None,
            eta_s=left / rate if left is not None and rate and self.phase == "training" else None,
            samples_per_s=rate * self.plan.samples_per_step if rate else None,
            loss=head.get("loss"),
            test_accuracy=evals[-1]["test_accuracy"] if evals else None,
            mean_return=_finite_or_none(head.get("charts/episodic_return_mean")),
            restarts=sum(s.restarts for s in self.agents.values()),
            faults=len(self.faults),
            agents={n: agent_row(s, self.plan.agents[n].tick_every) for n, s in self.agents.items()},
            links=link_rows(self.agents),
            resumable=any((self.run_dir.path / "checkpoints").glob("*/manifest.json")),
            summary=None,
        )
        fields.update(end)  # the end's samples/s and summary replace the live ones
        self.board.write(self.phase, **fields)

    def run(self) -> dict:
        """Run the plan; raises `RunFailed` or `Interrupted` after cleaning up."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._publish()  # status.json from the start: `synthgrad status` finds this run
            self._launch()
            try:
                self._train()
            except Interrupted:
                if self.training:
                    self._end_training()
                    self._last_checkpoint()
                raise
            except RunFailed:
                if self.training:
                    self._end_training()
                raise
        finally:
            self._stop()
            self.checkpoints.remove_incomplete()  # abandoned rounds: every agent has stopped
            self.router.close(0)
            if self.auth is not None:  # its thread uses sockets of the context: stop it first
                self.auth.stop()
            self.zctx.term()
            self.run_dir.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.summary()

    def summary(self) -> dict:
        wall = self.timings.get("wall_s", 0.0)
        steps = self.agents[self.plan.source].steps if self.plan.source in self.agents else 0
        finals = [e for e in self.evaluations if e.get("final")]
        metrics = {k: v for k, v in (finals[-1] if finals else {}).items() if k.startswith(("test_", "charts/"))}
        return {
            "run_dir": str(self.run_dir.path),
            "run_id": self.run_id,
            "steps": steps,
            "wall_s": wall,
            "samples_per_s": (steps - self.resumed_steps) * self.plan.samples_per_step / wall if wall else 0.0,
            "metrics": metrics,
            "evaluations": self.evaluations,
            "timings": self.timings,
            "control_rejected": dict(self.rejected),
            "agents": {n: s.summary() for n, s in self.agents.items()},
            "faults": self.faults,
            "restarts": sum(s.restarts for s in self.agents.values()),
            "checkpoints": [{"id": m["id"], "step": m["step"]} for m in self.checkpoints.completed],
            "resumed_from": None if self.resume is None else {"id": self.resume["id"], "step": self.resume["step"]},
        }


def _finite_or_none(value):
    """A number for status.json, or None (not reported yet, or NaN before an episode ended)."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None

