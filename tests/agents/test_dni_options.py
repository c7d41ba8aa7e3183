"""Link options on DNI links: BP(lambda), sparse updates (`p_update`), the conv SG model.

Every run here is a single-process run (`run_locally`) on the small `digits` set, so the
tests check behaviour (equal parameters, update counts, learning) in seconds.
"""

from __future__ import annotations

import pytest
import torch
from synthgrad.agents.runtime.build import build_core
from synthgrad.agents.runtime.interfaces import (
    ConvSyntheticGradientModel,
    SyntheticGradientModel,
    build_sg_model,
)
from synthgrad.agents.runtime.local import run_locally
from synthgrad.orchestrator.config import ConfigError, load_topology
from synthgrad.orchestrator.plan import plan_run
from synthgrad.protocol.plan import SGOptions

from ..conftest import EXAMPLES

DIGITS = [
    'agents.source.dataset="digits"',
    "run.batch_size=64",
    "run.eval_batch_size=400",
    "run.lr=3e-3",
]
SMALL = ["agents.l1.width=32", "agents.l2.width=32", "agents.l3.width=32"]


def run(example: str, *overrides: str, steps: int = 30):
    torch.set_num_threads(1)
    return run_locally(plan_run(load_topology(EXAMPLES / example, [*DIGITS, *SMALL, f"run.steps={steps}", *overrides])))


def params(runner, name: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in runner.cores[name].agent.module.named_parameters()}


def assert_same_parameters(a, b, names=("l1", "l2", "l3", "head")) -> None:
    for name in names:
        pa, pb = params(a, name), params(b, name)
        for key in pa:
            assert torch.equal(pa[key], pb[key]), f"{name}.{key} differs"


# ----------------------------------------------------------------- BP(lambda)
def test_bp_lambda_one_is_exactly_backprop():
    backprop = run("mnist_dni.toml", "link_defaults.mode=backprop")
    lam_one = run("mnist_dni.toml", "link_defaults.mode=dni", "link_defaults.lambda=1")
    assert_same_parameters(backprop, lam_one)
    # The SG models still learned from the targets they saw.
    assert lam_one.cores["l1"].senders[1].hosted.loss_count == 30


def test_bp_lambda_zero_is_exactly_dni():
    dni = run("mnist_dni.toml")
    lam_zero = run("mnist_dni.toml", "link_defaults.sg.lam=0.0")
    assert_same_parameters(dni, lam_zero)


def test_bp_lambda_between_zero_and_one_waits_and_mixes():
    mixed = run("mnist_dni.toml", "link_defaults.lambda=0.5", steps=40)
    for name in ("l1", "l2", "l3"):
        core = mixed.cores[name]
        assert core.steps == 40 and core.rejected == 0 and not core.parked
        assert all(sender.waits for sender in core.senders.values())
    dni, backprop = run("mnist_dni.toml", steps=40), run("mnist_dni.toml", "link_defaults.mode=backprop", steps=40)
    assert not torch.equal(params(mixed, "l1")["1.weight"], params(dni, "l1")["1.weight"])
    assert not torch.equal(params(mixed, "l1")["1.weight"], params(backprop, "l1")["1.weight"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["link_defaults.lambda=1.5"], "link_defaults.lambda"),
        (["links.1.sg.lam=-0.1"], "links.1.sg.lam"),
        (["links.1.lambda=0.5", "links.1.sg.lam=0.2"], "links.1.lambda"),
        (['links.1.sg.host="receiver"', "links.1.lambda=0.5"], "links.1.sg.lam"),
        (["links.1.p_update=2"], "links.1.p_update"),
        (["agents.l2.p_update=-1"], "agents.l2.p_update"),
        (['link_defaults.sg.model="transformer"'], "link_defaults.sg.model"),
        (["link_defaults.sg.kernel=4"], "link_defaults.sg.kernel"),
    ],
)
def test_bad_link_options_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        plan_run(load_topology(EXAMPLES / "mnist_dni.toml", overrides))
    assert err.value.key == key


# ----------------------------------------------------------------- sparse updates
def test_p_update_one_is_exactly_plain():
    assert_same_parameters(run("mnist_dni.toml"), run("mnist_dni.toml", "link_defaults.p_update=1.0"))


