"""`synthgrad compose`: the agents joined into one module score what the run reported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from synthgrad.environments.datasets import load_dataset

from ..conftest import EXAMPLES, last_json

pytestmark = pytest.mark.slow

SCORE = """
import sys, numpy as np, torch
program = torch.export.load(sys.argv[1])
assert not any(m.startswith("synthgrad") for m in sys.modules), "loading needed synthgrad"
data = np.load(sys.argv[2])
with torch.no_grad():
    logits = program.module()(torch.from_numpy(data["x"]))
print(int((logits.argmax(1).numpy() == data["y"]).sum()))
"""


def test_composed_module_scores_the_runs_test_accuracy_without_synthgrad(cli, tmp_path):
    proc = cli("run", str(EXAMPLES / "mnist_cdni.toml"), "--set", "run.steps=60", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    out = tmp_path / "model.pt"
    composed = cli("compose", summary["run_dir"], "--out", str(out))
    assert composed.returncode == 0, composed.stderr
    test = load_dataset("mnist", "test")
    np.savez(tmp_path / "test.npz", x=test.images.reshape(len(test), -1), y=test.labels)
    scored = subprocess.run(
        [sys.executable, "-c", SCORE, str(out), str(tmp_path / "test.npz")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    accuracy = int(scored.stdout.strip()) / len(test)
    assert accuracy == pytest.approx(summary["metrics"]["test_accuracy"], abs=1e-4)


def test_compose_of_an_unfinished_run_names_the_missing_file(cli, tmp_path):
    proc = cli("compose", str(tmp_path), "--out", str(tmp_path / "m.pt"))
    assert proc.returncode == 2 and "config.json" in proc.stderr
