"""Tests for synthgrad.environments.gym_tasks (real gymnasium, no mocks)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import TimeLimit
from synthgrad.environments.gym_tasks import (
    MASKED_CARTPOLE_ID,
    TMAZE_ID,
    MaskedVelocityObservation,
    TMazeEnv,
    make_masked_cartpole,
    register_tasks,
)

# check_env warns when handed a wrapped env; that is expected for the `gymnasium.make` results.
WRAPPED = "is different from the unwrapped version"
# CartPole's own space has infinite velocity bounds; the masked space must not inherit them.
INFINITE = "infinity"


def _check_env_warnings(env: gymnasium.Env, **kwargs) -> list[str]:
    """Run check_env (it raises on failures) and return the warnings it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, **kwargs)
    return [str(w.message) for w in caught]


def _wrapper_chain(env: gymnasium.Env) -> list[gymnasium.Env]:
    chain = [env]
    while isinstance(chain[-1], gymnasium.Wrapper):
        chain.append(chain[-1].env)
    return chain


def _run_tmaze(env: gymnasium.Env, actions, seed: int | None = None, cue: int | None = None):
    """One episode; returns (observations incl. the reset one, rewards, terminated, truncated)."""
    obs, info = env.reset(seed=seed, options=None if cue is None else {"cue": cue})
    observations, rewards, terminated, truncated = [obs], [], [], []
    for action in actions:
        obs, reward, term, trunc, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        if term or trunc:
            break
    return observations, rewards, terminated, truncated


# --- registration -----------------------------------------------------------------------------


def test_ids_are_registered_with_their_limits():
    assert gymnasium.spec(MASKED_CARTPOLE_ID).max_episode_steps == 500
    assert gymnasium.spec(MASKED_CARTPOLE_ID).reward_threshold == 475.0
    tmaze = gymnasium.spec(TMAZE_ID)
    assert tmaze.entry_point == "synthgrad.environments.gym_tasks:TMazeEnv"
    assert tmaze.kwargs == {"length": 16}
    assert tmaze.max_episode_steps is None


def test_register_tasks_twice_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_tasks()
        register_tasks()


def test_fresh_import_reload_and_module_prefixed_id_do_not_warn():
    # A fresh interpreter: the "module:id" form must import and register the tasks by itself,
    # and a reload re-runs register_tasks, which must skip the ids it already registered.
    code = (
        "import importlib, warnings, gymnasium\n"
        "warnings.simplefilter('error')\n"
        "env = gymnasium.make('synthgrad.environments.gym_tasks:synthgrad/TMaze-v0')\n"
        "assert env.reset(seed=0)[0].shape == (3,)\n"
        "import synthgrad.environments.gym_tasks as m\n"
        "importlib.reload(m)\n"
        "m.register_tasks()\n"
        "gymnasium.make('synthgrad/MaskedCartPole-v1').reset(seed=0)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --- MaskedCartPole -----------------------------------------------------------------------------


def test_masked_cartpole_space_keeps_position_and_angle_bounds():
    cartpole = gymnasium.make("CartPole-v1").observation_space
    env = gymnasium.make(MASKED_CARTPOLE_ID)
    space = env.observation_space
    assert isinstance(space, gymnasium.spaces.Box)
    assert space.shape == (2,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.low, cartpole.low[[0, 2]])
    np.testing.assert_array_equal(space.high, cartpole.high[[0, 2]])
    assert np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))


def test_masked_cartpole_has_exactly_one_time_limit_of_500():
    env = gymnasium.make(MASKED_CARTPOLE_ID)
    limits = [w for w in _wrapper_chain(env) if isinstance(w, TimeLimit)]
    assert len(limits) == 1
    assert limits[0]._max_episode_steps == 500
    # The spec rebuilds the same stack (the wrapper is recorded, not stacked twice).
    rebuilt = env.spec.make()
    assert [type(w) for w in _wrapper_chain(rebuilt)] == [type(w) for w in _wrapper_chain(env)]


