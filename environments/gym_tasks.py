"""Memory tasks as Gymnasium environments, registered under the ``synthgrad/`` namespace.

The recurrent agents need reinforcement-learning tasks whose difficulty is *how far back* they
must remember, not how hard the control is. Two are provided:

``synthgrad/MaskedCartPole-v1`` (short memory): CartPole-v1 with the two velocities removed
(:class:`MaskedVelocityObservation`), so a policy must difference about two consecutive
observations to recover them. Dynamics, reward, termination and the 500-step time limit are
CartPole-v1's own::

    index        0                 1
    observation  cart position     pole angle       (CartPole indices 0 and 2)

``synthgrad/TMaze-v0`` (long memory, :class:`TMazeEnv`): the T-maze of Bakker (2002) reduced to
cue recall. A cue (left or right) is shown once, then ``length - 2`` blank corridor steps, then
the junction, where the action must repeat the cue. The gap is exactly what a truncated-BPTT
window has to span, and ``length`` sets it::

    step t       0             1 .. L-2       L-1
    observation  cue           zeros          junction    [cue_left, cue_right, at_junction]
    action       ignored       ignored        0 = left, 1 = right   -> terminated
    reward       0             0              +1 if it matches the cue, else -1

An episode is exactly ``L`` observations and ``L`` actions and its return is +1 or -1; it ends
by termination at the junction, never by a time limit. Pass ``max_episode_steps=k < L`` to
``gymnasium.make`` for a variant that is truncated before the junction (return 0).

Both ids are registered when this module is imported (:func:`register_tasks`, idempotent). It is
not imported by ``synthgrad.environments`` itself, which stays numpy-only, so import it first,
or name it in the id: ``gymnasium.make("synthgrad.environments.gym_tasks:synthgrad/TMaze-v0")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator
from gymnasium.utils import RecordConstructorArgs

__all__ = [
    "CARTPOLE_KEPT",
    "MASKED_CARTPOLE_ID",
    "TMAZE_ID",
    "MaskedVelocityObservation",
    "TMazeEnv",
    "make_masked_cartpole",
    "register_tasks",
]

MASKED_CARTPOLE_ID = "synthgrad/MaskedCartPole-v1"
TMAZE_ID = "synthgrad/TMaze-v0"

#: CartPole observation indices that are positions (cart position, pole angle); 1 and 3 are the
#: velocities the masked task hides.
CARTPOLE_KEPT = (0, 2)

_TMAZE_DEFAULT_LENGTH = 16
# Spelt out rather than ``__name__``, which is "__main__" or "environments.gym_tasks" when the
# file is run or imported by path; the entry points must name the installed module.
_MODULE = "synthgrad.environments.gym_tasks"


class MaskedVelocityObservation(
    gymnasium.ObservationWrapper[np.ndarray, Any, np.ndarray], RecordConstructorArgs
):
    """Keep only some entries of a 1-D ``Box`` observation (by default CartPole's positions).

    Args:
        env: an environment with a 1-D ``Box`` observation space.
        keep: the indices to keep, in order; the default ``(0, 2)`` keeps CartPole's cart
            position and pole angle and drops the two velocities.

    The observation space becomes ``Box(low[keep], high[keep])`` of shape ``(len(keep),)``,
    float32. Raises ``ValueError`` if the space is not a 1-D ``Box`` or an index is out of range
    or repeated.

    Inheriting ``RecordConstructorArgs`` lets ``env.spec`` record this wrapper, so
    ``env.spec.make()`` rebuilds the same environment.
    """

    def __init__(self, env: gymnasium.Env, keep: Sequence[int] = CARTPOLE_KEPT) -> None:
        RecordConstructorArgs.__init__(self, keep=tuple(keep))
        gymnasium.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"observation space must be a 1-D Box, got {space}")
        keep = tuple(int(i) for i in keep)
        size = space.shape[0]
        if not keep or len(set(keep)) != len(keep) or not all(0 <= i < size for i in keep):
            raise ValueError(f"keep must be distinct indices in 0..{size - 1}, got {keep}")
        self.keep = keep
        self._index = np.array(keep, dtype=np.intp)
        self.observation_space = spaces.Box(
            low=space.low[self._index].astype(np.float32),
            high=space.high[self._index].astype(np.float32),
            dtype=np.float32,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """The kept entries, ``[len(keep)]`` float32 (a new array, never a view)."""
        return np.asarray(observation)[self._index].astype(np.float32)


def make_masked_cartpole(**kwargs: Any) -> MaskedVelocityObservation:
    """CartPole-v1's bare environment wrapped in :class:`MaskedVelocityObservation`.

    The entry point of ``synthgrad/MaskedCartPole-v1``; ``kwargs`` go to CartPole (e.g.
    ``render_mode``, ``sutton_barto_reward``). It builds the environment from CartPole-v1's
    registered entry point rather than with ``gymnasium.make``, so that ``make`` on our id adds
    the time limit, order enforcing and env checker exactly once (with CartPole-v1's
    ``max_episode_steps``, copied at registration) instead of burying a second set inside.
    """
    cartpole = gymnasium.spec("CartPole-v1")
    env = load_env_creator(cartpole.entry_point)(**{**cartpole.kwargs, **kwargs})
    return MaskedVelocityObservation(env)


class TMazeEnv(gymnasium.Env[np.ndarray, np.int64]):
    """Cue recall over a corridor of ``length`` steps (see the module docstring for the layout).

    Args:
        length: ``L``, the number of observations (and actions) per episode, an int >= 2; the
            cue must be held for ``L - 1`` steps. Raises ``ValueError`` naming ``length``.
        render_mode: only ``None``; there is nothing to draw.

    Observations are ``[cue_left, cue_right, at_junction]``, float32 in {0, 1}. The cue is drawn
    uniformly from ``np_random`` at each reset, or forced with ``reset(options={"cue": 0 or 1})``;
    ``info["cue"]`` (0 = left, 1 = right) is in every ``reset`` and ``step`` info, for logging
    and evaluation, not for the agent. The observation returned with ``terminated=True`` is all
    zeros (there is nothing left to see). Stepping before ``reset`` or after the episode has
    ended raises ``RuntimeError``; an action outside ``Discrete(2)`` raises ``ValueError``.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = _TMAZE_DEFAULT_LENGTH, render_mode: str | None = None) -> None:
        # bool is an int subclass; TMazeEnv(length=True) is a mistake, not a 1-step maze.
        if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 2:
            raise ValueError(f"length must be an int >= 2, got {length!r}")
        if render_mode is not None:
            raise ValueError(f"TMazeEnv has no render modes, got render_mode={render_mode!r}")
        self.length = int(length)
        self.render_mode = None
        self.observation_space = spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._cue = 0
        self._t: int | None = None  # index of the observation last shown; None: needs reset

    def _observation(self) -> np.ndarray:
        obs = np.zeros(3, dtype=np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        elif self._t == self.length - 1:
            obs[2] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: the cue observation ``[3]`` and ``{"cue": 0 | 1}``.

        ``options`` may hold ``"cue"`` (0 or 1) to fix the cue; other keys raise ``ValueError``
        so that a misspelt option is not silently ignored.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        cue = options.pop("cue", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; only 'cue' is accepted")
        if cue is None:
            self._cue = int(self.np_random.integers(2))
        elif isinstance(cue, int | np.integer) and not isinstance(cue, bool) and cue in (0, 1):
            self._cue = int(cue)
        else:
            raise ValueError(f"options['cue'] must be 0 (left) or 1 (right), got {cue!r}")
        self._t = 0
        return self._observation(), {"cue": self._cue}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act on the observation last shown; returns ``(obs [3], reward, terminated, False, info)``.

        Only the action at the junction (``t = L - 1``) counts: +1 if it equals the cue, -1
        otherwise, and the episode terminates. Earlier actions give 0.
        """
        if self._t is None:
            raise RuntimeError("TMazeEnv.step called before reset() or after the episode ended")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0 (left) or 1 (right), got {action!r}")
        info = {"cue": self._cue}
        if self._t == self.length - 1:
            self._t = None
            reward = 1.0 if int(action) == self._cue else -1.0
            return np.zeros(3, dtype=np.float32), reward, True, False, info
        self._t += 1
        return self._observation(), 0.0, False, False, info


def register_tasks() -> None:
    """Register ``synthgrad/MaskedCartPole-v1`` and ``synthgrad/TMaze-v0`` with Gymnasium.

    Idempotent: an id already in ``gymnasium.registry`` is left alone, because re-registering
    warns, and this runs on every import (including ``importlib.reload``).
    """
    if MASKED_CARTPOLE_ID not in gymnasium.registry:
        cartpole = gymnasium.spec("CartPole-v1")
        gymnasium.register(
            id=MASKED_CARTPOLE_ID,
            entry_point=f"{_MODULE}:make_masked_cartpole",
            max_episode_steps=cartpole.max_episode_steps,
            reward_threshold=cartpole.reward_threshold,
        )
    if TMAZE_ID not in gymnasium.registry:
        gymnasium.register(
            id=TMAZE_ID,
            entry_point=f"{_MODULE}:TMazeEnv",
            kwargs={"length": _TMAZE_DEFAULT_LENGTH},
            # Episodes end at the junction by construction; a fixed cap would silently cut
            # mazes longer than itself, so none is registered (pass one to make to truncate).
            max_episode_steps=None,
        )


register_tasks()