def test_p_update_zero_never_updates_the_layer():
    runner = run("mnist_dni.toml", "agents.l2.p_update=0")
    plan = plan_run(load_topology(EXAMPLES / "mnist_dni.toml", [*DIGITS, *SMALL, "run.steps=30"]))
    fresh = build_core(plan.agents["l2"])
    initial = dict(fresh.agent.module.named_parameters())
    for key, value in params(runner, "l2").items():
        assert torch.equal(value, initial[key]), key
    assert runner.cores["l2"].updates == 0 and runner.cores["l2"].steps == 30
    assert runner.cores["l1"].updates == 30
    assert not torch.equal(params(runner, "l1")["1.weight"], dict(
        build_core(plan.agents["l1"]).agent.module.named_parameters()
    )["1.weight"])


def test_p_update_between_updates_about_that_often_reproducibly():
    steps, p = 200, 0.3
    a = run("mnist_dni.toml", f"link_defaults.p_update={p}", steps=steps)
    counts = {name: a.cores[name].updates for name in ("l1", "l2", "l3", "head")}
    # Binomial(200, 0.3): mean 60, sd 6.5; the bounds are about four sd wide.
    assert all(34 <= n <= 86 for n in counts.values()), counts
    assert all(a.cores[name].steps == steps for name in counts)
    assert a.cores["l1"].take_metrics()["updates"] == counts["l1"]
    b = run("mnist_dni.toml", f"link_defaults.p_update={p}", steps=steps)
    assert counts == {name: b.cores[name].updates for name in counts}  # seeded per agent


def test_the_agent_parameter_overrides_the_link_option():
    plan = plan_run(load_topology(EXAMPLES / "mnist_dni.toml", ["link_defaults.p_update=0.5", "agents.l2.p_update=0.25"]))
    assert plan.agents["l1"].p_update == 0.5 and plan.agents["l2"].p_update == 0.25
    assert plan_run(load_topology(EXAMPLES / "mnist_dni.toml")).agents["l1"].p_update is None


# ----------------------------------------------------------------- conv SG model
@pytest.mark.parametrize("context", [False, True])
def test_the_conv_sg_model_predicts_zero_at_init(context):
    sg = SGOptions(model="conv", hidden=(8,), context=context)
    model = build_sg_model(sg, (4, 6, 6), 10)
    assert isinstance(model, ConvSyntheticGradientModel)
    h = torch.randn(3, 4, 6, 6)
    out = model(h, torch.tensor([0, 3, 9]) if context else None)
    assert out.shape == h.shape and torch.count_nonzero(out) == 0


def test_the_conv_sg_model_sees_the_label_as_planes():
    model = ConvSyntheticGradientModel((2, 5, 5), [], context_classes=10, kernel=3)
    torch.nn.init.normal_(model.net[-1].weight)
    h = torch.zeros(2, 2, 5, 5)
    out = model(h, torch.tensor([1, 7]))
    assert not torch.equal(out[0], out[1])  # same activation, different labels
    # The label's plane is constant ones: away from the border the prediction is constant.
    assert torch.allclose(out[0, :, 1:4, 1:4], out[0, :, 2:3, 2:3].expand(-1, 3, 3))


def test_a_conv_sg_on_a_flat_activation_is_linear():
    assert isinstance(build_sg_model(SGOptions(model="conv"), (32,), 10), SyntheticGradientModel)


def test_conv_cdni_learns():
    torch.set_num_threads(1)
    topo = load_topology(
        EXAMPLES / "mnist_cnn_cdni.toml",
        [*DIGITS, "run.steps=150", "agents.c1.channels=8", "agents.c2.channels=16"],
    )
    runner = run_locally(plan_run(topo))
    for name in ("c1", "c2"):
        (sender,) = runner.cores[name].senders.values()
        assert isinstance(sender.hosted.model, ConvSyntheticGradientModel)
        assert sender.hosted.model.context_classes == 10
    assert runner.evaluations()[-1]["test_accuracy"] > 0.8  # chance: 0.1


# ----------------------------------------------------------------- learning-rate decay
def test_lr_decay_scales_each_agents_own_rate_per_milestone_passed():
    runner = run("mnist_cdni.toml", "run.lr_decay_at=[10, 20]", "run.lr_decay=0.5", steps=30)
    for name in ("l1", "l2", "l3", "head"):
        core = runner.cores[name]
        assert [g["lr"] for g in core.optimizer.param_groups] == pytest.approx([3e-3 * 0.25])
        for sender in core.senders.values():  # SG models keep their own rate
            assert sender.hosted.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3)


def test_lr_decay_changes_training_only_after_its_milestone():
    plain = run("mnist_backprop.toml", steps=12)
    late = run("mnist_backprop.toml", "run.lr_decay_at=[12]", steps=12)  # never reached
    early = run("mnist_backprop.toml", "run.lr_decay_at=[6]", steps=12)
    assert_same_parameters(plain, late)
    with pytest.raises(AssertionError):
        assert_same_parameters(plain, early)
