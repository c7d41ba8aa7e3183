"""The env agent's step logic in one process (no sockets): acting, `terminated` kept apart
from `truncated`, GAE over the rollout, minibatches, the final report.

The environment is built for the test: its episodes end at known steps, by termination
(action 1) or by a time limit of 4 steps (truncation), and its observation is the step
count, so the value the test answers for each observation is known in advance.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from synthgrad.agents.runtime.build import build_core
from synthgrad.environments.rollout import ROLLOUT_COLUMNS
from synthgrad.orchestrator import builder
from synthgrad.orchestrator.plan import plan_run
from synthgrad.protocol.kinds import Kind
from synthgrad.protocol.message import Message

ENDS_ID = "synthgrad-test/Ends-v0"
LIMIT = 4  # the time limit: an episode not terminated before is truncated at its 4th step


class EndsEnv(gym.Env):
    """Observation [t] (steps since reset); reward 1 a step; action 1 terminates."""

    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, int(action) == 1, False, {}


if ENDS_ID not in gym.registry:
    gym.register(ENDS_ID, entry_point=EndsEnv, max_episode_steps=LIMIT)


def value_of(obs: np.ndarray) -> np.ndarray:
    """The value the test's policy reports for an observation: 10 + t."""
    return 10.0 + obs[:, 0]


def topology(**env_params) -> dict:
    params = {
        "env_id": ENDS_ID,
        "num_envs": 1,
        "num_steps": 8,
        "gamma": 0.5,
        "gae_lambda": 1.0,
        "num_minibatches": 1,
        "update_epochs": 1,
        "anneal_lr": False,
        **env_params,
    }
    return builder.topology(
        {
            "env": builder.agent("env", **params),
            "actor": builder.agent("mlp", sizes=[8]),
            "critic": builder.agent("mlp", sizes=[8]),
            "heads": builder.agent("actor_critic"),
        },
        [
            builder.link("env.obs", "actor"),
            builder.link("env.obs", "critic"),
            builder.link("actor", "heads.actor", mode="dni"),
            builder.link("critic", "heads.critic", mode="dni"),
            builder.link("env.rollout", "heads.rollout"),
            builder.link("heads.action", "env.action"),
        ],
        run={"steps": 8, "seed": 3},
    )


def drive(core, actions: list[int]) -> tuple[list[Message], list[np.ndarray]]:
    """Answer every acting step (actions in turn; value 10 + t; log-prob -k/100 for the k-th
    act, to find its row later) until the env is finished; returns the rollout messages and
    the observations of every acting step."""
    rollouts, seen, k = [], [], 0
    while not core.finished:
        if not core.outbox:
            assert core.ready, "the env waits for an answer it was never asked"
            core.produce()
        sent, core.outbox[:] = list(core.outbox), []
        for dest, _, msg in sent:
            if msg.port == "rollout":
                rollouts.append(msg)
            elif dest == "actor" and "act" in msg.meta:
                obs = msg.tensors["x"]
                seen.append(obs)
                act = actions[k] if k < len(actions) else 0
                answer = np.stack(
                    [np.full(len(obs), act), np.full(len(obs), -k / 100), value_of(obs)], 1
                ).astype(np.float32)
                k += 1
                core.on_forward(
                    Message(
                        kind=Kind.ACT,
                        src="heads",
                        port="action",
                        step=msg.step,
                        tensors={"x": answer},
                    )
                )
    return rollouts, seen


def test_truncation_bootstraps_and_termination_does_not():
    plan = plan_run(builder.parse(topology()))
    core = build_core(plan.agents["env"])
    # Transitions 1-4 run into the time limit (truncated); 5-6 end by action 1 (terminated).
    # Acting step 5 asks the truncated episode's final value: its action is not used.
    rollouts, seen = drive(core, [0, 0, 0, 0, 0, 0, 1, 0, 0])
    # Acting steps: 8 transitions, one more for the truncated episode's final observation
    # (t = 4), the bootstrap of the state after the rollout, and the final drain.
    observed = [float(o[0, 0]) for o in seen]
    assert observed == [0, 1, 2, 3, 4, 0, 1, 0, 1, 2, 2]
    (msg,) = rollouts
    assert msg.kind == Kind.CTX and msg.meta == {"lr_frac": 1.0}
    rows = msg.tensors["x"]
    assert rows.shape == (8, len(ROLLOUT_COLUMNS))
    # Find each transition's row by the log-prob the test gave its act (the 5th act was
    # the final-observation request, so transitions 5..8 are acts 6..9).
    order = np.argsort(-rows[:, 1])
    rows = rows[order]
    np.testing.assert_allclose(rows[:, 1], -np.array([0, 1, 2, 3, 5, 6, 7, 8]) / 100, atol=1e-6)
    # gamma 0.5, lambda 1: the return is the discounted reward to the episode's end.
    # Transition 4 was truncated: its reward is 1 + 0.5 * V(t = 4) = 1 + 0.5 * 14 = 8.
    # Transition 6 terminated: no bootstrap.  After transition 8, V(t = 2) = 12.
    r7 = 1 + 0.5 * 12
    r6 = 1 + 0.5 * r7
    returns = [
        1 + 0.5 * (1 + 0.5 * (1 + 0.5 * 8)),
        1 + 0.5 * (1 + 0.5 * 8),
        1 + 0.5 * 8,
        8,
        1 + 0.5 * 1,
        1,
        r6,
        r7,
    ]
    np.testing.assert_allclose(rows[:, 3], returns, rtol=1e-6)
    values = [10, 11, 12, 13, 10, 11, 10, 11]
    np.testing.assert_allclose(rows[:, 4], values)
    np.testing.assert_allclose(rows[:, 2], np.array(returns) - values, rtol=1e-6)
    np.testing.assert_array_equal(rows[:, 0], [0, 0, 0, 0, 0, 1, 0, 0])