def test_masked_cartpole_matches_cartpole_step_by_step():
    full = gymnasium.make("CartPole-v1")
    masked = gymnasium.make(MASKED_CARTPOLE_ID)
    actions = np.random.default_rng(0).integers(0, 2, size=200)
    obs_full, _ = full.reset(seed=7)
    obs_masked, _ = masked.reset(seed=7)
    assert obs_masked.shape == (2,) and obs_masked.dtype == np.float32
    np.testing.assert_array_equal(obs_masked, obs_full[[0, 2]])
    steps = 0
    for action in actions:
        obs_full, r_full, term_full, trunc_full, _ = full.step(int(action))
        obs_masked, r_masked, term_masked, trunc_masked, _ = masked.step(int(action))
        steps += 1
        np.testing.assert_array_equal(obs_masked, obs_full[[0, 2]])
        assert (r_masked, term_masked, trunc_masked) == (r_full, term_full, trunc_full)
        if term_full or trunc_full:
            break
    assert steps > 1  # the comparison covered dynamics, not just the reset


def test_masked_cartpole_passes_check_env():
    # Rendering is CartPole's own (pygame) and is skipped: it is not ours and needs a display.
    env = gymnasium.make(MASKED_CARTPOLE_ID)
    unwrapped = _check_env_warnings(env.unwrapped, skip_render_check=True)
    assert all(INFINITE in w for w in unwrapped), unwrapped  # only CartPole's own 4-D space
    made = _check_env_warnings(env, skip_render_check=True)
    assert all(WRAPPED in w for w in made), made
    # Our wrapper on the bare CartPole, without make's wrappers: no infinite bounds to warn of.
    bare = _check_env_warnings(make_masked_cartpole(), skip_render_check=True)
    assert all(WRAPPED in w for w in bare), bare


def test_masked_velocity_observation_rejects_bad_keep():
    base = gymnasium.make("CartPole-v1").unwrapped
    for keep in [(0, 4), (2, 2), (), (-1,)]:
        with pytest.raises(ValueError, match="keep"):
            MaskedVelocityObservation(base, keep=keep)


def test_masked_velocity_observation_rejects_non_box():
    with pytest.raises(ValueError, match="1-D Box"):
        MaskedVelocityObservation(gymnasium.make("FrozenLake-v1").unwrapped)


# --- TMaze --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [2, 3, 8])
@pytest.mark.parametrize("cue", [0, 1])
def test_tmaze_layout_length_and_reward(length, cue):
    env = gymnasium.make(TMAZE_ID, length=length)
    for action, expected in [(cue, 1.0), (1 - cue, -1.0)]:
        # The same action every step: the pre-junction actions must not matter.
        obs, rewards, terminated, truncated = _run_tmaze(env, [action] * (length + 5), cue=cue)
        assert len(rewards) == length  # exactly L actions ...
        assert len(obs) == length + 1  # ... L observations, plus the terminal one
        assert rewards == [0.0] * (length - 1) + [expected]
        assert terminated == [False] * (length - 1) + [True]
        assert not any(truncated)
        cue_obs = np.zeros(3, np.float32)
        cue_obs[cue] = 1.0
        np.testing.assert_array_equal(obs[0], cue_obs)
        for t in range(1, length - 1):
            np.testing.assert_array_equal(obs[t], [0, 0, 0])  # the cue is shown only at t=0
        np.testing.assert_array_equal(obs[length - 1], [0, 0, 1])
        assert all(o.dtype == np.float32 and o.shape == (3,) for o in obs)


def test_tmaze_default_length_is_16():
    env = gymnasium.make(TMAZE_ID)
    _, rewards, terminated, _ = _run_tmaze(env, [0] * 100, seed=3)
    assert len(rewards) == 16 and terminated[-1]
    assert rewards[-1] in (1.0, -1.0)


