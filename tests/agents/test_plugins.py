"""The plug-in API: kinds by name, entry point and import path; check_agent; the docs' agent."""

from __future__ import annotations

import re
import sys

import pytest
from synthgrad.agents import (
    REQUIRED,
    Agent,
    AgentCheckError,
    UnknownKind,
    check_agent,
    known_kinds,
    register,
    resolve_kind,
)
from synthgrad.orchestrator import builder
from torch import nn

from ..conftest import ROOT, last_json

DOC = ROOT / "docs" / "writing-an-agent.md"


def doc_agent_source() -> str:
    """The first python block of docs/writing-an-agent.md: the complete custom agent."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]


@pytest.fixture
def doc_module(tmp_path, monkeypatch):
    (tmp_path / "doc_blocks.py").write_text(doc_agent_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("doc_blocks", None)
    import doc_blocks

    yield doc_blocks
    sys.modules.pop("doc_blocks", None)


@pytest.mark.parametrize(
    ("kind", "params", "shapes"),
    [
        ("dense", {"width": 16}, None),
        ("head", {"classes": 10}, None),
        ("conv", {"channels": 4}, {"in": (1, 8, 8)}),
        ("source", {"dataset": "digits"}, None),
    ],
)
def test_built_in_kinds_pass_check_agent(kind, params, shapes):
    check_agent(resolve_kind(kind), params, shapes)


def test_the_documented_agent_passes_check_agent_and_is_registered(doc_module):
    check_agent(doc_module.ResidualMLP, params={"hidden": 32}, in_shapes={"in": (16,)})
    assert resolve_kind("residual_mlp") is doc_module.ResidualMLP
    assert "residual_mlp" in known_kinds()


def test_kinds_resolve_by_import_path(doc_module):
    assert resolve_kind("doc_blocks:ResidualMLP") is doc_module.ResidualMLP


def test_kinds_resolve_by_entry_point(tmp_path, monkeypatch):
    (tmp_path / "ep_blocks.py").write_text(doc_agent_source().replace('"residual_mlp"', '"ep_residual"'))
    dist = tmp_path / "ep_blocks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-blocks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[synthgrad.agents]\nfancy_block = ep_blocks:ResidualMLP\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = resolve_kind("fancy_block")
    assert cls.__name__ == "ResidualMLP" and cls.__module__ == "ep_blocks"
    assert known_kinds()["fancy_block"].startswith("entry point")


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(UnknownKind, match="known kinds: .*dense.*head"):
        resolve_kind("nonesuch")
    with pytest.raises(UnknownKind, match="cannot import"):
        resolve_kind("no_such_module_anywhere:Thing")
    with pytest.raises(UnknownKind, match="not a subclass"):
        resolve_kind("collections:OrderedDict")


def test_register_refuses_classes_that_are_not_agents():
    with pytest.raises(TypeError):
        register(dict)


class _NoGradToInput(Agent):
    kind = "bad_detach"
    defaults = {"width": REQUIRED}

    def build(self, in_shapes):
        return nn.Linear(in_shapes["in"][0], self.params["width"]), {"out": (self.params["width"],)}

    def forward(self, inputs):
        return {"out": self.module(inputs["in"].detach())}


class _WrongShape(_NoGradToInput):
    kind = "bad_shape"

    def build(self, in_shapes):
        return nn.Linear(in_shapes["in"][0], 3), {"out": (self.params["width"],)}

    def forward(self, inputs):
        return {"out": self.module(inputs["in"])}


@pytest.mark.parametrize(
    ("cls", "message"),
    [(_NoGradToInput, "no gradient reaches input 'in'"), (_WrongShape, "build\\(\\) said")],
)
def test_check_agent_names_what_to_fix(cls, message):
    with pytest.raises(AgentCheckError, match=message):
        check_agent(cls, {"width": 5})


def test_check_agent_asks_for_required_parameters():
    with pytest.raises(AgentCheckError, match="required parameters \\['width'\\]"):
        check_agent(resolve_kind("dense"))


CUSTOM_TOPOLOGY = builder.chain(
    {
        "l1": builder.agent("dense", width=32),
        "block": builder.agent("doc_blocks:ResidualMLP", hidden=16),
    },
    mode="dni",
    dataset="digits",
    run={"steps": 60, "batch_size": 64, "lr": 3e-3},
)


@pytest.mark.slow
def test_a_custom_agent_runs_as_a_process_by_import_path(cli, tmp_path):
    (tmp_path / "doc_blocks.py").write_text(doc_agent_source())
    builder.write(CUSTOM_TOPOLOGY, tmp_path / "custom.toml")
    proc = cli("run", "custom.toml", "--json", "--quiet", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["agents"]["block"]["steps"] == 60
    assert summary["metrics"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1


def test_cli_agents_lists_builtin_and_entry_point_kinds(cli):
    proc = cli("agents", "--json", timeout=60)
    assert proc.returncode == 0
    kinds = last_json(proc.stdout)["kinds"]
    assert {"source", "dense", "conv", "head"} <= set(kinds)



