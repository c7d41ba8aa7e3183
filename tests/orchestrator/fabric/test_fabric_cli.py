"""`place` and `simulate` from the command line: in-process handlers and `python -m`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from synthgrad.orchestrator import builder
from synthgrad.orchestrator.fabric import cli

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SMALL = builder.chain(
    2, width=256, mode="dni", labels_mode="none", run={"steps": 10, "batch_size": 256}
)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("topology") / "small.toml"
    return str(builder.write(SMALL, path))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_place_json_gives_placement_and_cost(capsys, small):
    code, out, _ = run(["place", small, "--fabric", "wormhole_n150", "--json", "--seconds", "0.5"], capsys)
    assert code == 0
    doc = json.loads(out.strip().splitlines()[-1])
    assert set(doc["placement"]["source"]) >= {"chip", "x", "y"}
    assert {"hop_bytes", "max_link_load"} <= set(doc["cost"])


def test_simulate_json_gives_throughput_and_utilisation(capsys, tmp_path, small):
    trace, png = tmp_path / "t.json", tmp_path / "t.png"
    code, out, _ = run(["simulate", small, "--fabric", "wormhole_n150", "--mode", "backprop", "--microbatches",
                        "4", "--steps", "4", "--seconds", "0.5", "--trace", str(trace), "--png", str(png), "--json"],
                       capsys)
    assert code == 0
    doc = json.loads(out.strip().splitlines()[-1])
    for key in ("samples_per_s", "step_time_s", "core_utilisation", "link_utilisation_max"):
        assert isinstance(doc[key], float)
    assert doc["samples_per_s"] == pytest.approx(256 / doc["step_time_s"])
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["ph"] == "X" for e in events)
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "known"),
    [
        (["place", "SMALL", "--fabric", "wormhole_n9000"], "wormhole_n150"),
        (["place", "SMALL", "--fabric", "tiny_4x4", "--method", "magic"], "row-major"),
        (["simulate", "SMALL", "--fabric", "tiny_4x4", "--mode", "sideways"], "unlocked"),
    ],
)
def test_unknown_names_list_the_known_ones_and_exit_2(capsys, small, argv, known):
    code, out, err = run([small if a == "SMALL" else a for a in argv], capsys)
    assert code == 2
    assert known in err and out == ""


def test_a_topology_too_big_for_the_fabric_is_refused_clearly(capsys):
    code, _, err = run(["place", str(EXAMPLES / "chain64.toml"), "--fabric", "tiny_4x4"], capsys)
    assert code == 2
    assert "tiny_4x4" in err and "SRAM" in err


def test_a_missing_file_exits_2(capsys, tmp_path):
    code, _, err = run(["place", str(tmp_path / "none.toml"), "--fabric", "tiny_4x4"], capsys)
    assert code == 2 and "none.toml" in err


def test_parsers_plug_into_a_parent_program_with_examples():
    parser = argparse.ArgumentParser(prog="synthgrad")
    verbs = parser.add_subparsers(dest="verb")
    for add in (cli.add_place_parser, cli.add_simulate_parser):
        sub = add(verbs)
        assert "examples:" in sub.format_help()
    args = parser.parse_args(["simulate", "x.toml", "--fabric", "tiny_4x4"])
    assert args.func is cli.cmd_simulate


def test_module_runs_as_a_program(small):
    proc = subprocess.run(
        [sys.executable, "-m", "synthgrad.orchestrator.fabric.cli", "place", small, "--fabric", "tiny_4x4",
         "--method", "greedy", "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["fabric"] == "tiny_4x4"