def test_tmaze_reward_follows_the_sampled_cue():
    env = TMazeEnv(length=4)
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        cue = int(np.argmax(obs[:2]))
        assert info["cue"] == cue and obs[:2].sum() == 1.0 and obs[2] == 0.0
        for _ in range(3):
            env.step(1 - cue)
        _, reward, terminated, _, info = env.step(cue)
        assert (reward, terminated, info["cue"]) == (1.0, True, cue)


@pytest.mark.parametrize("length", [1, 0, -3, 2.5, True, "16", None])
def test_tmaze_rejects_bad_length(length):
    with pytest.raises(ValueError, match="length"):
        TMazeEnv(length=length)


def test_tmaze_rejects_bad_length_through_make():
    with pytest.raises(ValueError, match="length"):
        gymnasium.make(TMAZE_ID, length=1)


def test_tmaze_seeding_reproduces_cues():
    def cues(seed: int) -> list[int]:
        env = TMazeEnv(length=2)
        out = [env.reset(seed=seed)[1]["cue"]]
        out += [env.reset()[1]["cue"] for _ in range(49)]  # later resets continue the seeded rng
        return out

    first = cues(11)
    assert first == cues(11)
    assert first != cues(12)
    assert 0 < sum(first) < len(first)  # both cues occur


def test_tmaze_step_errors():
    env = TMazeEnv(length=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(2)
    env.step(0)
    env.step(0)  # the junction action ends the episode
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    for options in [{"cue": 2}, {"cue": True}, {"que": 0}]:
        with pytest.raises(ValueError, match="cue"):
            env.reset(options=options)


def test_tmaze_render_mode_is_refused():
    assert TMazeEnv.metadata["render_modes"] == []
    with pytest.raises(ValueError, match="render_mode"):
        TMazeEnv(render_mode="human")


def test_tmaze_truncates_only_with_an_explicit_short_limit():
    env = gymnasium.make(TMAZE_ID, length=8, max_episode_steps=4)
    _, rewards, terminated, truncated = _run_tmaze(env, [0] * 10, seed=0)
    assert rewards == [0.0] * 4
    assert truncated[-1] and not any(terminated)
    assert not any(isinstance(w, TimeLimit) for w in _wrapper_chain(gymnasium.make(TMAZE_ID)))


def test_tmaze_passes_check_env():
    env = gymnasium.make(TMAZE_ID, length=5)
    assert _check_env_warnings(env.unwrapped) == []
    made = _check_env_warnings(env)
    assert all(WRAPPED in w for w in made), made


def test_tmaze_sync_vector_same_step_autoreset():
    length = 8
    envs = gymnasium.make_vec(
        TMAZE_ID,
        num_envs=3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP},
        length=length,
    )
    obs, info = envs.reset(seed=[1, 2, 3])
    assert obs.shape == (3, 3) and obs.dtype == np.float32
    cues = np.asarray(info["cue"])
    np.testing.assert_array_equal(np.argmax(obs[:, :2], axis=1), cues)
    actions = cues.copy()
    actions[0] = 1 - actions[0]  # env 0 answers wrongly
    for t in range(1, length):
        obs, reward, terminated, truncated, info = envs.step(actions)
        np.testing.assert_array_equal(reward, 0.0)
        assert not terminated.any() and not truncated.any()
        assert "final_obs" not in info or not np.any(info["_final_obs"])
        expected = [0, 0, 1] if t == length - 1 else [0, 0, 0]
        np.testing.assert_array_equal(obs, np.tile(expected, (3, 1)))
    obs, reward, terminated, truncated, info = envs.step(actions)
    np.testing.assert_array_equal(reward, [-1.0, 1.0, 1.0])
    assert terminated.all() and not truncated.any()
    assert "final_obs" in info and np.all(info["_final_obs"])
    for final in info["final_obs"]:
        np.testing.assert_array_equal(final, [0, 0, 0])
    # SAME_STEP: the returned observation is already the next episode's cue.
    np.testing.assert_array_equal(obs[:, :2].sum(axis=1), 1.0)
    np.testing.assert_array_equal(obs[:, 2], 0.0)
    envs.close()
