"""The source's job: emit every training batch of the budget and, at each evaluation, the
whole evaluation set, to every link out of each port (core.py has the shared base)."""

from __future__ import annotations

import itertools

from ...protocol.kinds import Kind
from ...protocol.plan import AgentPlan
from ..base import Source
from .core import FORWARD, AgentCore


class SourceDriver(AgentCore):
    """Drives a `Source`: `produce()` emits the next batch until the budget is spent.

    Step ids count every batch sent, evaluation batches included, so that each message of a
    run has its own step.  An evaluation batch carries ``meta = {"eval": round, "last": bool,
    "final": bool, "train_steps": n}``; the terminal agents report once the last one passed.
    """

    is_source = True

    def __init__(self, source: Source, plan: AgentPlan) -> None:
        super().__init__(source, plan)
        batch = self.run.batch_size
        source.open(batch, self.run.seed)
        self.budget = self.run.steps or self.run.epochs * source.steps_per_epoch(batch)
        self._schedule = self._batches()
        self._next_step = 0
        self._final: tuple[int, int] | None = None  # (round, training steps) once it began

    def _batches(self):
        every = self.run.eval_every
        rounds = 0
        for done in range(1, self.budget + 1):
            yield "train", {}
            final = done == self.budget
            if final or (every and done % every == 0):
                yield from self._evaluation(rounds, final, done)
                rounds += 1

    def _evaluation(self, round_: int, final: bool, done: int):
        if final:
            self._final = (round_, done)
        batches = list(self.agent.eval_batches(self.run.eval_batch_size))
        for i, batch in enumerate(batches):
            yield batch, {"eval": round_, "last": i == len(batches) - 1, "final": final, "train_steps": done}

    def abandon(self, peer: str) -> int:
        """`peer` restarted: if the final evaluation has begun, it may have been lost with
        the peer (a terminal, or an agent on the way to one), and the run ends only when every
        terminal has reported it, so the whole final evaluation is sent again, under new
        step ids and the next round number.  Terminals that had it report it twice; the last
        report counts."""
        if self._final is not None:
            # A new round number: a terminal that had part of the lost one starts its sums afresh.
            again = self._evaluation(self._final[0] + 1, True, self._final[1])
            self._schedule = itertools.chain(again, self._schedule)
            self.finished = False
        return 0

    @property
    def clock(self) -> int:
        return self._next_step - 1

    def state_dict(self) -> dict:
        """The source's position: training batches drawn and step ids used."""
        return {"steps": self.steps, "next_step": self._next_step}

    def load_state_dict(self, state: dict) -> None:
        """Move to a saved position by replaying the schedule without sending.

        Replaying (drawing the same batches again from the seeded source) rather than
        saving a data cursor works for every `Source`, with no state API of its own."""
        for _ in range(int(state["next_step"]) - self._next_step):
            batch, _ = next(self._schedule, ("past", None))
            if batch == "past":
                raise ValueError(
                    f"source {self.name}: the checkpoint is at step {state['next_step']}, past this run's budget "
                    f"of {self.budget} training steps and their evaluations; resume with a larger budget"
                )
            if batch == "train":
                self.agent.train_batch()
                self.steps += 1
            self._next_step += 1
        if self.steps != int(state["steps"]):
            raise ValueError(f"source {self.name}: replaying to step {state['next_step']} drew {self.steps} batches, the checkpoint says {state['steps']}")

    def produce(self) -> bool:
        """Emit the next batch; False once the budget (and final evaluation) is done."""
        item = next(self._schedule, None)
        if item is None:
            self.finished = True
            return False
        batch, meta = item
        step = self._next_step
        if batch == "train":
            with self.tracer.span("produce", step):
                batch = self.agent.train_batch()
            self.steps += 1
        self._next_step += 1
        for link in self.out_links:
            kind = Kind.CTX if link.context else Kind.ACT
            self.send(link.dst, FORWARD, kind, link.dst_port, step, {"x": batch[link.src_port]}, meta)
        return True
