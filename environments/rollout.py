"""A vector environment's rollout: the buffer an `env` agent fills while acting, and GAE.

The `env` agent (agents/kinds/env.py, agents/runtime/env_driver.py) collects `num_steps`
vector steps of `num_envs` environments, then turns them into the training batches of one
PPO or A2C iteration.  Everything here is numpy: the agent's process runs no network of its
own, and the arithmetic is small.

Conventions (Gymnasium's vector API with ``autoreset_mode = SAME_STEP``): transition ``t``
of environment ``i`` has the observation acted on, the action, its log-probability and value
estimate from the policy, the reward, and ``done[t, i] = terminated or truncated`` of *that*
transition; the observation after an episode's end is already the next episode's first.  A
truncated episode is bootstrapped (the caller adds ``gamma * V(final_obs)`` to its last
reward), a terminated one is not (Pardo et al. 2018, "Time Limits in Reinforcement
Learning"; Gymnasium's docs on `terminated` and `truncated`).
"""

from __future__ import annotations

import numpy as np

#: Columns of a rollout row, the context a policy head's loss reads (agents/kinds/actor_critic.py).
ROLLOUT_COLUMNS = ("action", "logprob", "advantage", "return", "value")
ACTION, LOGPROB, ADVANTAGE, RETURN, VALUE = range(len(ROLLOUT_COLUMNS))


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    next_value: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous
    Control Using Generalized Advantage Estimation", eq. 16), as CleanRL's ppo.py computes it.

    Args:
        rewards, values, dones: ``[T, N]``; `dones` is 1 where transition t ended its episode.
        next_value: ``[N]``, the value of the state after the last transition.
    Returns:
        ``(advantages, returns)``, both ``[T, N]`` float32; ``returns = advantages + values``.

    ``delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``.
    """
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    last = np.zeros(rewards.shape[1], dtype=np.float32)
    for t in reversed(range(steps)):
        following = next_value if t == steps - 1 else values[t + 1]
        alive = 1.0 - dones[t]
        delta = rewards[t] + gamma * following * alive - values[t]
        last = delta + gamma * gae_lambda * alive * last
        advantages[t] = last
    return advantages, (advantages + values).astype(np.float32)


class RolloutBuffer:
    """`num_steps` vector steps of `num_envs` environments (CleanRL's storage tensors).

    Shapes: ``obs [T, N, *obs_shape]``; ``actions, logprobs, values, rewards, dones [T, N]``.
    """

    def __init__(self, num_steps: int, num_envs: int, obs_shape: tuple[int, ...]) -> None:
        self.num_steps, self.num_envs = num_steps, num_envs
        self.obs = np.zeros((num_steps, num_envs, *obs_shape), dtype=np.float32)
        self.actions = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.logprobs = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.values = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.rewards = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.dones = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.t = 0  # transitions stored in this iteration

    @property
    def full(self) -> bool:
        return self.t == self.num_steps

    def add_policy(self, obs: np.ndarray, policy: np.ndarray) -> None:
        """Store step t's observation and the policy's ``[N, 3]`` answer (action, log-prob, value)."""
        t = self.t
        self.obs[t] = obs
        self.actions[t], self.logprobs[t], self.values[t] = policy[:, 0], policy[:, 1], policy[:, 2]

    def add_outcome(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        """Store step t's rewards (truncation already bootstrapped) and ends; t advances."""
        self.rewards[self.t], self.dones[self.t] = rewards, dones
        self.t += 1

    def batch(
        self, next_value: np.ndarray, gamma: float, gae_lambda: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The iteration's training data, flattened to ``T * N`` rows: ``(obs [T*N, ...],
        rows [T*N, 5])`` with `ROLLOUT_COLUMNS`; the buffer is then empty again."""
        advantages, returns = compute_gae(
            self.rewards, self.values, self.dones, next_value, gamma, gae_lambda
        )
        rows = np.stack([self.actions, self.logprobs, advantages, returns, self.values], -1)
        self.t = 0
        size = self.num_steps * self.num_envs
        return self.obs.reshape(size, *self.obs.shape[2:]).copy(), rows.reshape(
            size, len(ROLLOUT_COLUMNS)
        ).astype(np.float32)


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """``1 - Var(returns - values) / Var(returns)`` (CleanRL's `losses/explained_variance`);
    NaN when the returns do not vary."""
    var = float(np.var(returns))
    return float("nan") if var == 0 else 1.0 - float(np.var(returns - values)) / var


def minibatch_indices(size: int, num_minibatches: int, epochs: int, rng: np.random.Generator):
    """Yield the row indices of each minibatch: every epoch shuffles all `size` rows and cuts
    them into `num_minibatches` equal parts (CleanRL; a remainder is left out of that epoch)."""
    part = size // num_minibatches
    for _ in range(epochs):
        order = rng.permutation(size)
        for k in range(num_minibatches):
            yield order[k * part : (k + 1) * part]
