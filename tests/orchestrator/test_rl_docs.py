"""docs/rl.md's custom environment: its Python block passes `check_env`, and its topology
trains across real processes with the environment imported by `module:EnvId`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..conftest import last_json, run_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "rl.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def corridor(tmp_path, monkeypatch):
    (tmp_path / "corridor.py").write_text(blocks("python")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_the_documented_environment_passes_check_env(corridor):
    import corridor as module  # noqa: PLC0415  (written by the fixture)
    from gymnasium.utils.env_checker import check_env

    check_env(module.Corridor(length=4), skip_render_check=True)
    env = module.Corridor(length=2)
    env.reset(seed=0)
    assert env.step(1)[1:3] == (-0.01, False) and env.step(1)[1:3] == (1.0, True)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_documented_topology_trains_on_it(corridor):
    (corridor / "corridor.toml").write_text(blocks("toml")[0])
    proc = run_cli(["run", "corridor.toml", "--json"], cwd=corridor, env={"PYTHONPATH": str(corridor)}, timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = last_json(proc.stdout)
    assert summary["steps"] == 4096 and summary["evaluations"][-1]["episodes"] > 0
    assert summary["metrics"]["charts/episodic_return_mean"] > -0.64  # better than never arriving (64 steps x -0.01)
