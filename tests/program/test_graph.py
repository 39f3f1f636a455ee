"""Program format: validation, storage, identity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rawdemosaic.cfa import CFA
from rawdemosaic.errors import ProgramError
from rawdemosaic.program.classical import bayer_bilinear, xtrans_linear
from rawdemosaic.program.graph import Node, Program


def test_save_load_roundtrip(tmp_path):
    prog = xtrans_linear()
    path = prog.save(tmp_path / "p.json")
    back = Program.load(path)
    assert back.digest() == prog.digest()
    assert back.cost() == pytest.approx(prog.cost())
    assert json.loads(path.read_text())["weights"] == "p.npz"
    assert not list(tmp_path.glob(".*tmp"))


def test_digest_tracks_weights_not_names():
    a, b = bayer_bilinear(), bayer_bilinear()
    b.name = "other"
    b.meta = {"x": 1}
    assert a.digest() == b.digest()
    b.weights["green_pred.weight"] = b.weights["green_pred.weight"] * 1.01
    assert a.digest() != b.digest()


def _nodes(*extra):
    return (Node("mosaic", "Input"), Node("packed", "Pack", ("mosaic",)), *extra)


@pytest.mark.parametrize(
    "nodes, output, weights, match",
    [
        (_nodes(Node("x", "Nope", ("packed",))), "x", {}, "unknown op"),
        (_nodes(Node("x", "ReLU", ("missing",))), "x", {}, "before they are defined"),
        (_nodes(Node("x", "ReLU", ("packed",))), "x", {}, "3 channels at full resolution"),
        (_nodes(Node("x", "Conv2D", ("packed",), {"out_channels": 3})), "x", {"x.weight": np.zeros((3, 4, 3, 3))}, "expects weights"),
        (_nodes(Node("x", "Conv2D", ("packed",), {"out_channels": 3, "bias": False})), "x", {"x.weight": np.zeros((3, 4, 2, 2))}, "shape"),
        (_nodes(Node("x", "Conv2D", ("packed",), {"out_channels": 3, "groups": 2, "bias": False})), "x", {}, "divisible"),
        (_nodes(Node("x", "Add", ("packed", "mosaic"))), "x", {}, "incompatible"),
        (_nodes(Node("x", "Unpack", ("mosaic",))), "x", {}, "Unpack"),
        (_nodes(Node("x", "Conv2D", ("packed",), {"out_channels": 3, "kernel": 4, "bias": False})), "x", {"x.weight": np.zeros((3, 4, 4, 4))}, "kernel"),
        (_nodes(Node("x", "ReLU", ("packed",), {"alpha": 1})), "x", {}, "unknown parameter"),
        (_nodes(), "packed", {"ghost.weight": np.zeros(1)}, "3 channels"),
    ],
)
def test_invalid_programs_are_rejected(nodes, output, weights, match):
    with pytest.raises(ProgramError, match=match):
        Program("bad", CFA.BAYER, nodes, output, weights).shapes()


def test_nan_weights_rejected():
    prog = bayer_bilinear()
    prog.weights["green_pred.weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(ProgramError, match="non-finite"):
        Program(prog.name, prog.cfa, prog.nodes, prog.output, prog.weights).shapes()


def test_load_reports_file_and_problem(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ProgramError, match="broken.json"):
        Program.load(p)
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ProgramError, match="format"):
        Program.load(p)


def test_live_nodes_and_receptive_radius():
    prog = bayer_bilinear()
    dead = Node("unused", "ReLU", ("packed",))
    prog2 = Program("p", CFA.BAYER, prog.nodes[:2] + (dead,) + prog.nodes[2:], prog.output, prog.weights)
    assert "unused" not in {n.id for n in prog2.live_nodes()}
    assert prog2.cost() == pytest.approx(prog.cost())
    live = prog2.live_only()  # the dead node and its weights go; a program with none is returned as it is
    assert [n.id for n in live.nodes] == [n.id for n in prog.nodes] and live.weights.keys() == prog.weights.keys()
    assert prog.live_only() is prog
    assert prog.receptive_radius() >= 2  # one packed 3x3 tap reaches 2+ full-res pixels
