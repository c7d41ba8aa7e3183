"""Planning a closed loop (docs/rl.md): what the planner accepts, and each refusal by its key."""

from __future__ import annotations

import pytest
from synthgrad.orchestrator import builder
from synthgrad.orchestrator.config import ConfigError
from synthgrad.orchestrator.plan import plan_run


def loop(
    env_id: str = "CartPole-v1", heads: dict | None = None, links: list | None = None, **env
) -> dict:
    agents = {
        "env": builder.agent("env", env_id=env_id, num_steps=16, **env),
        "actor": builder.agent("mlp", sizes=[16]),
        "critic": builder.agent("mlp", sizes=[16]),
        "heads": builder.agent("actor_critic", **(heads or {})),
    }
    default = [
        builder.link("env.obs", "actor"),
        builder.link("env.obs", "critic"),
        builder.link("actor", "heads.actor", mode="dni"),
        builder.link("critic", "heads.critic", mode="dni"),
        builder.link("env.rollout", "heads.rollout"),
        builder.link("heads.action", "env.action"),
    ]
    return builder.topology(agents, default if links is None else links, run={"steps": 64})


def plan(doc: dict):
    return plan_run(builder.parse(doc))


def refused(doc: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        plan(doc)
    return info.value


def test_the_loop_through_an_env_is_planned():
    p = plan(loop())
    assert p.closed_loop and p.terminals == ["env"] and p.samples_per_step == 1
    assert p.order.index("env") == 0 and p.order.index("heads") == 3
    (back,) = p.agents["env"].in_links
    assert (
        back.feedback
        and back.mode.value == "none"
        and p.agents["env"].in_shapes == {"action": (3,)}
    )
    assert p.agents["heads"].params["actions"] == 2  # CartPole's two actions, filled in
    assert p.agents["actor"].in_shapes == {"in": (4,)}
    # Minibatches (4 x 16 / 4 = 16 rows) and acting steps (4 rows) are the run's batches.
    assert p.agents["actor"].run.batch_size == 16 and p.agents["actor"].run.eval_batch_size == 4


def test_a_conditioned_sg_gets_the_rollout_rows_as_context():
    doc = loop()
    doc["links"][2]["sg"] = {"context": True}
    p = plan(doc)
    assert p.agents["actor"].in_shapes == {"in": (4,), "rollout": (5,)}
    ctx = [link for link in p.agents["actor"].in_links if link.context]
    assert [(link.src, link.src_port, link.dst_port) for link in ctx] == [
        ("env", "rollout", "rollout")
    ]


def test_an_unknown_env_id_names_the_key():
    err = refused(loop("CartPol-v1"))
    assert err.key == "agents.env.env_id" and "CartPol" in str(err)


def test_a_continuous_action_space_is_refused():
    err = refused(loop("Pendulum-v1"))
    assert err.key == "agents.env.env_id" and "Discrete" in str(err)


def test_a_policy_with_the_wrong_number_of_actions_names_its_parameter():
    err = refused(loop(heads={"actions": 3}))
    assert err.key == "agents.heads.actions" and "2 actions" in str(err)


def test_a_feedback_link_from_a_torso_names_the_link():
    links = loop()["links"][:-1] + [builder.link("actor", "env.action")]
    err = refused(loop(links=links))
    assert err.key == "links.5.from" and "(3,)" in str(err)


def test_an_env_without_its_action_link_is_refused():
    err = refused(loop(links=loop()["links"][:-1]))
    assert err.key == "links" and "env.action" in str(err)


def test_a_cycle_that_does_not_pass_through_an_env_is_refused():
    doc = builder.topology(
        {
            "source": builder.agent("source", dataset="digits"),
            "a": builder.agent("dense", width=8),
            "b": builder.agent("dense", width=8),
        },
        [("source.x", "a"), ("a", "b"), ("b", "a.in")],
        run={"steps": 4, "batch_size": 8},
    )
    err = refused(doc)
    assert err.key in ("links", "links.2.to") and ("cycle" in str(err) or "already fed" in str(err))


def test_a_cycle_among_module_agents_of_an_rl_run_is_refused():
    agents = loop()["agents"]
    agents["extra"] = builder.agent("mlp", sizes=[16])
    doc = builder.topology(
        {**agents, "a": builder.agent("actor_critic")},
        loop()["links"]
        + [
            builder.link("heads.action", "extra"),
            builder.link("extra", "a.actor"),
            builder.link("a.action", "extra.in"),
        ],
        run={"steps": 64},
    )
    err = refused(doc)
    assert "cycle" in str(err) or "already fed" in str(err)


def test_ticks_and_unlocked_links_are_refused_with_an_env():
    doc = loop()
    doc["agents"]["actor"]["tick_every"] = 2
    assert refused(doc).key == "agents.actor.tick_every"
    doc = loop()
    doc["links"][2]["mode"] = "unlocked"
    assert refused(doc).key == "links.2.mode"


@pytest.mark.parametrize(
    ("param", "value", "says"),
    [
        ("num_minibatches", 3, "divide"),
        ("acting_groups", 3, "divide"),
        ("gamma", 1.5, "[0, 1]"),
        ("vectorization", "gpu", "sync"),
    ],
)
def test_env_parameters_out_of_range_name_themselves(param, value, says):
    err = refused(loop(**{param: value}))
    assert err.key == f"agents.env.{param}" and says in str(err)


def test_the_rollout_port_takes_only_the_env_rollout():
    links = loop()["links"]
    links[4] = builder.link("env.obs", "heads.rollout")
    err = refused(loop(links=links))
    assert err.key == "links.4.from" and "rollout rows" in str(err)


def test_a_budget_below_one_rollout_is_refused():
    doc = loop()
    doc["run"]["steps"] = 63  # one rollout is 4 envs x 16 steps
    err = refused(doc)
    assert err.key == "run.steps" and "64" in str(err)


@pytest.mark.parametrize(
    ("param", "value"),
    [("clip_coef", -1.0), ("clip_coef", 0.0), ("ent_coef", -0.1), ("vf_coef", float("nan"))],
)
def test_loss_coefficients_out_of_range_name_themselves(param, value):
    err = refused(loop(heads={param: value}))
    assert err.key == f"agents.heads.{param}"
