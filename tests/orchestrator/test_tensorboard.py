"""TensorBoard scalars: the tags, steps and values the writer leaves in its event file."""

from __future__ import annotations

import math
import sys

import pytest
from synthgrad.orchestrator.tensorboard import MISSING, TensorBoardWriter, check_available, tag_safe

T0 = 1_700_000_000.0  # walltime of the first report (UNIX seconds)


def _scalars(log_dir) -> dict[str, list[tuple[float, int, float]]]:
    """Every scalar in `log_dir`: tag -> [(wall time, step, value)]."""
    from tensorboard.backend.event_processing import (
        event_accumulator as accumulator,  # the test extra has it
    )

    events = accumulator.EventAccumulator(str(log_dir), size_guidance={accumulator.SCALARS: 0})
    events.Reload()
    return {tag: [(e.wall_time, e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _head_report(steps: int, loss: float) -> dict:
    return {
        "steps": steps, "rejected": 2, "rejected.shape": 2, "updates": steps, "queued": 1, "held": 0, "parked": 0,
        "dropped.sg_cache.links.1": 3, "nonfinite.gradient": 1,
        "loss": loss, "train_accuracy": 0.75, "steps_per_s": 4.0, "messages_in_per_s": 8.0, "messages_out_per_s": 4.0,
        "sg_loss.l2->l3": 0.125, "sg_cosine.l2->l3": 0.5, "sg_norm_ratio.l2->l3": 1.5, "sg_staleness.l2->l3": 3.0,
        "bpc": 1.25,
    }  # fmt: skip


def test_reports_become_cleanrl_scalars_and_junk_is_skipped(tmp_path):
    writer = TensorBoardWriter(tmp_path, batch_size=32)
    writer.record("l3", _head_report(100, 0.5), t=T0)
    writer.record("l1", {"steps": 102, "steps_per_s": 4.5, "rejected": 0, "updates": 102, "queued": 0, "sg_loss.l1->l2": 0.25,
                         "messages_in_per_s": 9.0, "bpc": 7.0}, t=T0 + 0.5)  # fmt: skip
    writer.record("l3", _head_report(200, 0.25), t=T0 + 1)
    # A head whose window held no step reports no loss, and a diverged one NaN: SPS 0 still plots.
    writer.record("l3", {"steps": 200, "steps_per_s": 0.0, "loss": math.nan, "train_accuracy": math.inf}, t=T0 + 2)
    writer.record("l3", {"steps": 200, "steps_per_s": 0, "sg_cosine.l2->l3": None}, t=T0 + 3)
    # What a peer's meta may hold besides numbers, under keys that would otherwise be plotted.
    junk = {"steps": 300, "steps_per_s": "fast", "bpc": b"\x00", "aux_loss": [1.0], "sg_loss.l2->l3": {"a": 1},
            "messages_in_per_s": True, "note": "hi", "odd key?": 2.0}  # fmt: skip
    writer.record("l3", junk, t=T0 + 4)
    writer.record("l3", {"steps": "many", "loss": 1.0}, t=T0 + 5)  # no usable step: nothing at all
    writer.record("l3", {"eval": 1, "final": False, "last": True, "train_steps": 150, "test_accuracy": 0.875, "test_loss": 0.375}, t=T0 + 6)
    writer.record("l3", {"eval": 2, "final": True, "train_steps": 300, "test_accuracy": math.nan, "test_loss": 0.25}, t=T0 + 7)
    writer.close()

    got = _scalars(tmp_path)
    assert got == {
        "charts/test_accuracy": [(T0 + 6, 150, 0.875)],
        "losses/test_loss": [(T0 + 6, 150, 0.375), (T0 + 7, 300, 0.25)],
        "losses/task_loss": [(T0, 100, 0.5), (T0 + 1, 200, 0.25)],
        "charts/train_accuracy": [(T0, 100, 0.75), (T0 + 1, 200, 0.75)],
        "charts/SPS": [(T0, 100, 128.0), (T0 + 1, 200, 128.0), (T0 + 2, 200, 0.0), (T0 + 3, 200, 0.0)],
        "charts/l3/steps_per_s": [(T0, 100, 4.0), (T0 + 1, 200, 4.0), (T0 + 2, 200, 0.0), (T0 + 3, 200, 0.0)],
        "charts/l1/steps_per_s": [(T0 + 0.5, 102, 4.5)],
        "charts/l3/messages_in_per_s": [(T0, 100, 8.0), (T0 + 1, 200, 8.0)],
        "charts/l3/messages_out_per_s": [(T0, 100, 4.0), (T0 + 1, 200, 4.0)],
        "charts/l3/bpc": [(T0, 100, 1.25), (T0 + 1, 200, 1.25)],
        "charts/l3/odd_key_": [(T0 + 4, 300, 2.0)],
        "sg/l1_to_l2/loss": [(T0 + 0.5, 102, 0.25)],
        "sg/l2_to_l3/loss": [(T0, 100, 0.125), (T0 + 1, 200, 0.125)],
        "sg/l2_to_l3/cosine": [(T0, 100, 0.5), (T0 + 1, 200, 0.5)],
        "sg/l2_to_l3/norm_ratio": [(T0, 100, 1.5), (T0 + 1, 200, 1.5)],
        "sg/l2_to_l3/staleness": [(T0, 100, 3.0), (T0 + 1, 200, 3.0)],
    }  # no counters, and nothing of l1 (not terminal) beyond its rate and its link


def test_two_heads_get_their_own_cleanrl_curves(tmp_path):
    writer = TensorBoardWriter(tmp_path, batch_size=2, heads=["fast", "slow", "digits"])
    writer.record("fast", {"steps": 40, "loss": 0.5, "steps_per_s": 8.0}, t=T0)
    writer.record("slow", {"steps": 10, "loss": 0.75, "steps_per_s": 2.0}, t=T0)
    writer.record("slow", {"eval": 0, "final": True, "train_steps": 10, "test_accuracy": 0.5, "test_loss": 1.0}, t=T0)
    writer.close()
    got = {tag: [(step, value) for _, step, value in events] for tag, events in _scalars(tmp_path).items()}
    assert {tag: v for tag, v in got.items() if "steps_per_s" not in tag} == {
        "losses/task_loss/fast": [(40, 0.5)],
        "losses/task_loss/slow": [(10, 0.75)],
        "charts/SPS/fast": [(40, 16.0)],
        "charts/SPS/slow": [(10, 4.0)],
        "charts/test_accuracy/slow": [(10, 0.5)],
        "losses/test_loss/slow": [(10, 1.0)],
    }


def test_tags_are_tensorboard_safe():
    assert tag_safe("l1->l2") == "l1_to_l2"
    assert tag_safe("a.b-c->d_e") == "a.b-c_to_d_e"
    assert tag_safe("x y:z") == "x_y_z"


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    # A None entry makes `import torch.utils.tensorboard` raise ImportError, as when
    # tensorboard is absent (torch's module raises ImportError on import then).
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert check_available() == MISSING
    with pytest.raises(ImportError) as raised:
        TensorBoardWriter(tmp_path / "tb", batch_size=8)
    assert str(raised.value) == "TensorBoard scalars need the tensorboard package: pip install 'synthgrad[tensorboard]'"
    assert not (tmp_path / "tb").exists()


def test_available_when_installed():
    assert check_available() is None


def test_rl_reports_keep_cleanrl_names_against_env_steps(tmp_path):
    # A run with an env agent (docs/rl.md): the env's charts at its own steps (env steps),
    # the head's losses at the env steps taken when they came; no SPS made from a batch.
    writer = TensorBoardWriter(tmp_path, batch_size=1, heads=["env"])
    writer.record("env", {"steps": 512, "global_step": 512, "charts/episodic_return": 20.0, "charts/SPS": 900.0}, t=T0)
    writer.record("heads", {"steps": 16, "loss": 0.5, "steps_per_s": 30.0, "losses/approx_kl": 0.01}, t=T0 + 1)
    writer.record("env", {"steps": 1024, "global_step": 1024, "charts/episodic_return": 40.0, "charts/SPS": 950.0}, t=T0 + 2)
    writer.record("env", {"eval": 0, "final": True, "train_steps": 32, "charts/episodic_return_mean": 30.0}, t=T0 + 3)
    writer.close()
    got = _scalars(tmp_path)
    assert got["charts/episodic_return"] == [(T0, 512, 20.0), (T0 + 2, 1024, 40.0)]
    assert got["charts/SPS"] == [(T0, 512, 900.0), (T0 + 2, 1024, 950.0)]
    assert got["losses/approx_kl"] == [(T0 + 1, 512, pytest.approx(0.01))]
    assert not [tag for tag in got if "approx_kl" in tag and tag != "losses/approx_kl"]

