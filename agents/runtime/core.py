"""One agent's step logic as a transport-free state machine.

`AgentCore` takes decoded messages in and leaves messages to send in its `outbox`; it knows
nothing of sockets.  The process runtime (`runtime.py`) feeds it from ZeroMQ and the
single-process runner (`local.py`) from a queue, so one implementation of DNI serves both,
and the single-process baselines measure exactly the same arithmetic.

A training step of a module agent (DESIGN.md section 4): join the step's inputs, forward,
send the outputs downstream at once (the next agent starts while this one finishes), then
take gradients for the outputs: a synthetic gradient from the link's SG model (`dni`), or
park the step until the true gradient arrives (`backprop`, or an SG hosted by the receiver).
With every output's gradient in hand: backward, optimiser step, and the input gradient goes
upstream as that link's gradient target.

Ticks (`tick_every = T`, docs/ARCHITECTURE.md "Ticks and the two-timescale system"): step
numbers are the source's clock.  An agent with tick T acts once per block of T steps, when
the block's last step ``kT + T - 1`` is complete, and its messages carry that step.  A port
fed by a sender of tick U (U divides T) takes T / U messages per block; more than one are
stacked along a new dimension 1 in step order.  The input gradient of a stacked port is
split back along that dimension and each slice goes upstream under the step of the message
it belongs to, so the sender's caches and parked steps match it exactly.  A sender whose
out-link waits for true gradients from a slower receiver may run ahead by as many of its
own ticks as the receiver's block holds, and then updates once for all of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...protocol.kinds import Kind
from ...protocol.message import Message
from ..base import Agent, Source
from .interfaces import ReceiverInterface, SenderInterface
from .torchwire import to_array, to_tensor

CONTROL = "@control"  # outbox destination meaning "the orchestrator"
FORWARD, BACKWARD = "fwd", "bwd"  # the two data planes every agent binds

Outgoing = tuple[str, str, Message]


def make_optimizer(params, run: dict, lr: float | None) -> torch.optim.Optimizer:
    """The optimiser a run's settings name (`run.optimizer`, `run.lr` or the agent's `lr`)."""
    rate = lr or run["lr"]
    if run["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=rate)
    return torch.optim.Adam(params, lr=rate)


def evaluation_summary(sums: dict[str, float]) -> dict[str, float]:
    """Accuracy and mean loss from the sums a terminal kind's `evaluate` returns."""
    total = max(sums.get("total", 0.0), 1.0)
    return {"test_accuracy": sums.get("correct", 0.0) / total, "test_loss": sums.get("loss_sum", 0.0) / total}


@dataclass
class _Parked:
    """A training step waiting for the true gradient of one or more outputs."""

    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    context: dict[str, torch.Tensor]
    loss: torch.Tensor | None
    grads: dict[str, torch.Tensor]
    waiting: set[int]


