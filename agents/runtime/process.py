"""One agent process: the event loop between ZeroMQ sockets and the agent's `AgentCore`.

Sockets (docs/PROTOCOL.md): the agent binds two PULL sockets, `fwd` (activations, context,
synthetic inputs) and `bwd` (gradient targets, synthetic gradients), connects one PUSH per
peer and plane, and a DEALER named after itself to the orchestrator's ROUTER.  The backward
and control sockets are always drained; the forward socket is read only when the core is
ready for its next step and everything it produced has been handed to ZeroMQ.  So a locked
(backprop) link stops reading until its gradient arrives, high-water marks push back to the
source, and no cycle of full queues can deadlock: gradients always have somewhere to go.

On tcp (a `keys_dir` given) every socket uses CURVE (docs/security.md): the agent's own key
pair from the key directory serves its PULLs and signs its PUSHes and DEALER; its ZAP
handler admits only the agents linked to it (their public keys come in WELCOME), and a data
message whose connection's key is not the key of the agent its `src` names is rejected as
`sender`.  The PULLs bind ephemeral ports, reported in the ready heartbeat; START brings
every agent's endpoints.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import zmq

from ...protocol import (
    CurveKeys,
    Kind,
    Message,
    ProtocolError,
    bind_pull,
    connect_dealer,
    connect_push,
    new_context,
    recv_message,
    send_message,
    tcp_endpoint,
)
from ...protocol.curve import (
    AllowList,
    load_public,
    load_secret,
    public_file,
    secret_file,
    start_authenticator,
)
from ...protocol.lifecycle import Lifecycle
from ...protocol.plan import AgentPlan
from ...protocol.transport import recv_message_with_user
from .admission import Admission, RejectLog
from .build import build_core
from .checkpoint import load_verified, save_atomic
from .core import BACKWARD, CONTROL, FORWARD, AgentCore
from .nonfinite import NonFiniteError
from .outbound import Outbound
from .parent_watch import ParentWatch
from .trace import NULL_TRACER, WAIT_MIN_NS, Tracer, clock_offset, flow_key

HEARTBEAT_S = 1.0  # until WELCOME brings run.heartbeat_s
DRAIN_LIMIT = 1000  # messages read from one socket per turn of the loop
ORPHAN_S = 20.0  # no word from the orchestrator for this long: it is gone, so exit
PR_SET_PDEATHSIG = 1

log = logging.getLogger("synthgrad.agent")


def _log_to_stderr() -> None:
    """The agent's log lines go to its stderr (its log file), as bare messages: each line
    already names the agent, and the log files keep the format they always had."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _isolate(log_path: str | None) -> None:
    """Per-process set-up: one torch thread, logs to a file, die with the parent."""
    torch.set_num_threads(1)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    _log_to_stderr()
    # Ctrl-C reaches the whole process group; the orchestrator alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:  # If our parent (the fork server) dies, so do we: no process outlives its run.
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass


class AgentProcess:
    """Registers with the orchestrator, builds the agent from its welcome, runs its loop."""

    def __init__(self, name: str, control_endpoint: str, keys_dir: str | None = None) -> None:
        """Connect to the orchestrator (with CURVE when `keys_dir` is given).

        Raises:
            KeyFileError: a key file is missing or not private (protocol/curve.py).
        """
        self.name = name
        self.zctx = new_context()
        self.own_keys: CurveKeys | None = None  # tcp: this agent's pair
        self.peer_keys: dict[str, str] | None = None  # tcp: Z85 public keys by agent, from WELCOME
        self.auth = None
        control_keys = None
        if keys_dir is not None:
            public, secret = load_secret(secret_file(keys_dir, name))
            self.own_keys = CurveKeys(public, secret)
            control_keys = CurveKeys(public, secret, load_public(public_file(keys_dir)))
            # Empty until WELCOME names the peers; before that no peer knows our endpoints.
            self.allow = AllowList(logger=log)
            self.auth = start_authenticator(self.zctx, self.allow)
        self.control = connect_dealer(self.zctx, control_endpoint, identity=name, curve=control_keys)
        self.core: AgentCore | None = None
        self.run_id = ""
        self.state = Lifecycle.SPAWNED
        self.out: Outbound | None = None  # the data planes' sends, once built
        self.last_heard = time.monotonic()
        self.reject_log = RejectLog(log, name)
        self.heartbeat_s = HEARTBEAT_S
        # Faults (docs/fault-tolerance.md): each peer's incarnation (a newer one means it
        # restarted: waits on it are given up); which peers are down is `self.out.down`.
        self.incarnations: dict[str, int] = {}
        self.wanted: tuple[int, int, str] | None = None  # checkpoint (id, step, folder) to write
        self.watch: ParentWatch | None = None  # set by agent_main
        # `--trace`: this clock's offset to the orchestrator's and the round trip it was
        # measured over (the ready heartbeat and START, trace.clock_offset); 0 until START.
        self.clock_offset_ns, self.round_trip_ns = 0, 0
        self.messages_in = 0  # data messages read (the status table's messages in per s)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    @property
    def tracer(self):
        """The core's tracer (`NULL_TRACER` until the core is built, or without `--trace`)."""
        return self.core.tracer if self.core is not None else NULL_TRACER

    def _on_sigterm(self, *_args) -> None:
        self.state = self.state.advance(Lifecycle.STOPPING)

    # ----------------------------------------------------------------- control plane
    def _send_control(self, kind: Kind, meta: dict | None = None) -> None:
        step = self.core.steps if self.core else 0
        send_message(self.control, Message(kind=kind, src=self.name, run=self.run_id, step=step, meta=meta or {}))

    def _await(self, kind: Kind, timeout_s: float) -> Message:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.state is Lifecycle.STOPPING:  # SIGTERM (or the orchestrator died) while waiting
                raise SystemExit(0)
            msg = recv_message(self.control, timeout_ms=200)
            if msg is None:
                continue
            if msg.kind == Kind.STOP:
                raise SystemExit(0)
            if msg.kind == Kind.ERROR:  # refused (e.g. a name the run does not have): say why, leave
                log.error("%s: the orchestrator refused this agent: %s", self.name, msg.meta.get("error", ""))
                raise SystemExit(2)
            if msg.kind == kind:
                self.last_heard = time.monotonic()
                return msg
        raise TimeoutError(f"{self.name}: no {kind.name} from the orchestrator within {timeout_s:.0f} s")

    def _on_control(self, msg: Message) -> None:
        self.last_heard = time.monotonic()
        if msg.kind == Kind.STOP:
            self.state = self.state.advance(Lifecycle.STOPPING)
        elif msg.kind == Kind.HEARTBEAT:
            self._on_peers(msg.meta)
        elif msg.kind == Kind.CHECKPOINT:
            self._on_checkpoint(msg.meta)

    # ----------------------------------------------------------------- faults
    def _on_peers(self, meta: dict) -> None:
        """The orchestrator's heartbeat: which peers are down, each one's incarnation."""
        down, born = meta.get("down"), meta.get("incarnations")
        if self.out is None:
            return
        if isinstance(down, list):
            now_down = {peer for peer in down if isinstance(peer, str) and peer != self.name}
            for peer in sorted(now_down - self.out.down):
                log.warning("%s: %s is down; what this agent sends it is %s", self.name, peer,
                            "held" if self.core.is_source else "dropped and counted")
                self.out.went_down(peer)
        if isinstance(born, dict):
            for peer, n in born.items():
                if isinstance(n, int) and n > self.incarnations.get(peer, 0):
                    self.incarnations[peer] = n
                    if peer != self.name:
                        self.out.came_back(peer)
                        given_up = self.core.abandon(peer)
                        if given_up:
                            log.warning("%s: %s restarted; gave up %d gradient waits on it", self.name, peer, given_up)
                        self._queue_outbox()

    def _on_checkpoint(self, meta: dict) -> None:
        """CHECKPOINT {id, dir[, step]}: the source saves now; every other agent once its
        clock reaches `step` (the source's), so the set is one consistent cut of the run."""
        ident, folder, step = meta.get("id"), meta.get("dir"), meta.get("step")
        if not isinstance(ident, int) or not isinstance(folder, str) or not (step is None or isinstance(step, int)):
            self.reject_log("checkpoint", f"CHECKPOINT with meta {meta!r}")
            return
        self.wanted = (ident, -1 if step is None else step, folder)
        self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        if self.wanted is None or self.core.clock < self.wanted[1]:
            return
        ident, _, folder = self.wanted
        self.wanted = None
        t0 = time.monotonic()
        path = Path(folder) / f"{self.name}.pt"
        try:
            sha = save_atomic(path, self.core.state_dict(), make_folder=False)
        except OSError as err:  # e.g. the round was abandoned and its folder removed
            log.warning("%s: checkpoint %d not written (%s); training goes on", self.name, ident, err)
            return
        meta = {"id": ident, "step": self.core.clock, "steps": self.core.steps, "file": str(path), "sha256": sha, "save_s": time.monotonic() - t0}
        self._send_control(Kind.CHECKPOINT, meta)

    # ----------------------------------------------------------------- set-up
    def register(self, timeout_s: float = 60.0) -> None:
        """HELLO, wait for WELCOME, build the agent, bind and connect, report ready."""
        self._send_control(Kind.HELLO, {"pid": os.getpid(), "host": socket.gethostname()})
        self.state = self.state.advance(Lifecycle.REGISTERED)
        welcome = self._await(Kind.WELCOME, timeout_s)
        self.run_id = welcome.run
        plan, self.endpoints = AgentPlan.from_wire(welcome.meta["spec"]), welcome.meta.get("endpoints", {})
        self.run_dir = Path(welcome.meta["run_dir"])
        self.hwm = plan.run.hwm
        if plan.cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {plan.cpu})  # `synthgrad run --pin`: follow the placement
        self.core = build_core(plan)
        if plan.run.trace:
            self.core.tracer = Tracer()
        self.out = Outbound(self._connect, self.core.is_source)
        self.heartbeat_s = plan.run.heartbeat_s
        self.incarnations = {str(n): int(i) for n, i in welcome.meta.get("incarnations", {}).items()}
        restore = welcome.meta.get("restore")
        if restore:  # a restart, or `synthgrad run --resume`: continue from the checkpoint
            self.core.load_state_dict(load_verified(Path(restore["file"]), restore["sha256"]))
            log.info("%s: restored %s (step %d)", self.name, restore["file"], self.core.clock)
        elif welcome.meta.get("rejoin"):  # a restart before any checkpoint: fresh, peers ahead
            self.core.rejoin()
        self.admission = Admission(plan)
        if self.own_keys is not None:
            # Only the agents linked to this one may connect to its data sockets.
            self.peer_keys = {str(n): str(k) for n, k in welcome.meta["keys"].items()}
            linked = {link.src for link in plan.in_links} | {link.dst for link in plan.out_links}
            self.allow.update({n: k for n, k in self.peer_keys.items() if n in linked})
            fwd_at = bwd_at = tcp_endpoint(plan.run.bind)  # ephemeral ports, reported below
            if "bind" in welcome.meta:  # a restart: the ports its peers' sockets still dial
                fwd_at, bwd_at = welcome.meta["bind"][FORWARD], welcome.meta["bind"][BACKWARD]
        else:
            fwd_at, bwd_at = self.endpoints[self.name][FORWARD], self.endpoints[self.name][BACKWARD]
        self.fwd, fwd_bound = bind_pull(self.zctx, fwd_at, hwm=self.hwm, curve=self.own_keys)
        self.bwd, bwd_bound = bind_pull(self.zctx, bwd_at, hwm=0, curve=self.own_keys)  # gradients are always drained
        if self.watch is not None:  # what to unlink should the orchestrator die
            self.watch.own = (fwd_bound, bwd_bound)
            self.watch.run_dir, self.watch.endpoints = self.run_dir, dict(self.endpoints)
        self.state = self.state.advance(Lifecycle.READY)
        ready = {"state": Lifecycle.READY.value, "pid": os.getpid()}
        if self.core.is_source:
            ready["budget"] = self.core.budget
        if self.own_keys is not None:
            ready["endpoints"] = {FORWARD: fwd_bound, BACKWARD: bwd_bound}
        ready["clock_ns"] = sent_ns = time.monotonic_ns()
        self._send_control(Kind.HEARTBEAT, ready)
        # The orchestrator waits run.register_timeout_s for every agent to be ready.
        start = self._await(Kind.START, max(timeout_s, plan.run.register_timeout_s))
        self._sync_clock(sent_ns, time.monotonic_ns(), start.meta.get("clock"))
        self.endpoints = start.meta.get("endpoints", self.endpoints)  # tcp: every agent's, bound

    def _sync_clock(self, sent_ns: int, received_ns: int, clock) -> None:
        """This clock's offset to the orchestrator's, from the ready/START round trip (the
        orchestrator is idle then and reads the ready heartbeat at once: its receive time is
        exact, so the estimate is good to half the round trip; trace.clock_offset)."""
        if isinstance(clock, dict) and all(isinstance(clock.get(k), int) for k in ("received_ns", "sent_ns")):
            self.clock_offset_ns, self.round_trip_ns = clock_offset(sent_ns, received_ns, clock["received_ns"], clock["sent_ns"])

    def _connect(self, dest: str, plane: str) -> zmq.Socket:
        """A PUSH to peer `dest`'s `plane` (Outbound makes one per peer and plane, lazily)."""
        hwm = self.hwm if plane == FORWARD else 0
        curve = None
        if self.own_keys is not None:  # the peer must prove it holds the key WELCOME gave
            curve = CurveKeys(self.own_keys.public, self.own_keys.secret, self.peer_keys[dest].encode())
        return connect_push(self.zctx, self.endpoints[dest][plane], hwm=hwm, curve=curve)

    # ----------------------------------------------------------------- the loop
    def _queue_outbox(self) -> None:
        trace = self.core.tracer.enabled
        for dest, plane, msg in self.core.outbox:
            msg.run = self.run_id
            if dest == CONTROL:
                send_message(self.control, msg)
            else:
                if trace:
                    self.core.tracer.flow(flow_key(self.name, dest, msg.kind.name, msg.port, msg.step), out=True)
                self.out.put(dest, plane, msg)
        self.core.outbox.clear()

    def _flush(self) -> bool:
        """Hand queued data messages to ZeroMQ (a `send` span when tracing and any went)."""
        if not self.core.tracer.enabled:
            return self.out.flush()
        start, sent = time.monotonic_ns(), self.out.sent
        clear = self.out.flush()
        if self.out.sent > sent:
            self.core.tracer.add("send", start, time.monotonic_ns())
        return clear

    def _reject(self, reason: str, detail: str) -> None:
        self.core.reject(reason)
        self.reject_log(reason, detail)

    def _receive(self, sock: zmq.Socket, check=None) -> Message | None | bool:
        """The next message that fits, None when there is none, False for one rejected.

        `check(msg)` gives the reason a decoded message does not fit this agent's plan
        (agents/runtime/admission.py); the run id is checked for every socket, and on tcp
        that a data message's `src` is the agent whose key its connection authenticated."""
        authenticated = self.peer_keys is not None and sock is not self.control
        user = None
        try:
            if authenticated:
                got = recv_message_with_user(sock, timeout_ms=0)
                user, msg = got if got is not None else (None, None)
            else:
                msg = recv_message(sock, timeout_ms=0)
        except ProtocolError as err:
            self._reject("decode", str(err))
            return False
        if msg is None:
            return None
        if msg.run != self.run_id:
            self._reject("run", f"{msg.kind.name} from {msg.src!r} for run {msg.run!r}")
            return False
        if authenticated and self.peer_keys.get(msg.src) != user:
            self._reject("sender", f"{msg.kind.name} claims to come from {msg.src!r} but its connection holds key {user!r}")
            return False
        reason = check(msg) if check is not None else None
        if reason is not None:
            shapes = {name: (str(a.dtype), a.shape) for name, a in msg.tensors.items()}
            self._reject(reason, f"{msg.kind.name} from {msg.src!r} to port {msg.port!r}, step {msg.step}, tensors {shapes}")
            return False
        if sock is not self.control:
            self.messages_in += 1
            if self.core.tracer.enabled:
                self.core.tracer.flow(flow_key(msg.src, self.name, msg.kind.name, msg.port, msg.step), out=False)
        return msg

    def _drain(self, sock: zmq.Socket, handle, check=None) -> None:
        # At most DRAIN_LIMIT a turn: a peer flooding `bwd` must not keep the loop from the
        # control socket (the agent would think the orchestrator gone) or from stepping.
        for _ in range(DRAIN_LIMIT):
            msg = self._receive(sock, check)
            if msg is None:
                return
            if msg is not False:
                handle(msg)
                self._queue_outbox()

    def loop(self) -> None:
        """Step until STOP (or the orchestrator vanishes), reporting metrics on a timer."""
        core = self.core
        every = core.run.metrics_every_s
        next_beat = next_metrics = time.monotonic()
        # From the steps it starts with: a restored agent's first rate is not its whole past.
        last_steps, last_time = core.steps, time.monotonic()
        last_in, last_out = self.messages_in, self.out.sent
        first_step = core.steps  # its first step completed here is reported at once (timings)
        trace = self.tracer
        self.state = self.state.advance(Lifecycle.RUNNING)
        while self.state is Lifecycle.RUNNING:
            clear = self._flush()
            want_forward = clear and core.ready and not core.finished
            busy = want_forward and core.is_source
            # An env agent (a source closing a loop) reads its actions whenever they come.
            loop = getattr(core, "closes_loop", False)
            reads = loop or (want_forward and not core.is_source)
            readers = [self.control, self.bwd] + ([self.fwd] if reads else [])
            writers = self.out.writers()
            if trace.enabled and not busy:
                start = time.monotonic_ns()
                readable, writable, _ = zmq.select(readers, writers, [], 0.25)
                if time.monotonic_ns() - start >= WAIT_MIN_NS:
                    trace.add("wait", start, time.monotonic_ns())
            else:
                readable, writable, _ = zmq.select(readers, writers, [], 0 if busy else 0.25)
            if self.control in readable:
                self._drain(self.control, self._on_control)
            if self.bwd in readable:
                self._drain(self.bwd, core.on_backward, self.admission.backward)
            if busy and self._flush():
                core.produce()
                self._queue_outbox()
            elif self.fwd in readable and (core.ready or loop):
                # One forward message per turn: the step it completes may lock the agent.
                msg = self._receive(self.fwd, self.admission.forward)
                if msg:
                    core.on_forward(msg)
                    self._queue_outbox()
            self._checkpoint_if_due()
            now = time.monotonic()
            if first_step is not None and core.steps > first_step:
                first_step, next_metrics = None, now
            if now >= next_beat:
                self._send_control(Kind.HEARTBEAT, {"state": Lifecycle.RUNNING.value})
                next_beat = now + self.heartbeat_s
                if now - self.last_heard > ORPHAN_S:
                    log.warning("%s: orchestrator silent for %.0f s; exiting", self.name, ORPHAN_S)
                    return
            if now >= next_metrics:
                metrics = core.take_metrics()
                elapsed = max(now - last_time, 1e-9)
                metrics["steps_per_s"] = (core.steps - last_steps) / elapsed
                metrics["messages_in_per_s"] = (self.messages_in - last_in) / elapsed
                metrics["messages_out_per_s"] = (self.out.sent - last_out) / elapsed
                metrics["clock"] = max(core.clock, 0)  # the newest step (tick block) acted on
                last_in, last_out = self.messages_in, self.out.sent
                # Drops to down peers and queue depths (the soak benchmark watches them).
                metrics.update(self.out.metrics())
                metrics["parked"] = len(getattr(core, "parked", ()))
                last_steps, last_time = core.steps, now
                self._send_control(Kind.METRICS, metrics)
                next_metrics = now + every

    def _save(self, filename: str) -> None:
        folder = self.run_dir / "agents" / self.name
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.core.state_dict(), folder / filename)

    def finish(self) -> None:
        """Save the final state and send the last metrics (with the steps done); under
        `--trace`, write this agent's events to RUN_DIR/trace/ (orchestrator/trace.py)."""
        self._save("final.pt")
        self.write_trace()
        metrics = self.core.take_metrics()
        metrics.update(self.out.metrics())
        metrics["clock"] = max(self.core.clock, 0)
        self._send_control(Kind.METRICS, {**metrics, "final_report": True})

    def write_trace(self) -> None:
        """Under `--trace`: this agent's events to RUN_DIR/trace/ (orchestrator/trace.py
        merges them), at the end and after a failure too (its track shows what led to it)."""
        if self.tracer.enabled:
            try:
                self.tracer.write(self.run_dir / "trace", self.name, self.clock_offset_ns, self.round_trip_ns)
            except OSError as err:  # e.g. a full disk: the run's results matter more
                log.warning("%s: trace not written (%s)", self.name, err)
            self.core.tracer = NULL_TRACER  # written once

    def report_error(self, text: str) -> None:
        try:
            self._send_control(Kind.ERROR, {"error": text, "agent": self.name})
        except Exception:  # the control socket itself may be what failed
            pass

    def close(self) -> None:
        if self.auth is not None:  # its thread uses sockets of the context: stop it first
            self.auth.stop()
        self.zctx.destroy(linger=0)


