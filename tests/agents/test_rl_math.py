"""RL arithmetic of the env agent and the actor-critic head, checked by hand and against the
single-process baseline (benchmarks/_rl_plain.py, written the way CleanRL's ppo.py is)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthgrad.agents.kinds.actor_critic import ActorCritic, policy_loss
from synthgrad.environments.rollout import compute_gae, explained_variance, minibatch_indices

from benchmarks import _rl_plain as plain


def test_gae_by_hand_stops_at_an_episode_end():
    # One env, three transitions, the second ends its episode; gamma 0.5, lambda 1: the
    # advantage is the discounted return from t, cut at the end, minus V_t.
    rewards = np.array([[1.0], [2.0], [4.0]], np.float32)
    values = np.array([[0.5], [1.0], [2.0]], np.float32)
    dones = np.array([[0.0], [1.0], [0.0]], np.float32)
    adv, ret = compute_gae(rewards, values, dones, np.array([8.0], np.float32), 0.5, 1.0)
    expected_returns = [1 + 0.5 * 2, 2, 4 + 0.5 * 8]
    np.testing.assert_allclose(ret[:, 0], expected_returns)
    np.testing.assert_allclose(adv[:, 0], np.array(expected_returns) - values[:, 0])


def test_gae_matches_the_baseline_on_random_rollouts():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(16, 3)).astype(np.float32)
    values = rng.normal(size=(16, 3)).astype(np.float32)
    dones = (rng.random((16, 3)) < 0.2).astype(np.float32)
    next_value = rng.normal(size=3).astype(np.float32)
    adv, ret = compute_gae(rewards, values, dones, next_value, 0.99, 0.95)
    ref_adv, ref_ret = plain.compute_gae(
        *(torch.as_tensor(a) for a in (rewards, values, dones, next_value)), 0.99, 0.95
    )
    np.testing.assert_allclose(adv, ref_adv.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clip_vloss", [True, False])
def test_ppo_loss_matches_the_baseline(clip_vloss):
    torch.manual_seed(0)
    batch, actions = 64, 3
    logits, values = torch.randn(batch, actions), torch.randn(batch)
    acts = torch.randint(0, actions, (batch,))
    old_logprobs = (
        torch.log_softmax(logits + 0.3 * torch.randn(batch, actions), -1)
        .gather(1, acts[:, None])
        .squeeze(1)
    )
    adv, ret, old_values = torch.randn(batch), torch.randn(batch), values + 0.5 * torch.randn(batch)
    ours, stats = policy_loss(
        logits, values, acts, old_logprobs, adv, ret, old_values, clip_vloss=clip_vloss
    )
    ref, ref_stats = plain.ppo_loss(
        logits, values, acts, old_logprobs, adv, ret, old_values, clip_vloss=clip_vloss
    )
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    for key in ("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac"):
        assert stats[f"losses/{key}"] == pytest.approx(ref_stats[key], rel=1e-5, abs=1e-7), key


def test_a2c_loss_is_the_plain_policy_gradient():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # pi = (1/4, 3/4)
    loss, stats = policy_loss(
        logits,
        torch.tensor([2.0]),
        torch.tensor([1]),
        torch.tensor([0.0]),
        torch.tensor([2.0]),
        torch.tensor([1.0]),
        torch.tensor([0.0]),
        algo="a2c",
        ent_coef=0.0,
        vf_coef=1.0,
    )
    # -A log pi(a) + 0.5 (V - R)^2 with A = 2 (one example: no normalisation), pi(a) = 3/4.
    assert float(loss) == pytest.approx(-2.0 * math.log(0.75) + 0.5, rel=1e-6)
    assert stats["losses/policy_loss"] == pytest.approx(-2.0 * math.log(0.75), rel=1e-6)


def test_acting_samples_from_the_softmax_and_reports_its_log_probability():
    torch.manual_seed(1)
    head = ActorCritic("heads", {"actions": 3})
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).repeat(20000, 1)
    rows = head.act({"logits": logits, "value": torch.full((20000,), 7.0)})["action"]
    actions = rows[:, 0].long()
    freq = torch.bincount(actions, minlength=3).float() / len(actions)
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.015)
    assert torch.allclose(rows[:, 1], torch.log(torch.tensor([0.2, 0.5, 0.3]))[actions], atol=1e-6)
    assert torch.all(rows[:, 2] == 7.0)


def test_minibatches_cover_every_row_once_per_epoch():
    parts = list(minibatch_indices(12, 3, 2, np.random.default_rng(0)))
    assert len(parts) == 6 and all(len(p) == 4 for p in parts)
    for epoch in (parts[:3], parts[3:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(12))


def test_explained_variance():
    returns = np.array([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns) == 1.0
    assert explained_variance(np.zeros(4), returns) == pytest.approx(
        1 - np.var(returns) / np.var(returns)
    )
    assert math.isnan(explained_variance(np.zeros(3), np.ones(3)))


def test_the_rl_kinds_pass_check_agent():
    from synthgrad.agents import check_agent
    from synthgrad.agents.checker import AgentCheckError
    from synthgrad.agents.kinds.actor_critic import MLP
    from synthgrad.agents.kinds.env import GymEnv

    check_agent(MLP, {"sizes": [8, 8]}, in_shapes={"in": (4,)})
    rows = np.stack([np.array([0, 1, 1, 0], np.float32), np.full(4, -0.7, np.float32), np.ones(4, np.float32),
                     np.ones(4, np.float32), np.zeros(4, np.float32)], 1)  # fmt: skip
    check_agent(ActorCritic, {"actions": 2}, in_shapes={"actor": (8,), "critic": (8,)}, context={"rollout": rows})
    with pytest.raises(AgentCheckError, match="context="):
        check_agent(ActorCritic, {"actions": 2}, in_shapes={"actor": (8,), "critic": (8,)})
    check_agent(GymEnv, {"env_id": "CartPole-v1"})
    with pytest.raises(AgentCheckError, match="Discrete"):
        check_agent(GymEnv, {"env_id": "Pendulum-v1"})