def test_episode_statistics_and_the_final_report():
    plan = plan_run(builder.parse(topology()))
    core = build_core(plan.agents["env"])
    drive(core, [0, 0, 0, 0, 0, 0, 1, 0, 0])
    metrics = core.take_metrics()
    (report,) = [m for _, _, m in core.outbox if m.kind == Kind.METRICS]
    assert report.meta["final"] and report.meta["eval"] == 0 and report.meta["train_steps"] == 1
    assert report.meta["charts/episodic_return_mean"] == 3.0
    # Two episodes ended: 4 steps (truncated, raw return 4) and 2 steps (terminated, 2).
    assert metrics["charts/episodic_return"] == 3.0 and metrics["charts/episodic_length"] == 3.0
    assert metrics["episodes"] == 2 and metrics["global_step"] == 8 and metrics["steps"] == 8
    assert metrics["charts/episodic_return_mean"] == 3.0


def test_a_wrong_answer_is_refused_and_the_env_keeps_waiting():
    plan = plan_run(builder.parse(topology()))
    core = build_core(plan.agents["env"])
    core.produce()
    (step,) = core._waiting
    for bad, reason in (
        (np.zeros((2, 3), np.float32), "shape"),  # two rows for one env
        (np.array([[5.0, 0.0, 0.0]], np.float32), "label"),  # action 5 of Discrete(2)
        (np.array([[0.5, 0.0, 0.0]], np.float32), "label"),  # not a whole action
    ):
        core.on_forward(
            Message(kind=Kind.ACT, src="heads", port="action", step=step, tensors={"x": bad})
        )
        assert core.rejects.get(reason) and not core.ready
    core.on_forward(
        Message(
            kind=Kind.ACT,
            src="heads",
            port="action",
            step=step + 7,
            tensors={"x": np.zeros((1, 3), np.float32)},
        )
    )
    assert core.rejects["step"] == 1
    core.on_forward(
        Message(
            kind=Kind.ACT,
            src="heads",
            port="action",
            step=step,
            tensors={"x": np.zeros((1, 3), np.float32)},
        )
    )
    assert core.ready and core.steps == 1


def test_a_restarted_peer_gets_the_awaited_acting_step_again():
    plan = plan_run(builder.parse(topology()))
    core = build_core(plan.agents["env"])
    core.produce()
    core.outbox.clear()
    (old,) = core._waiting
    core.abandon("heads")
    assert not core.outbox and not core.ready  # not at once: the torsos may not know yet
    core._resend_at -= 2  # the grace has passed
    assert core.ready and core.produce()
    (new,) = core._waiting
    assert new > old and [m.step for _, _, m in core.outbox] == [new, new]  # to both torsos


@pytest.mark.parametrize("groups", [1, 2])
def test_acting_groups_collect_the_same_rollout_size(groups):
    plan = plan_run(builder.parse(topology(num_envs=2, acting_groups=groups, num_steps=4)))
    core = build_core(plan.agents["env"])
    rollouts, _ = drive(core, [])
    assert sum(len(m.tensors["x"]) for m in rollouts) == 8 and core.steps == 8


def test_a_head_answers_an_acting_step_only_after_the_training_steps_before_it():
    # The head joins three senders; the acting step of step 6 may complete before the rollout
    # context of training step 5 arrives.  Its answer must come from the updated policy.
    plan = plan_run(builder.parse(topology()))
    heads = build_core(plan.agents["heads"])
    features = np.ones((2, 8), np.float32)
    rows = np.array([[0, -0.7, 1.0, 1.0, 0.0], [1, -0.7, -1.0, 0.0, 0.0]], np.float32)
    for src, port in (("actor", "actor"), ("critic", "critic")):
        heads.on_forward(
            Message(kind=Kind.ACT, src=src, port=port, step=5, tensors={"x": features}, meta={})
        )
    for src, port in (("actor", "actor"), ("critic", "critic")):
        heads.on_forward(
            Message(
                kind=Kind.ACT,
                src=src,
                port=port,
                step=6,
                tensors={"x": features[:1]},
                meta={"act": 0},
            )
        )
    assert not [m for d, _, m in heads.outbox if d == "env"] and heads.steps == 0  # held
    heads.on_forward(
        Message(
            kind=Kind.CTX,
            src="env",
            port="rollout",
            step=5,
            tensors={"x": rows},
            meta={"lr_frac": 1.0},
        )
    )
    assert heads.steps == 1 and heads.updates == 1
    (answer,) = [m for d, _, m in heads.outbox if d == "env"]
    assert answer.step == 6 and answer.port == "action" and answer.tensors["x"].shape == (1, 3)
    kinds = [(d, m.kind) for d, _, m in heads.outbox]
    assert kinds.index(("env", Kind.ACT)) > kinds.index(
        ("actor", Kind.GRAD)
    )  # the update came first
