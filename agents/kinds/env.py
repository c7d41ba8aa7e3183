"""The built-in `env` kind: a Gymnasium vector environment as an agent, closing the loop.

An `env` agent is the run's data source for reinforcement learning (docs/rl.md).  It sends
observations down port `obs` (acting steps, forward only through the real chain) and takes
the policy's answer back on port `action`, a link the planner marks `feedback`: the one
place a topology may close a cycle.  After `num_steps` vector steps it computes advantages
(GAE) and sends the iteration's minibatches as training steps: observations on `obs`, and on
`rollout` the context a policy head's loss needs (environments/rollout.py,
`ROLLOUT_COLUMNS`), exactly as a dataset source sends labels.  The loop itself runs in
agents/runtime/env_driver.py; this class holds the parameters and the spaces.

Hyperparameter names and defaults are CleanRL's ppo.py (classic control).  ``run.steps``
counts environment steps (CleanRL's ``total_timesteps``) in a run with an env agent.
"""

from __future__ import annotations

import math

from ...environments.gym_vector import VECTORIZATION, EnvUnavailable, env_spaces
from ...environments.rollout import ROLLOUT_COLUMNS
from ..base import REQUIRED, Source
from ..errors import ParamError


class GymEnv(Source):
    """A Gymnasium vector environment: ports `obs` and `rollout` out, `action` in.

    Parameters: `env_id` (any registered id), `env_kwargs` (passed to `gymnasium.make_vec`),
    `num_envs`, `acting_groups` (the environments act in this many groups, each with its own
    acting step in flight: agents/runtime/env_driver.py), `vectorization` ("sync" only:
    an agent process may not start Gymnasium's "async" subprocesses), `num_steps` (vector
    steps per rollout),
    `gamma`, `gae_lambda`, `num_minibatches`, `update_epochs`, `anneal_lr` (linear to 0 over
    the run, CleanRL), `normalize_obs` / `normalize_reward` (Gymnasium's vector wrappers),
    `window` (episodes in `charts/episodic_return_mean`), `stop_return` (end the run once
    that mean reaches it; 0 = never).

    Raises:
        ParamError: a parameter out of range, or an environment that cannot be made or
            whose spaces the policy kinds cannot take (named `env_id`).
    """

    kind = "env"
    inputs = ("action",)
    outputs = ("obs", "rollout")
    label_port = "rollout"  # the context a conditioned SG model or a policy head's loss takes
    context_port = "rollout"  # where the planner routes that context for a conditioned SG
    data_port = "obs"
    closes_loop = True  # links into this agent are feedback links (orchestrator/plan.py)
    defaults = {
        "env_id": REQUIRED,
        "env_kwargs": {},
        "num_envs": 4,
        "acting_groups": 1,
        "vectorization": "sync",
        "num_steps": 128,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "num_minibatches": 4,
        "update_epochs": 4,
        "anneal_lr": True,
        "normalize_obs": False,
        "normalize_reward": False,
        "window": 100,
        "stop_return": 0.0,
    }

    def __init__(self, name: str, params: dict) -> None:
        super().__init__(name, params)
        p = self.params
        if not isinstance(p["env_id"], str) or not p["env_id"]:
            raise ParamError(
                "env_id",
                f"must be a Gymnasium environment id such as 'CartPole-v1', got {p['env_id']!r}",
            )
        if not isinstance(p["env_kwargs"], dict):
            raise ParamError(
                "env_kwargs", f"must be a table of keyword arguments, got {p['env_kwargs']!r}"
            )
        for key in (
            "num_envs",
            "acting_groups",
            "num_steps",
            "num_minibatches",
            "update_epochs",
            "window",
        ):
            if not isinstance(p[key], int) or p[key] < 1:
                raise ParamError(key, f"must be a positive integer, got {p[key]!r}")
        for key in ("gamma", "gae_lambda"):
            if not 0.0 <= p[key] <= 1.0:
                raise ParamError(key, f"must be in [0, 1], got {p[key]}")
        if p["vectorization"] not in VECTORIZATION:
            raise ParamError(
                "vectorization",
                f"must be one of {list(VECTORIZATION)}, got {p['vectorization']!r} (an agent is a daemonic process, "
                "which may not start Gymnasium's async subprocesses; use acting_groups to overlap acting)",
            )
        if p["num_envs"] % p["acting_groups"]:
            raise ParamError(
                "acting_groups", f"must divide num_envs ({p['num_envs']}), got {p['acting_groups']}"
            )
        if self.rollout_size % p["num_minibatches"]:
            raise ParamError(
                "num_minibatches",
                f"must divide the rollout of num_envs x num_steps = {self.rollout_size} transitions, got {p['num_minibatches']}",
            )
        try:
            self.obs_shape, self.num_actions = env_spaces(p["env_id"], p["env_kwargs"])
        except (EnvUnavailable, ValueError) as err:
            raise ParamError(getattr(err, "param", "env_id"), str(err)) from None

    @property
    def rollout_size(self) -> int:
        """Transitions per iteration: ``num_envs * num_steps`` (CleanRL's batch_size)."""
        return self.params["num_envs"] * self.params["num_steps"]

    @property
    def minibatch_size(self) -> int:
        return self.rollout_size // self.params["num_minibatches"]

    def iterations(self, total_timesteps: int) -> int:
        """Rollouts in a budget of `total_timesteps` environment steps (at least one)."""
        return max(1, total_timesteps // self.rollout_size)

    def output_shapes(self):
        return {"obs": self.obs_shape, "rollout": (len(ROLLOUT_COLUMNS),)}

    @property
    def num_classes(self) -> int:
        """Actions: a conditioned SG model takes the action one-hot, as cDNI takes labels."""
        return self.num_actions

    def steps_per_epoch(self, batch_size: int) -> int:
        raise ParamError("env_id", "an env agent has no epochs; give run.steps (environment steps)")

    @property
    def obs_size(self) -> int:
        return math.prod(self.obs_shape)
