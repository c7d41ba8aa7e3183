"""The honest single-process RL baseline: a plain PPO loop, one process, torch on one thread.

RL benchmarks compare agents against this loop (no runtime, no messages). It follows CleanRL's
`ppo.py` (classic control; github.com/vwxyzjn/cleanrl, cleanrl/ppo.py): separate actor and critic
MLPs with tanh, orthogonal init, Adam(eps=1e-5), linear learning-rate annealing, GAE, the clipped
surrogate and clipped value loss, global grad-norm clipping. Two things differ, both because of
Gymnasium 1.x:

- Vector envs autoreset on the NEXT step by default, so the step after an episode end is a dummy
  transition (the reset) that a CleanRL-style buffer would store as real. `make_env` asks for
  SAME_STEP autoreset instead: the obs returned at an episode end is already the reset obs and the
  last obs of the episode is in ``info["final_obs"]`` (mask ``info["_final_obs"]``). The buffer's
  `dones[t]` then belongs to transition t itself (CleanRL's belongs to the obs before it).
- A truncated episode (a time limit) bootstraps: gamma * V(final_obs) is added to its last reward,
  so only a termination ends the return (CleanRL treats both alike).

Torch runs with one thread so the baseline uses one core, like one agent process does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections import deque

import numpy as np
import torch
from gymnasium.spaces import Discrete
from synthgrad.environments.gym_vector import make_vector_env
from torch import nn
from torch.distributions import Categorical

log = logging.getLogger(__name__)


def make_env(
    env_id: str,
    num_envs: int,
    seed: int,
    env_kwargs: dict | None = None,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    gamma: float = 0.99,
):
    """The env agent's own vector env (environments/gym_vector.py, synchronous, SAME_STEP
    autoreset, the same wrappers and seeding), so that both arms see the same environment.
    Returns (envs, first_obs [num_envs, *obs_shape])."""
    return make_vector_env(env_id, num_envs, seed, env_kwargs, "sync", normalize_obs, normalize_reward, gamma)


def _layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """CleanRL's layer_init: orthogonal weights with gain `std`, constant bias."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_std: float) -> nn.Sequential:
    """n_in -> hidden (tanh after each) -> Linear(n_out), the last layer initialised with out_std."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer_init(nn.Linear(n_in, width)), nn.Tanh()]
        n_in = width
    layers.append(_layer_init(nn.Linear(n_in, n_out), std=out_std))
    return nn.Sequential(*layers)


class _Agent(nn.Module):
    """CleanRL ppo.py's Agent: separate actor (logits [B, n_actions]) and critic ([B, 1]) MLPs."""

    def __init__(self, n_obs: int, n_actions: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        # The small actor gain makes the initial policy near-uniform (CleanRL, after Andrychowicz
        # et al. 2021, "What matters in on-policy RL").
        self.actor = _mlp(n_obs, hidden, n_actions, out_std=0.01)
        self.critic = _mlp(n_obs, hidden, 1, out_std=1.0)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """V(x): [B, n_obs] -> [B]."""
        return self.critic(x).view(-1)


def compute_gae(rewards, values, dones, next_value, gamma, gae_lambda):
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438).

    rewards, values, dones: [T, N] tensors; next_value: [N]. Convention (SAME_STEP autoreset):
    transition t has obs_t, action_t, reward_t, and dones[t] = terminated_t or truncated_t of that
    transition; next_value is V of the state after the last transition. With V_T = next_value,
    delta_t = r_t + gamma * V_{t+1} * (1 - dones[t]) - V_t and
    A_t = delta_t + gamma * lambda * (1 - dones[t]) * A_{t+1}. After a done, V_{t+1} is the value
    of the next episode's first obs, which the mask drops. On truncation the caller has already
    added gamma * V(final_obs) to r_t, so a truncated end bootstraps and a terminated one does not.
    Returns (advantages [T, N], returns = advantages + values [T, N]).
    """
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        next_values = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        last = delta + gamma * gae_lambda * not_done * last
        advantages[t] = last
    return advantages, advantages + values


def ppo_loss(
    logits,
    values,
    actions,
    old_logprobs,
    advantages,
    returns,
    old_values,
    *,
    clip_coef=0.2,
    clip_vloss=True,
    norm_adv=True,
    ent_coef=0.01,
    vf_coef=0.5,
):
    """CleanRL's PPO loss for one minibatch of B transitions (discrete actions, Categorical).

    logits [B, n_actions] and values [B] (or [B, 1]) from the current networks; actions,
    old_logprobs, advantages, returns, old_values [B] from the rollout. The loss is
    pg_loss - ent_coef * entropy + vf_coef * v_loss (Schulman et al. 2017, arXiv:1707.06347), with
    advantages normalised per minibatch when norm_adv, and v_loss = 0.5 * mean(max(unclipped,
    clipped)) when clip_vloss (old_values + clamp(values - old_values, +-clip_coef)).
    Returns (loss, stats): stats holds floats policy_loss, value_loss, entropy, old_approx_kl,
    approx_kl ((ratio - 1) - logratio, http://joschu.net/blog/kl-approx.html) and clipfrac
    (fraction with |ratio - 1| > clip_coef).
    """
    dist = Categorical(logits=logits, validate_args=False)  # validation costs time, checks nothing
    logratio = dist.log_prob(actions.long()) - old_logprobs
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()

    if norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = torch.max(
        -advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    ).mean()

    values = values.view(-1)
    if clip_vloss:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_coef, clip_coef)
        v_loss = 0.5 * torch.max((values - returns) ** 2, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((values - returns) ** 2).mean()

    entropy = dist.entropy().mean()
    loss = pg_loss - ent_coef * entropy + vf_coef * v_loss
    stats = {
        "policy_loss": pg_loss.item(),
        "value_loss": v_loss.item(),
        "entropy": entropy.item(),
        "old_approx_kl": old_approx_kl.item(),
        "approx_kl": approx_kl.item(),
        "clipfrac": clipfrac.item(),
    }
    return loss, stats


def train_ppo(
    env_id: str,
    *,
    seed: int = 0,
    total_timesteps: int = 500_000,
    num_envs: int = 4,
    num_steps: int = 128,
    learning_rate: float = 2.5e-4,
    anneal_lr: bool = True,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
    num_minibatches: int = 4,
    update_epochs: int = 4,
    norm_adv: bool = True,
    clip_coef: float = 0.2,
    clip_vloss: bool = True,
    ent_coef: float = 0.01,
    vf_coef: float = 0.5,
    max_grad_norm: float = 0.5,
    hidden: tuple[int, ...] = (64, 64),
    env_kwargs: dict | None = None,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    threshold: float | None = None,
    window: int = 100,
    deadline_s: float | None = None,
) -> dict:
    """Train PPO on `env_id` (defaults: CleanRL ppo.py's) and return the learning curve.

    Stops after total_timesteps // (num_envs * num_steps) iterations (CleanRL's count), or at the
    env step where the mean raw return of the last `window` episodes first reaches `threshold`
    (only once `window` episodes have ended), or after the iteration that passes `deadline_s` wall
    seconds. The clock starts once the envs are made and reset.
    Returns {"curve": one row per iteration (the last may be partial) {"global_step", "wall_s",
    "episodic_return" (mean of the last `window`; nan before any episode), "episodes"},
    "steps_to_threshold", "wall_to_threshold" (None unless reached), "sps" (env steps per wall
    second over the run), "global_step", "wall_s", "final_mean_return", "episodes"}.
    """
    torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)  # minibatch shuffles

    envs, next_obs_np = make_env(
        env_id, num_envs, seed, env_kwargs, normalize_obs, normalize_reward, gamma
    )
    if not isinstance(envs.single_action_space, Discrete):
        envs.close()
        raise ValueError(
            f"{env_id}: only discrete action spaces are supported, got {envs.single_action_space}"
        )
    obs_shape = envs.single_observation_space.shape
    agent = _Agent(int(np.prod(obs_shape)), int(envs.single_action_space.n), tuple(hidden))
    optimizer = torch.optim.Adam(agent.parameters(), lr=learning_rate, eps=1e-5)

    batch_size = num_envs * num_steps
    minibatch_size = batch_size // num_minibatches
    num_iterations = total_timesteps // batch_size
    obs = torch.zeros((num_steps, num_envs, *obs_shape))
    actions = torch.zeros((num_steps, num_envs), dtype=torch.long)
    logprobs = torch.zeros((num_steps, num_envs))
    rewards = torch.zeros((num_steps, num_envs))
    dones = torch.zeros((num_steps, num_envs))
    values = torch.zeros((num_steps, num_envs))

    recent: deque[float] = deque(maxlen=window)
    episodes = 0
    global_step = 0
    steps_to_threshold = wall_to_threshold = None
    curve: list[dict] = []
    next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32)
    start = time.perf_counter()

    def mean_return() -> float:
        return float(np.mean(recent)) if recent else float("nan")

    def add_row() -> None:
        curve.append(
            {
                "global_step": global_step,
                "wall_s": time.perf_counter() - start,
                "episodic_return": mean_return(),
                "episodes": episodes,
            }
        )

    stats: dict = {}
    for iteration in range(1, num_iterations + 1):
        if anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * (
                learning_rate
            )

        for step in range(num_steps):
            global_step += num_envs
            obs[step] = next_obs
            with torch.no_grad():
                dist = Categorical(logits=agent.actor(next_obs), validate_args=False)
                action = dist.sample()
                logprobs[step] = dist.log_prob(action)
                values[step] = agent.value(next_obs)
            actions[step] = action

            next_obs_np, reward, terminated, truncated, info = envs.step(action.numpy())
            reward = torch.as_tensor(reward, dtype=torch.float32)
            # A time limit is not the end of the return: bootstrap it from the episode's last obs
            # (info["final_obs"]: SAME_STEP has already put the reset obs in next_obs).
            cut = np.flatnonzero(truncated & ~terminated)
            if cut.size:
                final = torch.as_tensor(np.stack(info["final_obs"][cut]).astype(np.float32))
                with torch.no_grad():
                    reward[cut] += gamma * agent.value(final)
            rewards[step] = reward
            dones[step] = torch.as_tensor(terminated | truncated, dtype=torch.float32)
            next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32)

            if "_episode" in info:
                ended = info["_episode"]
                recent.extend(info["episode"]["r"][ended].tolist())
                episodes += int(ended.sum())
                if threshold is not None and len(recent) == window and mean_return() >= threshold:
                    steps_to_threshold = global_step
                    wall_to_threshold = time.perf_counter() - start
                    break
        if steps_to_threshold is not None:
            add_row()
            break

        with torch.no_grad():
            advantages, returns = compute_gae(
                rewards, values, dones, agent.value(next_obs), gamma, gae_lambda
            )
        b_obs = obs.reshape((-1, *obs_shape))
        b_actions, b_logprobs = actions.reshape(-1), logprobs.reshape(-1)
        b_advantages, b_returns, b_values = (
            advantages.reshape(-1),
            returns.reshape(-1),
            values.reshape(-1),
        )
        b_inds = np.arange(batch_size)
        for _epoch in range(update_epochs):
            rng.shuffle(b_inds)
            for lo in range(0, batch_size, minibatch_size):
                mb = torch.from_numpy(b_inds[lo : lo + minibatch_size])
                mb_obs = b_obs[mb]
                loss, stats = ppo_loss(
                    agent.actor(mb_obs),
                    agent.critic(mb_obs),
                    b_actions[mb],
                    b_logprobs[mb],
                    b_advantages[mb],
                    b_returns[mb],
                    b_values[mb],
                    clip_coef=clip_coef,
                    clip_vloss=clip_vloss,
                    norm_adv=norm_adv,
                    ent_coef=ent_coef,
                    vf_coef=vf_coef,
                )
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
                optimizer.step()

        add_row()
        if iteration % 10 == 0:
            row = curve[-1]
            log.info(
                "iter %d step %d wall %.1fs return %.1f episodes %d sps %d | "
                "pg %.4f v %.4f ent %.3f kl %.4f clipfrac %.3f",
                iteration,
                row["global_step"],
                row["wall_s"],
                row["episodic_return"],
                row["episodes"],
                row["global_step"] / row["wall_s"],
                stats["policy_loss"],
                stats["value_loss"],
                stats["entropy"],
                stats["approx_kl"],
                stats["clipfrac"],
            )
        if deadline_s is not None and curve[-1]["wall_s"] > deadline_s:
            break

    wall_s = time.perf_counter() - start
    envs.close()
    return {
        "curve": curve,
        "steps_to_threshold": steps_to_threshold,
        "wall_to_threshold": wall_to_threshold,
        "sps": global_step / wall_s if wall_s > 0 else 0.0,
        "global_step": global_step,
        "wall_s": wall_s,
        "final_mean_return": mean_return(),
        "episodes": episodes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--total", type=int, default=500_000, help="total env steps")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=None, help="wall seconds")
    parser.add_argument("--normalize-obs", action="store_true")
    parser.add_argument("--normalize-reward", action="store_true")
    parser.add_argument("--curve", action="store_true", help="print the whole curve too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train_ppo(
        args.env_id,
        seed=args.seed,
        total_timesteps=args.total,
        num_envs=args.num_envs,
        threshold=args.threshold,
        deadline_s=args.deadline,
        normalize_obs=args.normalize_obs,
        normalize_reward=args.normalize_reward,
    )
    if not args.curve:
        result = {k: v for k, v in result.items() if k != "curve"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