@dataclass
class _Running:
    """Sums reported and reset at each metrics flush."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0) + 1

    def take(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return out


class AgentCore:
    """Runs one agent (module kind or source) from its spec; see the module docstring."""

    def __init__(self, agent: Agent | Source, spec: dict[str, Any]) -> None:
        self.agent = agent
        self.spec = spec
        self.name = spec["name"]
        self.run = spec["run"]
        self.outbox: list[Outgoing] = []
        self.steps = 0  # training steps this agent has completed
        self.rejected = 0  # messages that matched no link or step (counted, never fatal)
        self.running = _Running()
        self.finished = False
        self.in_links = {link["dst_port"]: link for link in spec["in_links"]}
        self.tick = int(spec.get("tick_every", 1))
        # Messages per block on each input port: this agent's tick over its sender's.
        self.per_block = {port: self.tick // int(link.get("src_tick", 1)) for port, link in self.in_links.items()}
        self.out_links = spec["out_links"]
        self._out_by_key = {(link["dst"], link["src_port"]): link for link in self.out_links}
        torch.manual_seed(spec["seed"])
        self._rng = random.Random(spec["seed"])
        if isinstance(agent, Source):
            self._init_source(agent)
        else:
            self._init_module(agent)

    # ----------------------------------------------------------------- set-up
    def _init_source(self, source: Source) -> None:
        self.is_source = True
        batch = self.run["batch_size"]
        source.open(batch, self.run["seed"])
        self.budget = self.run["steps"] or self.run["epochs"] * source.steps_per_epoch(batch)
        self._plan = self._source_plan()
        self._next_step = 0

    def _init_module(self, agent: Agent) -> None:
        self.is_source = False
        in_shapes = {port: tuple(shape) for port, shape in self.spec["in_shapes"].items()}
        module, out_shapes = agent.build(in_shapes)
        agent.module = module
        module.train()
        lr = agent.params.get("lr")
        self.optimizer = make_optimizer(module.parameters(), self.run, lr)
        self._base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        classes = self.spec["num_classes"]
        rate = lr or self.run["lr"]
        self.senders = {
            link["index"]: SenderInterface(link, tuple(out_shapes[link["src_port"]]), classes, rate)
            for link in self.out_links
            if not link["context"]
        }
        self.receivers = {
            link["index"]: ReceiverInterface(link, in_shapes[link["dst_port"]], classes, rate)
            for link in self.in_links.values()
            if not link["context"]
        }
        self.required = set(self.in_links) | set(self.spec.get("context_ports", []))
        self.pending: dict[int, dict[str, dict[int, tuple[np.ndarray, dict]]]] = {}
        self.in_steps: dict[int, dict[str, list[int]]] = {}  # block step -> each port's message steps
        self.parked: dict[int, _Parked] = {}
        # A sender waiting for true gradients from a slower receiver runs ahead until the
        # receiver's block is complete (its gradient comes only then).
        self.park_limit = max(
            [int(link.get("dst_tick", self.tick)) // self.tick for link in self.out_links if not link["context"]] + [1]
        )
        self.eval_sums: dict[str, float] = {}
        # Sparse updates: plan.py resolves `p_update` (agent parameter or link option).
        p_update = self.spec.get("p_update", agent.params.get("p_update"))
        self.p_update = 1.0 if p_update is None else float(p_update)
        self.updates = 0  # optimiser steps taken (fewer than `steps` when p_update < 1)
        self.unlocked = None
        if any(link["mode"] == "unlocked" and not link["context"] for link in self.in_links.values()):
            from .synthetic_input import UnlockedSchedule  # imports this module

            self.unlocked = UnlockedSchedule(self, rate)

    @property
    def ready(self) -> bool:
        """Whether the agent may take its next forward input (False while a step is locked)."""
        return self.is_source or len(self.parked) < self.park_limit

    def send(self, dest: str, plane: str, kind: Kind, port: str, step: int, tensors, meta=None) -> None:
        """Queue a data message for agent `dest` on `plane` (FORWARD or BACKWARD)."""
        msg = Message(kind=kind, src=self.name, port=port, step=step, tensors=tensors, meta=meta or {})
        self.outbox.append((dest, plane, msg))

    def report(self, kind: Kind, meta: dict) -> None:
        """Queue a control message (metrics, error) for the orchestrator."""
        self.outbox.append((CONTROL, "", Message(kind=kind, src=self.name, step=self.steps, meta=meta)))

    # ----------------------------------------------------------------- source
    def _source_plan(self):
        every = self.run["eval_every"]
        rounds = 0
        for done in range(1, self.budget + 1):
            yield "train", {}
            final = done == self.budget
            if final or (every and done % every == 0):
                batches = list(self.agent.eval_batches(self.run["eval_batch_size"]))
                for i, _ in enumerate(batches):
                    meta = {"eval": rounds, "last": i == len(batches) - 1, "final": final, "train_steps": done}
                    yield batches[i], meta
                rounds += 1

    def produce(self) -> bool:
        """Sources: emit the next batch; False once the budget (and final evaluation) is done."""
        item = next(self._plan, None)
        if item is None:
            self.finished = True
            return False
        batch, meta = item
        if batch == "train":
            batch = self.agent.train_batch()
            self.steps += 1
        step = self._next_step
        self._next_step += 1
        for link in self.out_links:
            kind = Kind.CTX if link["context"] else Kind.ACT
            self.send(link["dst"], FORWARD, kind, link["dst_port"], step, {"x": batch[link["src_port"]]}, meta)
        return True

    # ----------------------------------------------------------------- forward
    def on_forward(self, msg: Message) -> None:
        """An activation or context for one of this agent's input ports."""
        if msg.port not in self.required or "x" not in msg.tensors:
            self.rejected += 1
            return
        if self.unlocked is not None:
            self.unlocked.on_forward(msg)
            return
        block = msg.step - msg.step % self.tick + self.tick - 1  # the step this agent acts on
        ports = self.pending.setdefault(block, {})
        ports.setdefault(msg.port, {})[msg.step] = (msg.tensors["x"], msg.meta)
        if len(ports) == len(self.required) and all(len(ports[p]) == self.per_block.get(p, 1) for p in ports):
            del self.pending[block]
            self._run_step(block, self._join(block, ports))

    def _join(self, block: int, ports: dict[str, dict[int, tuple[np.ndarray, dict]]]) -> dict[str, tuple[np.ndarray, dict]]:
        """One (array, meta) per port: a lone message as is, several stacked on dim 1 by step."""
        joined, steps = {}, {}
        for port, by_step in ports.items():
            order = sorted(by_step)
            steps[port] = order
            if len(order) == 1:
                joined[port] = by_step[order[0]]
            else:
                joined[port] = (np.stack([by_step[s][0] for s in order], 1), by_step[order[-1]][1])
        self.in_steps[block] = steps
        return joined

    def context_of(self, inputs: dict[str, tuple[np.ndarray, dict]]) -> dict[str, torch.Tensor]:
        """The context tensors (labels, data) among a step's joined inputs."""
        return {p: to_tensor(a) for p, (a, _) in inputs.items() if p not in self.in_links or self.in_links[p]["context"]}

    def _run_step(self, step: int, inputs: dict[str, tuple[np.ndarray, dict]]) -> None:
        meta = next(iter(inputs.values()))[1]
        context = self.context_of(inputs)
        if "eval" in meta:
            self._eval_step(step, inputs, context, meta)
            return
        xs: dict[str, torch.Tensor] = {}
        for port, link in self.in_links.items():
            if link["context"]:
                continue
            x = to_tensor(inputs[port][0])
            if link["mode"] != "none" and not link["from_source"]:
                x.requires_grad_(True)
            xs[port] = x
        self.train_step(step, xs, context)

    def train_step(self, step, xs, context, synthetic=frozenset(), held=None) -> None:
        """Forward, gradients for the outputs, update (or park until true gradients arrive).

        `synthetic` names input ports fed by a synthetic-input model (mode `unlocked`): the
        outputs are then not sent (the real forward sends them later) and those inputs'
        gradients go into `held` instead of upstream.
        """
        labels = context.get("labels")
        for receiver in self.receivers.values():
            if receiver.hosted is not None:
                link = receiver.link
                grad = receiver.answer(xs[link["dst_port"]].detach(), labels)
                self._send_upstream(link, Kind.SYNTH_GRAD, step, grad)
        outputs = self.agent.forward(xs)
        if not synthetic:
            for link in self.out_links:
                self.send(link["dst"], FORWARD, Kind.ACT, link["dst_port"], step, {"x": to_array(outputs[link["src_port"]])})
        loss = None
        if self.agent.terminal:
            loss, batch_metrics = self.agent.loss(outputs, context)
            self.running.add("loss", loss.item())
            for key, value in batch_metrics.items():
                self.running.add(f"train_{key}", value)
        grads: dict[str, torch.Tensor] = {}
        waiting: set[int] = set()
        for index, sender in self.senders.items():
            port = sender.link["src_port"]
            g = None
            if sender.hosted is not None:
                # BP(lambda): the synthetic part now, weighted; the true part when it comes.
                g = sender.synthetic_gradient(step, outputs[port].detach(), labels)
                g = g if sender.lam == 0 else (None if sender.lam >= 1 else g * sender.synthetic_weight)
            if sender.waits:
                waiting.add(index)
            if g is not None:
                grads[port] = grads[port] + g if port in grads else g
        if waiting:
            self.parked[step] = _Parked(xs, outputs, context, loss, grads, waiting)
        else:
            self._update(step, xs, outputs, context, loss, grads, synthetic, held)

    def _send_upstream(self, link: dict, kind: Kind, step: int, grad: torch.Tensor) -> None:
        """Send an input gradient back; a stacked input's goes back slice by slice, each
        under the step of the message it belongs to."""
        steps = self.in_steps.get(step, {}).get(link["dst_port"], [step])
        if len(steps) == 1:
            self.send(link["src"], BACKWARD, kind, link["src_port"], steps[0], {"g": to_array(grad)})
        else:
            for i, s in enumerate(steps):
                self.send(link["src"], BACKWARD, kind, link["src_port"], s, {"g": to_array(grad[:, i])})

    def _decay_lr(self, step: int) -> None:
        """`run.lr_decay_at`: the agent's own rate times `lr_decay` per milestone passed.
        SG and synthetic-input models keep their rate, so they go on tracking their targets."""
        passed = sum(1 for milestone in self.run.get("lr_decay_at", ()) if step >= milestone)
        if passed:
            factor = self.run["lr_decay"] ** passed
            for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
                group["lr"] = base * factor

    def _update(self, step, xs, outputs, context, loss, grads, synthetic=frozenset(), held=None) -> None:
        self._apply([(step, xs, outputs, context, loss, grads)], synthetic, held)

    def _apply(self, items, synthetic=frozenset(), held=None) -> None:
        """One backward and at most one optimiser step for one or more steps' graphs, then
        each step's input gradients upstream (several only when a sender ran ahead)."""
        roots, root_grads = [], []
        for _, _, outputs, _, loss, grads in items:
            if loss is not None:
                roots.append(loss)
                root_grads.append(torch.ones_like(loss))
            for port, g in grads.items():
                if outputs[port].requires_grad:
                    roots.append(outputs[port])
                    root_grads.append(g.to(outputs[port].dtype))
        if roots:
            torch.autograd.backward(roots, root_grads)
            # Sparse updates (paper): after its forward, a layer updates only with probability p.
            # The draw comes from the agent's own seeded generator: reproducible, and
            # independent of every other agent's draws.
            if self.p_update >= 1.0 or (self.p_update > 0.0 and self._rng.random() < self.p_update):
                self._decay_lr(max(item[0] for item in items))
                self.optimizer.step()
                self.updates += 1
            self.optimizer.zero_grad(set_to_none=True)
        for step, xs, _, context, _, _ in items:
            labels = context.get("labels")
            for port, x in xs.items():
                link = self.in_links[port]
                receiver = self.receivers[link["index"]]
                grad = x.grad if x.grad is not None else torch.zeros_like(x)
                if port in synthetic:
                    held[port] = grad
                elif receiver.returns_gradient and not link["from_source"]:
                    self._send_upstream(link, Kind.GRAD, step, grad)
                elif receiver.hosted is not None:
                    receiver.hosted.learn(x.detach(), labels, grad)
            self.in_steps.pop(step, None)
            self.steps += 1

    def _eval_step(self, step, inputs, context, meta) -> None:
        xs = {p: to_tensor(inputs[p][0]) for p, link in self.in_links.items() if not link["context"]}
        module = self.agent.module
        module.eval()
        with torch.no_grad():
            outputs = self.agent.forward(xs)
            if self.agent.terminal:
                for key, value in self.agent.evaluate(outputs, context).items():
                    self.eval_sums[key] = self.eval_sums.get(key, 0.0) + value
        module.train()
        self.in_steps.pop(step, None)
        for link in self.out_links:
            self.send(link["dst"], FORWARD, Kind.ACT, link["dst_port"], step, {"x": to_array(outputs[link["src_port"]])}, meta)
        if self.agent.terminal and meta.get("last"):
            summary = evaluation_summary(self.eval_sums)
            self.eval_sums = {}
            self.report(Kind.METRICS, {"eval": meta["eval"], "final": meta["final"], "train_steps": meta["train_steps"], **summary})
            if meta["final"]:
                self.finished = True

    # ----------------------------------------------------------------- backward
    def on_backward(self, msg: Message) -> None:
        """A gradient target (GRAD) or a receiver's synthetic gradient (SYNTH_GRAD)."""
        link = self._out_by_key.get((msg.src, msg.port))
        if link is None or "g" not in msg.tensors or link["index"] not in self.senders:
            self.rejected += 1
            return
        sender = self.senders[link["index"]]
        g = to_tensor(msg.tensors["g"])
        if msg.kind == Kind.GRAD and sender.hosted is not None:
            trained = sender.on_target(msg.step, g)
            if sender.lam == 0:
                self.rejected += not trained
                return
            # BP(lambda): the same target is the true part of the gradient used (the parked
            # step goes on even if the SG cache had forgotten the step).
            g = g if sender.lam >= 1 else g * sender.lam
        parked = self.parked.get(msg.step)
        if parked is None or link["index"] not in parked.waiting:
            self.rejected += 1
            return
        port = link["src_port"]
        parked.grads[port] = parked.grads[port] + g if port in parked.grads else g
        parked.waiting.discard(link["index"])
        # Parked steps share the parameters their graphs were built with, so they are released
        # together, in step order, with one update (one step when no sender runs ahead).
        if all(not p.waiting for p in self.parked.values()):
            items = [(s, p.inputs, p.outputs, p.context, p.loss, p.grads) for s, p in sorted(self.parked.items())]
            self.parked.clear()
            self._apply(items)

    # ----------------------------------------------------------------- reporting
    def take_metrics(self) -> dict[str, float]:
        """Means since the last call (task loss, SG loss per link) and counters."""
        out: dict[str, float] = {"steps": self.steps, "rejected": self.rejected}
        out.update(self.running.take())
        if not self.is_source:
            out["updates"] = self.updates
            if self.unlocked is not None:
                out.update(self.unlocked.take_losses())
            for iface in (*self.senders.values(), *self.receivers.values()):
                if iface.hosted is not None:
                    loss = iface.hosted.take_loss()
                    if loss is not None:
                        out[f"sg_loss.{iface.link['src']}->{iface.link['dst']}"] = loss
        return out

    def state_dict(self) -> dict:
        """The agent's module and optimiser state, and its SG models, for checkpoints."""
        if self.is_source:
            return {"steps": self.steps}
        sgs = {
            str(i): iface.hosted.state()
            for i, iface in (*self.senders.items(), *self.receivers.items())
            if iface.hosted is not None
        }
        state = {
            "module": self.agent.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sg": sgs,
            "steps": self.steps,
        }
        if self.unlocked is not None:
            state["synthetic_inputs"] = self.unlocked.state()
        return state
