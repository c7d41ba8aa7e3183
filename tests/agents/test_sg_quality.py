"""SG quality (agents/runtime/sg_quality.py): a linear SG with hand-set weights on a tiny
problem whose gradient is known, checked against cosine and norm ratio worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from synthgrad.agents.runtime.interfaces import ReceiverInterface, SenderInterface
from synthgrad.agents.runtime.sg_quality import compare
from synthgrad.protocol.plan import LinkMode, LinkPlan, SGOptions


def _set_linear(model, weight, bias) -> None:
    layer = model.net[-1]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


def _link(**sg) -> LinkPlan:
    return LinkPlan(index=0, src="l1", src_port="out", dst="l2", dst_port="in", mode=LinkMode.DNI, sg=SGOptions(**sg))


def test_sender_scores_the_gradient_it_used_against_the_target_worked_by_hand():
    sender = SenderInterface(_link(scale=0.5), (2,), 0, lr=0.0)  # lr 0: the model stays as set
    # M(h) = W h + b with W = [[1, 0], [0, 2]], b = [0, 1].
    _set_linear(sender.hosted.model, [[1.0, 0.0], [0.0, 2.0]], [0.0, 1.0])
    h = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # B = 2
    sender.synthetic_gradient(3, h, None)
    # M(h) = [[1, 3], [2, 1]]; used = scale * M / B = 0.25 * M = [[.25, .75], [.5, .25]].
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert sender.on_target(3, target, clock=7) is None
    metrics = sender.quality.take()
    # <used, g> = 0.25 + 0.25; |used| = sqrt(0.9375); |g| = sqrt(2).
    assert metrics["sg_cosine.l1->l2"] == pytest.approx(0.5 / (math.sqrt(0.9375) * math.sqrt(2)))
    assert metrics["sg_norm_ratio.l1->l2"] == pytest.approx(math.sqrt(0.9375) / math.sqrt(2))
    assert metrics["sg_staleness.l1->l2"] == 4  # target for step 3 arrived at step 7
    assert sender.quality.take() == {}  # means since the last flush


def test_cosine_and_ratio_of_a_known_pair():
    used = torch.tensor([[1.0, 2.0]])
    target = torch.tensor([[3.0, -1.0]])
    cosine, ratio = compare(used, target)
    assert cosine == pytest.approx(1 / math.sqrt(50))  # (3 - 2) / (sqrt 5 * sqrt 10)
    assert ratio == pytest.approx(math.sqrt(5) / math.sqrt(10))
    assert compare(-target, target)[0] == pytest.approx(-1.0)
    assert compare(torch.zeros(1, 2), target) == (0.0, 0.0)  # an untrained, zero-initialised SG
    assert compare(used, torch.zeros(1, 2)) == (0.0, None)  # no target energy: no ratio


def test_means_over_several_targets_and_a_fresh_model_reads_zero():
    sender = SenderInterface(_link(), (2,), 0, lr=0.0)  # zero-initialised: predicts 0
    for step in range(3):
        sender.synthetic_gradient(step, torch.ones(1, 2), None)
    for step in range(3):
        sender.on_target(step, torch.tensor([[1.0, 1.0]]), clock=2)
    metrics = sender.quality.take()
    assert metrics["sg_cosine.l1->l2"] == 0.0
    assert metrics["sg_norm_ratio.l1->l2"] == 0.0
    assert metrics["sg_staleness.l1->l2"] == pytest.approx((2 + 1 + 0) / 3)


def test_receiver_hosted_sg_scores_its_answer_against_its_own_input_gradient():
    receiver = ReceiverInterface(_link(host="receiver"), (2,), 0, lr=0.0)
    _set_linear(receiver.hosted.model, [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    h = torch.tensor([[2.0, 0.0]])
    sent = receiver.answer(h, None, step=5)
    assert torch.equal(sent, h)  # identity, B = 1
    receiver.learn(5, h, None, torch.tensor([[1.0, 1.0]]), clock=5)
    metrics = receiver.quality.take()
    assert metrics["sg_cosine.l1->l2"] == pytest.approx(1 / math.sqrt(2))
    assert metrics["sg_norm_ratio.l1->l2"] == pytest.approx(2 / math.sqrt(2))
    assert metrics["sg_staleness.l1->l2"] == 0
