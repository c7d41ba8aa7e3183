"""The module agent's job: `ModuleStepper`, one agent's step logic (core.py has the base).

A training step of a module agent (docs/ARCHITECTURE.md, "One training step"): join the step's inputs, forward,
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
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...protocol.kinds import Kind
from ...protocol.message import Message
from ...protocol.plan import AgentPlan, LinkPlan
from ..base import Agent
from .checkpoint import rng_state, set_rng_state
from .core import BACKWARD, FORWARD, AgentCore, evaluation_summary, make_optimizer
from .interfaces import ReceiverInterface, SenderInterface
from .nonfinite import NonFiniteGuard
from .synthetic_input import UnlockedSchedule
from .torchwire import to_array, to_tensor

# Layers whose forward does not depend on train/eval mode.
MODE_FREE = (nn.Sequential, nn.Linear, nn.Tanh, nn.ReLU, nn.Identity, nn.Flatten)


@dataclass
class _Parked:
    """A training step waiting for the true gradient of one or more outputs."""

    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    context: dict[str, torch.Tensor]
    loss: torch.Tensor | None
    grads: dict[str, torch.Tensor]
    waiting: set[int]


class ModuleStepper(AgentCore):
    """Runs a module agent from its `AgentPlan`; see the module docstring.

    The public methods below are also what complete unlock's schedule
    (synthetic_input.py) drives: `run_step`, `train_step`, `context_of`, `send_forward`,
    `send_upstream`, and the attributes `in_links`, `required`, `receivers`.
    """

    def __init__(self, agent: Agent, plan: AgentPlan) -> None:
        super().__init__(agent, plan)
        torch.manual_seed(plan.seed)
        self._rng = random.Random(plan.seed)
        self.in_links: dict[str, LinkPlan] = {link.dst_port: link for link in plan.in_links}
        self.tick = plan.tick_every
        # Messages per block on each input port: this agent's tick over its sender's.
        self.per_block = {port: link.messages_per_block for port, link in self.in_links.items()}
        self._out_by_key = {(link.dst, link.src_port): link for link in self.out_links}
        module, out_shapes = agent.build(dict(plan.in_shapes))
        agent.module = module
        module.train()
        # Evaluation and acting switch the module to eval mode unless every part of it is
        # known not to read its mode: the switch walks every submodule, dearer than a small
        # forward (RL's acting steps).  Any other module may branch on `self.training` (the
        # rnn kind does), so it is switched; a kind's own module opts out with `mode_free`.
        self._modal = not all(isinstance(m, MODE_FREE) or getattr(m, "mode_free", False) for m in module.modules())
        lr = agent.params.get("lr")
        self.optimizer = make_optimizer(module.parameters(), self.run, lr)
        self._base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        classes = plan.num_classes
        rate = lr or self.run.lr
        # A conditioned SG takes class labels (`labels`, cDNI) or, from an env agent, its
        # rollout rows (`rollout`: the action one-hot, then the other columns as features).
        self.sg_context = "rollout" if "rollout" in plan.in_shapes else "labels"
        features = plan.in_shapes["rollout"][-1] - 1 if self.sg_context == "rollout" else 0
        self.senders = {
            link.index: SenderInterface(link, tuple(out_shapes[link.src_port]), classes, rate, features)
            for link in self.out_links
            if not link.context
        }
        self.receivers = {
            link.index: ReceiverInterface(link, plan.in_shapes[link.dst_port], classes, rate, features)
            for link in self.in_links.values()
            if not link.context
        }
        #: the ports a step needs before it runs (data and context)
        self.required = frozenset(self.in_links)
        #: an acting step (RL, meta "act") is forward only: it needs the data ports alone
        self.acting_ports = frozenset(p for p, link in self.in_links.items() if not link.context)
        # Acting steps complete before an earlier training step are held here until it has
        # run: the env's next action must come from a policy that took every update sent
        # before it (agents/runtime/env_driver.py).
        self.held_acting: dict[int, dict] = {}
        self._lr_frac = 1.0  # the env's learning-rate annealing factor (meta "lr_frac")
        self.pending: dict[int, dict[str, dict[int, tuple[np.ndarray, dict]]]] = {}
        self.in_steps: dict[int, dict[str, list[int]]] = {}  # block step -> each port's message steps
        self.parked: dict[int, _Parked] = {}
        # A sender waiting for true gradients from a slower receiver runs ahead until the
        # receiver's block is complete (its gradient comes only then).
        self.park_limit = max([link.dst_tick // self.tick for link in self.out_links if not link.context] + [1])
        self.eval_sums: dict[str, float] = {}
        self.eval_round = None  # the evaluation round eval_sums belong to
        self.last_block = -1  # the last block (step) this agent ran
        # After a restore, or when an upstream peer restarted, the steps its peers went on
        # without it are holes: the next complete step is taken whatever its number.
        self.rejoining = False
        self.waits_dropped: dict[str, int] = {}  # parked gradient waits given up, by peer
        self.incomplete = 0  # steps dropped with only some of their inputs (their peer was down)
        # Steps further ahead than this cannot be real: back-pressure keeps senders a few
        # messages ahead (run.hwm), so such a message is refused rather than held forever.
        self.step_window = 1024 * self.tick
        # Sparse updates: plan.py resolves `p_update` (agent parameter or link option).
        self.p_update = 1.0 if plan.p_update is None else float(plan.p_update)
        self.updates = 0  # optimiser steps taken (fewer than `steps` when p_update < 1)
        self.guard = NonFiniteGuard(self.name, self.run.on_nonfinite)
        self.unlocked = None
        if any(link.mode.has_synthetic_input and not link.context for link in self.in_links.values()):
            self.unlocked = UnlockedSchedule(self, rate)

    @property
    def ready(self) -> bool:
        """Whether the agent may take its next forward input (False while a step is locked)."""
        return len(self.parked) < self.park_limit

    # ----------------------------------------------------------------- forward
    def on_forward(self, msg: Message) -> None:
        """An activation or context for one of this agent's input ports."""
        if msg.port not in self.required or "x" not in msg.tensors:
            self.reject("port")
            return
        if self.unlocked is not None:
            self.unlocked.on_forward(msg)
            return
        block = msg.step - msg.step % self.tick + self.tick - 1  # the step this agent acts on
        # A step already done, or (unless rejoining: its peers went on) one too far ahead to be real.
        if block <= self.last_block or (not self.rejoining and block > self.last_block + self.step_window):
            self.reject("step")
            return
        ports = self.pending.setdefault(block, {})
        by_step = ports.setdefault(msg.port, {})
        if msg.step in by_step:
            self.reject("step")  # a second message for the same step and port
            return
        by_step[msg.step] = (msg.tensors["x"], msg.meta)
        needed = self.acting_ports if "act" in msg.meta else self.required
        if len(ports) == len(needed) and all(len(ports[p]) == self.per_block.get(p, 1) for p in ports):
            del self.pending[block]
            if len({array.shape[0] for by in ports.values() for array, _ in by.values()}) > 1:
                self.reject("shape")  # the ports disagree on the batch: the step cannot run
                return
            if "act" in msg.meta and self._hold_acting(block):
                self.held_acting[block] = ports
                return
            self.last_block = block
            self.rejoining = False
            for stale in [b for b in self.pending if b < block]:
                del self.pending[stale]  # a step some input never came for (a peer was down)
                self.incomplete += 1
            self.run_step(block, self._join(block, ports))
            self._release_acting()

    def _hold_acting(self, block: int) -> bool:
        """Whether the complete acting step `block` must wait for an earlier training step.

        Each sender's messages arrive in order, so once the acting step's data have come,
        an earlier step still missing data never gets them (they were lost with a restarted
        peer): it is dropped (`dropped.incomplete_step`).  An earlier step with all its data
        waits only for context from the env, which is on its way: the acting step waits."""
        for earlier in [b for b in self.pending if b < block]:
            if not self.acting_ports <= set(self.pending[earlier]):
                del self.pending[earlier]
                self.incomplete += 1
        return any(b < block for b in self.pending)

    def _release_acting(self, force: bool = False) -> None:
        """Run held acting steps whose earlier training steps have all run (all of them when
        `force`: a peer restarted, and what they waited for may be lost)."""
        while self.held_acting:
            block = min(self.held_acting)
            if not force and self._hold_acting(block):
                return
            for stale in [b for b in self.pending if b < block]:
                del self.pending[stale]
                self.incomplete += 1
            ports = self.held_acting.pop(block)
            self.last_block = max(self.last_block, block)
            self.run_step(block, self._join(block, ports))

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
        return {p: to_tensor(a) for p, (a, _) in inputs.items() if p not in self.in_links or self.in_links[p].context}

    def run_step(self, step: int, inputs: dict[str, tuple[np.ndarray, dict]]) -> None:
        """Run the step (training or, by its meta, evaluation or acting) whose inputs are all here."""
        meta = {k: v for _, m in inputs.values() for k, v in m.items()}
        context = self.context_of(inputs)
        if "eval" in meta or "act" in meta:
            self._eval_step(step, inputs, context, meta)
            return
        self._lr_frac = float(meta.get("lr_frac", 1.0))
        xs: dict[str, torch.Tensor] = {}
        for port, link in self.in_links.items():
            if link.context:
                continue
            x = to_tensor(inputs[port][0])
            if link.mode.carries_gradient and not link.from_source:
                x.requires_grad_(True)
            xs[port] = x
        self.train_step(step, xs, context)

    def train_step(self, step, xs, context, synthetic=frozenset(), held=None) -> None:
        """Forward, gradients for the outputs, update (or park until true gradients arrive).

        `synthetic` names input ports fed by a synthetic-input model (mode `unlocked`): the
        outputs are then not sent (the real forward sends them later) and those inputs'
        gradients go into `held` instead of upstream.
        """
        labels = context.get(self.sg_context)
        trace = self.tracer
        for receiver in self.receivers.values():
            if receiver.hosted is not None:
                link = receiver.link
                with trace.span("sg_predict", step):
                    grad = receiver.answer(xs[link.dst_port].detach(), labels, step)
                grad = self.guard.check(grad, step, "synthetic_gradient", link.label)
                self.send_upstream(link, Kind.SYNTH_GRAD, step, grad)
        with trace.span("forward", step):
            outputs = self.agent.forward(xs)
        for port, out in outputs.items():
            value = out.detach()
            checked = self.guard.check(value, step, "activation", f"port {port}")
            if checked is not value:
                outputs[port] = checked  # skip: the guard's zeros, cut from the graph
        if not synthetic:
            self.send_forward(step, outputs)
        loss = None
        if self.agent.terminal:
            with trace.span("loss", step):
                loss, batch_metrics = self.agent.loss(outputs, context)
            value = loss.detach()
            if self.guard.check(value, step, "loss", "task loss") is not value:
                loss = None  # skip: this step's loss adds no gradient
            else:
                self.running.add("loss", loss.item())
            for key, value in batch_metrics.items():
                # CleanRL-style names ("losses/approx_kl") as they are; others as train_KEY.
                self.running.add(key if "/" in key else f"train_{key}", value)
        grads: dict[str, torch.Tensor] = {}
        waiting: set[int] = set()
        for index, sender in self.senders.items():
            port = sender.link.src_port
            g = None
            if sender.hosted is not None:
                # BP(lambda): the synthetic part now, weighted; the true part when it comes.
                with trace.span("sg_predict", step):
                    g = sender.synthetic_gradient(step, outputs[port].detach(), labels)
                if g is not None:
                    g = self.guard.check(g, step, "synthetic_gradient", sender.link.label)
            if sender.waits:
                waiting.add(index)
            if g is not None:
                grads[port] = grads[port] + g if port in grads else g
        if waiting:
            self.parked[step] = _Parked(xs, outputs, context, loss, grads, waiting)
        else:
            self._update(step, xs, outputs, context, loss, grads, synthetic, held)

    def send_forward(self, step: int, outputs: dict[str, torch.Tensor], meta: dict | None = None) -> None:
        """Send each output port's tensor down every link out of that port; a feedback link
        (into an env agent) carries acting steps' answers only."""
        acting = meta is not None and "act" in meta
        for link in self.out_links:
            if link.feedback and not acting:
                continue
            self.send(link.dst, FORWARD, Kind.ACT, link.dst_port, step, {"x": to_array(outputs[link.src_port])}, meta)

    def send_upstream(self, link: LinkPlan, kind: Kind, step: int, grad: torch.Tensor) -> None:
        """Send an input gradient back (GRAD, a gradient target, or SYNTH_GRAD); a stacked
        input's goes back slice by slice, each under the step of the message it belongs to."""
        steps = self.in_steps.get(step, {}).get(link.dst_port, [step])
        if len(steps) == 1:
            self.send(link.src, BACKWARD, kind, link.src_port, steps[0], {"g": to_array(grad)})
        else:
            for i, s in enumerate(steps):
                self.send(link.src, BACKWARD, kind, link.src_port, s, {"g": to_array(grad[:, i])})

    def _decay_lr(self, step: int) -> None:
        """`run.lr_decay_at`: the agent's own rate times `lr_decay` per milestone passed.
        SG and synthetic-input models keep their rate, so they go on tracking their targets."""
        passed = sum(1 for milestone in self.run.lr_decay_at if step >= milestone)
        if passed or self._lr_frac != 1.0:
            factor = self.run.lr_decay**passed * self._lr_frac
            for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
                group["lr"] = base * factor

    def _update(self, step, xs, outputs, context, loss, grads, synthetic=frozenset(), held=None) -> None:
        self._apply([(step, xs, outputs, context, loss, grads)], synthetic, held)

    def _apply(self, items, synthetic=frozenset(), held=None) -> None:
        """One backward and at most one optimiser step for one or more steps' graphs, then
        each step's input gradients upstream (several only when a sender ran ahead)."""
        roots, root_grads = [], []
        for _, _, outputs, _, loss, grads in items:
            if loss is not None and loss.requires_grad:  # not when `skip` zeroed what it came from
                roots.append(loss)
                root_grads.append(torch.ones_like(loss))
            for port, g in grads.items():
                if outputs[port].requires_grad:
                    roots.append(outputs[port])
                    root_grads.append(g.to(outputs[port].dtype))
        trace, last = self.tracer, items[-1][0]
        if roots:
            with trace.span("backward", last):
                torch.autograd.backward(roots, root_grads)
            # Sparse updates (paper): after its forward, a layer updates only with probability p.
            # The draw comes from the agent's own seeded generator: reproducible, and
            # independent of every other agent's draws.
            if self.p_update >= 1.0 or (self.p_update > 0.0 and self._rng.random() < self.p_update):
                self._decay_lr(max(item[0] for item in items))
                if self.run.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.agent.module.parameters(), self.run.max_grad_norm)
                with trace.span("optimizer", last):
                    self.optimizer.step()
                self.updates += 1
            self.optimizer.zero_grad(set_to_none=True)
        for step, xs, _, context, _, _ in items:
            labels = context.get(self.sg_context)
            for port, x in xs.items():
                link = self.in_links[port]
                receiver = self.receivers[link.index]
                grad = x.grad if x.grad is not None else torch.zeros_like(x)
                grad = self.guard.check(grad, step, "gradient", f"of input {port}")
                if port in synthetic:
                    held[port] = grad
                elif receiver.returns_gradient and not link.from_source:
                    self.send_upstream(link, Kind.GRAD, step, grad)
                elif receiver.hosted is not None:
                    with trace.span("sg_regression", step):
                        receiver.learn(step, x.detach(), labels, grad, self.clock)
            self.in_steps.pop(step, None)
            self.steps += 1

    def _eval_step(self, step, inputs, context, meta) -> None:
        xs = {p: to_tensor(inputs[p][0]) for p, link in self.in_links.items() if not link.context}
        module = self.agent.module
        if self._modal:
            module.eval()
        with torch.no_grad(), self.tracer.span("evaluate", step):
            outputs = self.agent.forward(xs)
            outputs = {p: self.guard.check(o, step, "activation", f"port {p}, evaluation") for p, o in outputs.items()}
            if "act" in meta:
                outputs = self.agent.act(outputs)  # a policy head's answer; others pass through
            elif self.agent.terminal:
                if meta["eval"] != self.eval_round:  # a new round (or one sent again): fresh sums
                    self.eval_sums, self.eval_round = {}, meta["eval"]
                for key, value in self.agent.evaluate(outputs, context).items():
                    self.eval_sums[key] = self.eval_sums.get(key, 0.0) + value
        if self._modal:
            module.train()
        self.in_steps.pop(step, None)
        self.send_forward(step, outputs, meta)
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
        if link is None or "g" not in msg.tensors or link.index not in self.senders:
            self.reject("sender")
            return
        sender = self.senders[link.index]
        g = to_tensor(msg.tensors["g"])  # finite, unless run.on_nonfinite = "warn" (admission.py)
        parked = self.parked.get(msg.step)
        port = link.src_port
        if parked is not None and g.shape != parked.outputs[port].shape:
            self.reject("shape")  # not the gradient of the output it claims to be for
            return
        if msg.kind == Kind.GRAD and sender.hosted is not None:
            with self.tracer.span("sg_regression", msg.step):
                problem = sender.on_target(msg.step, g, self.clock)
            if not sender.waits:
                if problem:
                    self.reject(problem)
                return
            # BP(lambda): the same target is the true part of the gradient used (the parked
            # step goes on even if the SG cache had forgotten the step).
            g = sender.true_part(g)
        if parked is None or link.index not in parked.waiting:
            self.reject("step")
            return
        parked.grads[port] = parked.grads[port] + g if port in parked.grads else g
        parked.waiting.discard(link.index)
        # Parked steps share the parameters their graphs were built with, so they are released
        # together, in step order, with one update (one step when no sender runs ahead).
        self._release_parked()

    def _release_parked(self) -> None:
        if self.parked and all(not p.waiting for p in self.parked.values()):
            items = [(s, p.inputs, p.outputs, p.context, p.loss, p.grads) for s, p in sorted(self.parked.items())]
            self.parked.clear()
            self._apply(items)

    # ----------------------------------------------------------------- faults
    def abandon(self, peer: str) -> int:
        """`peer` restarted (docs/fault-tolerance.md): the gradients parked steps wait for
        from it will never come, so those waits are dropped (counted under
        `dropped.gradient_wait.PEER`) and a step with nothing else to wait for is applied
        with the gradients it has; holes its outage left in this agent's inputs are skipped."""
        links = {link.index for link in self.out_links if link.dst == peer}
        dropped = 0
        for parked in self.parked.values():
            lost = parked.waiting & links
            dropped += len(lost)
            parked.waiting -= lost
        if dropped:
            self.waits_dropped[peer] = self.waits_dropped.get(peer, 0) + dropped
        if any(link.src == peer for link in self.in_links.values()):
            self.rejoin()
        self._release_parked()
        return dropped

    def rejoin(self) -> None:
        self.rejoining = True
        self._release_acting(force=True)
        if self.unlocked is not None:
            self.unlocked.rejoining = True

    @property
    def clock(self) -> int:
        return self.last_block if self.unlocked is None else self.unlocked.cursor - 1

    # ----------------------------------------------------------------- reporting
    def take_metrics(self) -> dict[str, float]:
        """Means since the last call (task loss, SG loss per link) and counters."""
        out = super().take_metrics()
        out["updates"] = self.updates
        out.update(self.guard.metrics())
        for sender in self.senders.values():
            if sender.cache is not None and sender.cache.evicted:
                # Gradient targets that can no longer train the SG model: the cache forgot
                # their activations (option `sg.cache` of that link).
                out[f"dropped.sg_cache.{sender.link.key}"] = sender.cache.evicted
        for peer, n in self.waits_dropped.items():
            out[f"dropped.gradient_wait.{peer}"] = n
        incomplete = self.incomplete + (self.unlocked.incomplete if self.unlocked is not None else 0)
        if incomplete:
            out["dropped.incomplete_step"] = incomplete
        if self.unlocked is not None:
            out.update(self.unlocked.take_losses())
        for iface in (*self.senders.values(), *self.receivers.values()):
            if iface.hosted is not None:
                loss = iface.hosted.take_loss()
                if loss is not None:
                    out[f"sg_loss.{iface.link.label}"] = loss
                out.update(iface.quality.take())
        return out

    def state_dict(self) -> dict:
        """The agent's module and optimiser state, and its SG models, for checkpoints."""
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
            "updates": self.updates,
            "last_block": self.last_block,
            "rng": rng_state(self._rng),
        }
        if self.unlocked is not None:
            state["synthetic_inputs"] = self.unlocked.state()
            state["cursor"] = self.unlocked.cursor
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint: module, optimiser, SG and synthetic-input models,
        counters and RNG states; then `rejoin`, since the peers went on meanwhile.

        Raises:
            KeyError, RuntimeError: the state is not one of this agent's (another topology).
        """
        self.agent.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        for i, iface in (*self.senders.items(), *self.receivers.items()):
            if iface.hosted is not None:
                iface.hosted.load(state["sg"][str(i)])
        if self.unlocked is not None:
            self.unlocked.load(state["synthetic_inputs"])
            self.unlocked.cursor = int(state["cursor"])
        self.steps, self.updates, self.last_block = int(state["steps"]), int(state["updates"]), int(state["last_block"])
        set_rng_state(state["rng"], self._rng)
        self.rejoin()