def agent_main(
    name: str, control_endpoint: str, log_path: str | None = None, keys_dir: str | None = None, parent_pid: int | None = None
) -> None:
    """Entry point of an agent process (what the launcher starts); `keys_dir` on tcp;
    `parent_pid`: the orchestrator's pid, watched so that the agent never outlives it."""
    _isolate(log_path)
    watch = ParentWatch(name, parent_pid, control_endpoint) if parent_pid else None
    process = AgentProcess(name, control_endpoint, keys_dir)
    process.watch = watch
    code = 0
    try:
        process.register()
        process.loop()
        process.finish()
        process.state = Lifecycle.STOPPED
    except SystemExit as stop:
        code = int(stop.code or 0)
        process.state = Lifecycle.STOPPED if code == 0 else Lifecycle.FAILED
    except NonFiniteError as err:  # run.on_nonfinite = "stop": a finding, not a bug to trace
        process.state = Lifecycle.FAILED
        log.error("%s", err)
        process.report_error(str(err))
        process.write_trace()
        code = 1
    except BaseException:
        process.state = Lifecycle.FAILED
        text = traceback.format_exc()
        log.error("%s", text)
        process.report_error(text)
        process.write_trace()
        code = 1
    finally:
        # Give the last control messages a moment to leave before the context goes.
        time.sleep(0.05)
        process.close()
        if watch is not None and watch.gone.is_set():
            watch.clean_up()  # the orchestrator cannot: the last one out does
    # A normal exit through multiprocessing runs its finalisers (semaphores that zarr's
    # codecs create are unlinked), which os._exit would skip.
    sys.exit(code)
