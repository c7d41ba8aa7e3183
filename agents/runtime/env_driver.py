"""The `env` agent's job: act in a vector environment through the chain, then send rollouts.

One iteration (PPO or A2C, CleanRL's ppo.py loop spread over processes; docs/rl.md):

1. **Acting**, `num_steps` times: send the current observations down `obs` as an *acting
   step* (meta ``{"act": iteration}``; forward only, like an evaluation batch) and wait for
   the policy head's answer on `action`: one row ``[action, log-prob, value]`` per
   environment.  Step the vector env with the actions and store the transition.  Where an
   episode was *truncated* (not terminated), one more acting step asks the value of its final
   observation and ``gamma * V(final_obs)`` is added to its last reward: truncation is
   bootstrapped, termination is not.
2. **Bootstrap**: one acting step for the value of the observations after the rollout.
3. **Learning**: GAE over the rollout (environments/rollout.py), then `update_epochs` x
   `num_minibatches` training steps, each a minibatch of observations on `obs` and its
   rollout rows on `rollout` (meta ``{"lr_frac": f}``: CleanRL's linear annealing, applied
   by every module agent to its own rate).

Each acting step waits for its answer, so the next one acts on a policy that has taken
every update sent before it: the torsos read their inputs in order, and a policy head holds
an acting step until every earlier training step is complete (stepper.py).  After the last
iteration a final acting step drains the chain, then the agent reports its final figures
(an evaluation report with ``final = True``: the run ends on it).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ...environments.gym_vector import make_vector_env
from ...environments.rollout import (
    RETURN,
    VALUE,
    RolloutBuffer,
    explained_variance,
    minibatch_indices,
)
from ...protocol.kinds import Kind
from ...protocol.message import Message
from ...protocol.plan import AgentPlan
from .core import FORWARD, AgentCore

POLICY_COLUMNS = 3  # an answer's row: action, log-probability, value
# After a peer restarted, the acting steps awaited are sent again this much later: every
# agent learns of the restart from the same orchestrator heartbeat, but not at the same
# instant, and a torso that still counts the head as down would drop what it forwards.
RESEND_GRACE_S = 1.0


@dataclass
class _Group:
    """One acting group: its own vector env of ``num_envs / acting_groups`` environments."""

    envs: object
    obs: np.ndarray
    buffer: RolloutBuffer
    next_value: np.ndarray | None = None  # the bootstrap value, once asked


class EnvDriver(AgentCore):
    """Drives an `env` agent (agents/kinds/env.py); see the module docstring.

    `steps` counts environment steps (CleanRL's ``global_step``); `budget` is ``run.steps``
    rounded down to whole rollouts.  With ``acting_groups = k`` the environments act in k groups, each with its own acting
    steps in flight (double-buffered sampling, as Sample Factory does): while one group's
    observations travel the chain the env steps another's, so the round trip's latency is
    overlapped.  The data are those of one vector env of `num_envs`: every group acts on the
    same policy, and the rollout is their transitions side by side.
    """

    is_source = True
    closes_loop = True

    def __init__(self, env, plan: AgentPlan) -> None:
        super().__init__(env, plan)
        p = env.params
        self.p = p
        self.iterations = env.iterations(self.run.steps)
        self.budget = self.iterations * env.rollout_size  # whole rollouts: run.steps rounded down
        self.num_envs = p["num_envs"]
        per = self.num_envs // p["acting_groups"]
        self.groups = []
        for g in range(p["acting_groups"]):
            # Environment i is seeded seed + i, whichever group it is in.
            envs, obs = make_vector_env(
                p["env_id"],
                per,
                plan.seed + g * per,
                p["env_kwargs"],
                p["vectorization"],
                p["normalize_obs"],
                p["normalize_reward"],
                p["gamma"],
            )
            self.groups.append(_Group(envs, obs, RolloutBuffer(p["num_steps"], per, env.obs_shape)))
        self._rng = np.random.default_rng(plan.seed)
        self.obs_links = [link for link in self.out_links if link.src_port == "obs"]
        self.rollout_links = [link for link in self.out_links if link.src_port == "rollout"]
        self.iteration = 0  # rollouts learned from
        self.train_steps = 0  # minibatches sent
        self._next_step = 0
        self._waiting: dict[
            int, tuple[_Group | None, str, np.ndarray, object]
        ] = {}  # step -> group, purpose, obs, extra
        self._minibatches: deque = deque()
        self._draining = False
        self.window = deque(maxlen=p["window"])  # returns of the latest episodes
        self.episodes = 0
        self._recent: list[tuple[float, int]] = []  # (return, length) since the last report
        self._explained: float | None = None
        self._started: float | None = None
        self.stopped_early = False
        self._asked_at = time.monotonic()  # when the newest acting step went out
        self._resend_at: float | None = None  # when the awaited acting steps go out again

    # ----------------------------------------------------------------- acting
    def _idle(self) -> list[_Group]:
        """Groups with no acting step in flight."""
        busy = {id(group) for group, *_ in self._waiting.values()}
        return [group for group in self.groups if id(group) not in busy]

    def _next(self) -> _Group | None:
        """An idle group with acting left to do in this rollout (or its bootstrap to ask)."""
        if self._minibatches or self._draining:
            return None
        return next((g for g in self._idle() if g.next_value is None), None)

    @property
    def ready(self) -> bool:
        """Whether `produce` has something to send now (False while every group waits)."""
        if self.finished:
            return False
        if self._resend_due():
            return True
        if self._minibatches:
            return not self._waiting  # training waits for the rollout's last answers
        return self._next() is not None

    def _request(self, group: _Group | None, purpose: str, obs: np.ndarray, extra=None) -> None:
        """Send `obs` down the chain as an acting step; its answer is awaited."""
        step = self._next_step
        self._next_step += 1
        meta = {"act": self.iteration}
        for link in self.obs_links:
            self.send(link.dst, FORWARD, Kind.ACT, link.dst_port, step, {"x": obs}, meta)
        self._waiting[step] = (group, purpose, obs, extra)
        self._asked_at = time.monotonic()

    def _resend_due(self) -> bool:
        """A restart's grace has passed, or an answer is overdue by `run.hang_timeout_s` (a
        message lost with a peer that restarted before it was seen to)."""
        if not self._waiting:
            return False
        now = time.monotonic()
        return (
            self._resend_at is not None and now >= self._resend_at
        ) or now - self._asked_at > self.run.hang_timeout_s

    def produce(self) -> bool:
        """Send the next minibatch, or an idle group's next acting step; False when nothing is due."""
        if not self.ready:
            return False
        if self._resend_due():
            self._resend_at = None
            for step, (group, purpose, obs, extra) in list(self._waiting.items()):
                del self._waiting[step]
                self._request(group, purpose, obs, extra)
            return True
        if self._started is None:
            self._started = time.monotonic()
        if self._minibatches:
            self._send_minibatch(*self._minibatches.popleft())
            if not self._minibatches:
                self._end_iteration()
            return True
        group = self._next()
        self._request(group, "bootstrap" if group.buffer.full else "act", group.obs)
        return True

    def on_forward(self, msg: Message) -> None:
        """The policy's answer to an acting step awaited: ``[rows, 3]`` float32."""
        if msg.port != "action" or "x" not in msg.tensors:
            self.reject("port")
            return
        waiting = self._waiting.get(msg.step)
        if waiting is None:
            self.reject("step")  # not an answer awaited (a late one, sent again after a restart)
            return
        policy = np.asarray(msg.tensors["x"], dtype=np.float32)
        group, purpose, obs, extra = waiting
        if policy.shape != (len(obs), POLICY_COLUMNS):
            self.reject("shape")
            return
        actions = policy[:, 0]
        if purpose == "act" and (
            np.any(actions < 0)
            or np.any(actions >= self.agent.num_actions)
            or np.any(actions != np.round(actions))
        ):
            self.reject("label")  # not an action of this space: the env is not stepped with it
            return
        del self._waiting[msg.step]
        if purpose == "act":
            self._step_envs(group, policy)
        elif purpose == "final_value":
            rewards, dones, truncated = extra
            rewards[truncated] += self.p["gamma"] * policy[:, 2]
            group.buffer.add_outcome(rewards, dones)
        elif purpose == "bootstrap":
            group.next_value = policy[:, 2]
            if all(g.next_value is not None for g in self.groups):
                self._learn()
        elif purpose == "drain":
            self._finish()

    def _step_envs(self, group: _Group, policy: np.ndarray) -> None:
        group.buffer.add_policy(group.obs, policy)
        with self.tracer.span("env_step", self._next_step):
            obs, rewards, terminated, truncated, info = group.envs.step(
                policy[:, 0].astype(np.int64)
            )
        self.steps += len(policy)
        self._record_episodes(info)
        rewards = np.asarray(rewards, dtype=np.float32).copy()
        dones = (terminated | truncated).astype(np.float32)
        group.obs = np.asarray(obs, dtype=np.float32)
        cut = truncated & ~terminated
        if cut.any():
            # The value of where a truncated episode stopped, as the policy sees observations
            # (NormalizeObservationSameStep normalises info["final_obs"] too).
            final = np.stack(
                [np.asarray(info["final_obs"][i], dtype=np.float32) for i in np.flatnonzero(cut)]
            )
            self._request(group, "final_value", final, (rewards, dones, cut))
        else:
            group.buffer.add_outcome(rewards, dones)

    def _record_episodes(self, info: dict) -> None:
        """Episode returns and lengths from RecordEpisodeStatistics (raw rewards)."""
        ended = info.get("_episode")
        if ended is None or not np.any(ended):
            return
        for i in np.flatnonzero(ended):
            ret, length = float(info["episode"]["r"][i]), int(info["episode"]["l"][i])
            self.window.append(ret)
            self._recent.append((ret, length))
            self.episodes += 1

    # ----------------------------------------------------------------- learning
    def _learn(self) -> None:
        p = self.p
        with self.tracer.span("gae", self._next_step):
            parts = [g.buffer.batch(g.next_value, p["gamma"], p["gae_lambda"]) for g in self.groups]
        for g in self.groups:
            g.next_value = None
        obs = np.concatenate([o for o, _ in parts])
        rows = np.concatenate([r for _, r in parts])
        self._explained = explained_variance(rows[:, VALUE], rows[:, RETURN])
        # CleanRL: frac = 1 - (iteration - 1) / num_iterations, iterations counted from 1.
        frac = 1.0 - self.iteration / self.iterations if p["anneal_lr"] else 1.0
        for index in minibatch_indices(
            len(obs), p["num_minibatches"], p["update_epochs"], self._rng
        ):
            self._minibatches.append((obs[index], rows[index], frac))

    def _send_minibatch(self, obs: np.ndarray, rows: np.ndarray, frac: float) -> None:
        step = self._next_step
        self._next_step += 1
        meta = {"lr_frac": frac}
        for link in self.obs_links:
            self.send(link.dst, FORWARD, Kind.ACT, link.dst_port, step, {"x": obs}, meta)
        for link in self.rollout_links:
            self.send(link.dst, FORWARD, Kind.CTX, link.dst_port, step, {"x": rows}, meta)
        self.train_steps += 1

    def _end_iteration(self) -> None:
        self.iteration += 1
        target = self.p["stop_return"]
        reached = (
            bool(target) and len(self.window) == self.window.maxlen and self.mean_return >= target
        )
        if reached:
            self.stopped_early = True
        if reached or self.iteration >= self.iterations:
            self._draining = True  # answered only once every update before it is done
            self._request(None, "drain", self.groups[0].obs)

    @property
    def mean_return(self) -> float:
        """Mean return of the latest `window` episodes (NaN before the first ends)."""
        return float(np.mean(self.window)) if self.window else float("nan")

    def _finish(self) -> None:
        self.finished = True
        for group in self.groups:
            group.envs.close()
        self.report(
            Kind.METRICS,
            {
                "eval": 0,
                "final": True,
                "last": True,
                "train_steps": self.train_steps,
                **self._figures(),
            },
        )

    def _figures(self) -> dict:
        elapsed = time.monotonic() - self._started if self._started else 0.0
        out = {
            "global_step": self.steps,
            "episodes": self.episodes,
            "charts/episodic_return_mean": self.mean_return,
            "charts/SPS": self.steps / elapsed if elapsed > 0 else 0.0,
        }
        return out

    # ----------------------------------------------------------------- reporting and faults
    def take_metrics(self) -> dict[str, float]:
        """CleanRL's chart names: episodic return and length (means of the episodes ended
        since the last report), SPS since the start; the mean over `window` episodes."""
        out = {
            **super().take_metrics(),
            **self._figures(),
            "train_steps": self.train_steps,
            "iteration": self.iteration,
        }
        if self._recent:
            out["charts/episodic_return"] = float(np.mean([r for r, _ in self._recent]))
            out["charts/episodic_length"] = float(np.mean([n for _, n in self._recent]))
            self._recent = []
        if self._explained is not None:
            out["losses/explained_variance"] = self._explained
            self._explained = None
        return out

    def abandon(self, peer: str) -> int:
        """`peer` restarted: acting steps it had may be lost with it, so those awaited are
        sent again under new step ids, `RESEND_GRACE_S` later (a late answer to an old one
        is refused as `step`)."""
        if self._waiting:
            self._resend_at = time.monotonic() + RESEND_GRACE_S
        return 0

    @property
    def clock(self) -> int:
        return self._next_step - 1

    def state_dict(self) -> dict:
        """Counters only: a Gymnasium env's state cannot be saved, so a resumed run starts
        fresh episodes at the saved iteration (docs/rl.md, "Faults")."""
        return {
            "steps": self.steps,
            "next_step": self._next_step,
            "iteration": self.iteration,
            "train_steps": self.train_steps,
            "window": list(self.window),
            "episodes": self.episodes,
        }

    def load_state_dict(self, state: dict) -> None:
        self._next_step = int(state["next_step"])
        self.iteration, self.train_steps = int(state["iteration"]), int(state["train_steps"])
        # The rollout the checkpoint cut into is collected again from its start.
        self.steps = self.iteration * self.agent.rollout_size
        self.window.extend(float(r) for r in state["window"])
        self.episodes = int(state["episodes"])
        if self.iteration >= self.iterations:
            raise ValueError(
                f"env {self.name}: the checkpoint is at iteration {self.iteration}, past this run's budget; resume with a larger run.steps"
            )
