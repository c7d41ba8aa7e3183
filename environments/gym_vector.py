"""Gymnasium environments for `env` agents: spaces checked before a run, vector envs made.

`env_spaces` is what the planner asks of an environment id (one environment made and closed
again); `make_vector_env` is what the `env` agent's process runs.  Vector envs are made with
``autoreset_mode = SAME_STEP``: Gymnasium 1.x autoresets on the *next* step by default, which
would put a transition whose action is ignored into every rollout (Gymnasium's docs,
"Autoreset modes"); with SAME_STEP the observation returned at an episode's end is the next
episode's first, and the last one is in ``info["final_obs"]``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box
from gymnasium.vector import AutoresetMode, VectorWrapper
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers.utils import RunningMeanStd

from . import gym_tasks  # noqa: F401  (registers synthgrad/MaskedCartPole-v1 and synthgrad/TMaze-v0)
from .errors import DatasetUnavailable

# Gymnasium's "async" runs each env in a subprocess; an agent is a daemonic process, and those
# may not have children (multiprocessing refuses), so an env agent steps its envs in-process.
# Parallel acting comes from acting groups and from more env agents' worth of processes.
VECTORIZATION = ("sync",)


class EnvUnavailable(DatasetUnavailable):
    """An environment id that cannot be made (unknown, a missing extra, bad kwargs);
    `param` names the parameter at fault ("env_id" or "env_kwargs")."""

    def __init__(self, message: str, param: str = "env_id") -> None:
        super().__init__(message)
        self.param = param


def _make_error(env_id: str, err: Exception) -> EnvUnavailable:
    hint = ""
    if isinstance(err, gym.error.DependencyNotInstalled) or "box2d" in str(err).lower():
        hint = "; Box2D environments need the extra: pip install 'synthgrad[rl]' (gymnasium[box2d])"
    # A constructor refusing a keyword: the env_kwargs are at fault, not the id.
    param = "env_kwargs" if isinstance(err, TypeError) and "argument" in str(err) else "env_id"
    return EnvUnavailable(f"cannot make Gymnasium environment {env_id!r}: {err}{hint}", param)


def env_spaces(env_id: str, env_kwargs: dict) -> tuple[tuple[int, ...], int]:
    """The observation shape and the number of actions of `env_id` (one env made, closed).

    Raises:
        EnvUnavailable: the id is not registered, its dependencies are missing, or the
            kwargs do not fit it.
        ValueError: the spaces are not a flat `Box` of observations and `Discrete` actions
            (what the built-in policy kinds take).
    """
    try:
        env = gym.make(env_id, **env_kwargs)
    except Exception as err:  # gymnasium raises many types here (NameNotFound, TypeError, ...)
        raise _make_error(env_id, err) from None
    try:
        obs, act = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        raise ValueError(
            f"{env_id!r} observes {obs}; an env agent takes flat Box observations (wrap it, e.g. FlattenObservation)"
        )
    if not isinstance(act, gym.spaces.Discrete) or act.start != 0:
        raise ValueError(
            f"{env_id!r} acts in {act}; an env agent takes Discrete actions numbered from 0"
        )
    return tuple(int(n) for n in obs.shape), int(act.n)


class NormalizeObservationSameStep(VectorWrapper):
    """Gymnasium's vector NormalizeObservation for SAME_STEP envs (gymnasium 1.4.0 refuses them).

    Normalises each returned batch of observations [N, *obs_shape] with running statistics updated
    on that batch (as gymnasium's wrapper does), and also ``info["final_obs"]`` with the same
    statistics (not updated on it), so the truncation bootstrap sees what the critic is trained on.
    """

    def __init__(self, env, epsilon: float = 1e-8) -> None:
        super().__init__(env)
        shape = self.single_observation_space.shape
        self.single_observation_space = Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.obs_rms = RunningMeanStd(shape=shape, dtype=np.float32)
        self.epsilon = epsilon

    def _normalize(self, obs: np.ndarray) -> np.ndarray:
        return ((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)).astype(
            np.float32
        )

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.obs_rms.update(obs)
        return self._normalize(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.obs_rms.update(obs)
        if "final_obs" in info:
            final = info["final_obs"].copy()  # object array, None where no episode ended
            for i in np.flatnonzero(info["_final_obs"]):
                final[i] = self._normalize(final[i])
            info = {**info, "final_obs": final}
        return self._normalize(obs), reward, terminated, truncated, info


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int,
    env_kwargs: dict | None = None,
    vectorization: str = "sync",
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    gamma: float = 0.99,
) -> tuple[gym.vector.VectorEnv, np.ndarray]:
    """`num_envs` copies of `env_id` as one vector env, reset with `seed`; returns it and the
    first observations ``[num_envs, *obs_shape]`` (float32).

    Wrappers, outermost last: `RecordEpisodeStatistics` (episode returns and lengths in
    ``info["episode"]``, measured before any normalisation), then optionally Gymnasium's
    observation normalisation (`NormalizeObservationSameStep`) and Gymnasium's
    `NormalizeReward` (the running statistics PPO needs on masked CartPole).  Environment ``i`` is seeded ``seed + i`` (Gymnasium's vector reset).

    Raises:
        EnvUnavailable: as `env_spaces`.
    """
    try:
        envs = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode=vectorization,
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            **(env_kwargs or {}),
        )
    except Exception as err:
        raise _make_error(env_id, err) from None
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if normalize_obs:
        envs = NormalizeObservationSameStep(envs)

    if normalize_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=gamma)
    obs, _ = envs.reset(seed=seed)
    envs.action_space.seed(seed)
    return envs, np.asarray(obs, dtype=np.float32)
