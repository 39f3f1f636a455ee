"""Replacing a searched program's learned chroma by residual interpolation (search/rechroma.py, the CLI)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from rawdemosaic.cfa import CFA  # noqa: E402
from rawdemosaic.errors import ProgramError  # noqa: E402
from rawdemosaic.program.graph import Program  # noqa: E402
from rawdemosaic.program.reference import run_reference  # noqa: E402
from rawdemosaic.program.zoo import exercise  # noqa: E402
from rawdemosaic.search.rechroma import with_chroma_refinement, with_residual_chroma  # noqa: E402
from rawdemosaic.search.space import residual_net  # noqa: E402

from .test_channels import _mosaic, _searched_registry  # noqa: E402


def test_the_green_part_is_kept_and_the_chroma_part_dropped():
    prog = residual_net("bayer", width=8, depth=2, chroma_width=6, seed=4)
    rc = with_residual_chroma(prog, radius=2, eps=1e-2, prior=0.5, name="rc")
    assert rc.node(rc.output).op == "ResidualChroma" and rc.node(rc.output).params == {"radius": 2, "eps": 1e-2, "prior": 0.5}
    assert not any(n.id.startswith("c_") for n in rc.nodes)
    assert set(rc.weights) == {k for k in prog.weights if k.startswith("g_")}
    assert rc.meta["residual_chroma"]["replaced"] and all(r.startswith("c_") for r in rc.meta["residual_chroma"]["replaced"])
    m = _mosaic((40, 48))
    # the green is the parent's, to the bit; red and blue change
    a, b = run_reference(prog, m), run_reference(rc, m)
    assert np.array_equal(a[..., 1], b[..., 1]) and not np.allclose(a[..., 0], b[..., 0])
    chroma = sum(c for k, c in prog.node_costs().items() if k.startswith("c_"))
    assert rc.cost() == pytest.approx(prog.cost() - chroma - prog.node_costs()["rgb"] + rc.node_costs()["rgb"])


def test_programs_without_a_learned_chroma_are_refused():
    with pytest.raises(ProgramError, match="not a ChromaInsert"):
        with_residual_chroma(exercise("ResidualChroma", "bayer"))
    with pytest.raises(ProgramError, match="Bayer"):
        with_residual_chroma(residual_net("xtrans", width=4, depth=1, chroma_width=4, seed=0))
    prog = residual_net("bayer", width=4, depth=1, chroma_width=4, seed=0)
    with pytest.raises(ProgramError, match="self-ensemble"):
        with_residual_chroma(prog.with_ensemble(2))


def test_residual_chroma_entry_fine_tunes_and_records_provenance(tmp_path):
    from rawdemosaic import demosaic
    from rawdemosaic.search.cli import main, residual_chroma_entry

    reg, parent = _searched_registry(tmp_path)
    calls = []

    def fake_trainer(program, seed, init_from):
        calls.append(program)
        return program, 31.0

    tdir = tmp_path / "trained"
    tdir.mkdir()
    info = residual_chroma_entry("tiny_searched", eps=1e-2, prior=0.5, models=reg, trainer=fake_trainer, trained_dir=tdir, sets=["kodak24"], limit=1, quiet=True)
    assert len(calls) == 1 and calls[0].node("rgb").op == "ResidualChroma"
    assert info.name == "tiny_searched_rc_e0.01_p0.5" and info.cost < parent.cost()
    prov = info.provenance
    assert prov["residual_chroma_from"] == "tiny_searched" and prov["residual_chroma_from_digest"] == parent.digest()
    assert prov["residual_chroma"]["eps"] == 1e-2 and prov["residual_chroma"]["prior"] == 0.5 and prov["seed"] == 5 and prov["full_train_val_psnr"] == 31.0
    assert prov["command"].startswith("rawdemosaic search residual-chroma tiny_searched --models {reg} --radius 1 --eps 0.01 --prior 0.5 --steps ".format(reg=reg))
    assert "residual interpolation" in info.description
    assert info.program().domain == parent.domain
    out = demosaic(_mosaic((24, 32)), "BGGR", kernel=info.name, models=reg)
    assert out.shape == (24, 32, 3) and np.isfinite(out).all()
    # kept and reused, and refused when it is another program
    again = residual_chroma_entry("tiny_searched", eps=1e-2, prior=0.5, models=reg, trained_dir=tdir, sets=["kodak24"], limit=1, quiet=True)
    assert again.name == info.name
    with pytest.raises(ValueError, match="another program"):
        residual_chroma_entry("tiny_searched", eps=1e-2, prior=0.5, radius=2, name=info.name, models=reg, trained_dir=tdir, sets=["kodak24"], limit=1, quiet=True)
    # the recorded command rebuilds the same program: eps and prior exactly, the registries as given
    exact = residual_chroma_entry("tiny_searched", eps=1.2345678e-4, prior=1 / 3, models=reg, trainer=fake_trainer, sets=["kodak24"], limit=1, quiet=True)
    assert "--eps 0.00012345678 --prior 0.3333333333333333 " in exact.provenance["command"] and exact.name == "tiny_searched_rc_e0.00012345678_p0.3333333333333333"
    # command-line errors: one line, exit 2
    assert main(["residual-chroma", "nope", "--models", str(reg)]) == 2
    assert main(["residual-chroma", "tiny_searched", "--radius", "0", "--models", str(reg)]) == 2
    assert main(["residual-chroma", "tiny_searched", "--eps", "nan", "--models", str(reg)]) == 2
    assert main(["residual-chroma", "tiny_searched", "--eps", "1e-50", "--models", str(reg)]) == 2  # zero in float32


def test_xtrans_entries_are_refused_before_training(tmp_path):
    from rawdemosaic.registry import add_entry
    from rawdemosaic.search.cli import config_path, residual_chroma_entry

    prog = residual_net("xtrans", width=4, depth=1, chroma_width=4, seed=0)
    prog = Program("tiny_x", CFA.XTRANS, prog.nodes, prog.output, prog.weights)
    reg = tmp_path / "models"
    add_entry(prog, reg, {"kodak24": 30.0, "mcmaster18": 30.0}, provenance={"seed": 1, "config": config_path("smoke").read_text()})

    def never(*a):
        raise AssertionError("trained")

    with pytest.raises(ProgramError, match="Bayer"):
        residual_chroma_entry("tiny_x", models=reg, trainer=never, quiet=True)


def test_the_search_takes_residual_chroma_programs():
    # seeds of search/configs/bayer_rc.toml: prune keeps them (the prediction rule is ChromaInsert's) and
    # mutations of either part give valid programs (chroma-part nodes sit between green and the op)
    from rawdemosaic.search import space as S

    rc = with_residual_chroma(residual_net("bayer", width=8, depth=2, chroma_width=6, seed=4), name="rc")
    sp = S.SpaceConfig(cfa="bayer", mode="joint", min_cost=1.0)
    assert S.prune(rc, sp) is None
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(12):
        child, kind = S.mutate(rc, rng, sp)
        child.shapes()
        assert child.node(child.output).op == "ResidualChroma"
        kinds.add(kind)
    assert len(kinds) > 1


def test_composition_and_green_swap_keep_the_residual_chroma():
    # chroma mode composes a pool's green part with a program's chroma part: the op (and a guide node) stays
    from rawdemosaic.program.graph import Node
    from rawdemosaic.search import space as S

    rc = with_residual_chroma(residual_net("bayer", width=8, depth=2, chroma_width=6, seed=4), name="rc")
    other = residual_net("bayer", width=4, depth=1, chroma_width=4, seed=1)
    both = S.compose(other, rc)
    assert both.node("rgb").op == "ResidualChroma" and both.node("rgb").inputs == ("mosaic", "green")
    assert {k for k in both.weights if k.startswith("g_")} == {k for k in other.weights if k.startswith("g_")}
    guided = Program("guided", rc.cfa, rc.nodes[:-1] + (Node("c_m1", "Conv1x1", ("green",), {"out_channels": 1}), Node("rgb", "ResidualChroma", ("mosaic", "c_m1"))),
                     "rgb", {**rc.weights, "c_m1.weight": np.ones((1, 1), np.float32), "c_m1.bias": np.zeros(1, np.float32)})
    assert S.compose(other, guided).node("rgb").inputs == ("mosaic", "c_m1")
    sp = S.SpaceConfig(cfa="bayer", mode="chroma", min_cost=1.0, green_pool=[other])
    child, kind = S.mutate(rc, np.random.default_rng(0), sp, kind="green_swap")
    assert kind == "green_swap" and child.node("rgb").op == "ResidualChroma"


def test_a_softmax_of_one_channel_is_pruned():
    # inserted on the op's one-channel guide it would make the output's green a constant 1
    from rawdemosaic.program.graph import Node
    from rawdemosaic.search import space as S

    rc = with_residual_chroma(residual_net("bayer", width=8, depth=2, chroma_width=6, seed=4), name="rc")
    soft = Program("soft", rc.cfa, rc.nodes[:-1] + (Node("c_m1", "Softmax", ("green",)), Node("rgb", "ResidualChroma", ("mosaic", "c_m1"))), "rgb", rc.weights)
    assert "Softmax of one channel" in S.prune(soft, S.SpaceConfig(cfa="bayer", mode="joint", min_cost=1.0))


def test_a_chroma_refinement_starts_as_its_parent_and_learns_a_correction():
    rc = with_residual_chroma(residual_net("bayer", width=8, depth=2, chroma_width=6, seed=4), name="rc")
    ref = with_chroma_refinement(rc, width=6, seed=1)
    assert ref.node(ref.output).op == "ChromaInsert" and ref.node("c_rc").op == "ResidualChroma"
    assert ref.meta["chroma_refinement"]["width"] == 6 and ref.node(ref.meta["chroma_refinement"]["features"]).op == "ReLU"
    m = _mosaic((40, 48))
    # the correction starts at zero: the parent's function and cost (zero weights are not counted)
    np.testing.assert_allclose(run_reference(ref, m), run_reference(rc, m), rtol=0, atol=1e-6)
    costs, new = ref.node_costs(), set(ref.node_costs()) - set(rc.node_costs())
    assert costs["c_corr"] == 0 and costs["c_h"] > 0
    assert ref.cost() == pytest.approx(rc.cost() + sum(costs[k] for k in new) + costs["rgb"] - rc.node_costs()["rgb"])
    # a non-zero correction moves red and blue where they are not sampled, never green or the samples
    w = dict(ref.weights)
    w["c_corr.bias"] = np.full_like(w["c_corr.bias"], 0.05)
    moved = Program("moved", ref.cfa, ref.nodes, ref.output, w, ref.meta)
    a, b = run_reference(ref, m), run_reference(moved, m)
    cmap = CFA.BAYER.canonical[np.arange(40)[:, None] % 2, np.arange(48)[None] % 2]
    assert np.array_equal(a[..., 1], b[..., 1])
    for c in (0, 2):
        np.testing.assert_allclose((b - a)[..., c][cmap != c], 0.05, atol=1e-5)
        assert np.array_equal(a[..., c][cmap == c], b[..., c][cmap == c])
    assert moved.cost() > ref.cost()
    with pytest.raises(ProgramError, match="not a ResidualChroma"):
        with_chroma_refinement(residual_net("bayer", width=4, depth=1, chroma_width=4, seed=0))
    with pytest.raises(ProgramError, match="already has chroma nodes"):
        with_chroma_refinement(Program("again", ref.cfa, ref.nodes[:-1] + (ref.node("c_rc").__class__("rgb2", "ResidualChroma", ref.node("c_rc").inputs, {}),), "rgb2", ref.weights))


def test_refine_chroma_entry_fine_tunes_and_records_provenance(tmp_path):
    from rawdemosaic import demosaic
    from rawdemosaic.search.cli import main, refine_chroma_entry, residual_chroma_entry

    reg, parent = _searched_registry(tmp_path)

    def fake_trainer(program, seed, init_from):
        w = dict(program.weights)
        w["c_corr.weight"] = w["c_corr.weight"] + 0.01 if "c_corr.weight" in w else None
        return Program(program.name, program.cfa, program.nodes, program.output, {k: v for k, v in w.items() if v is not None}, program.meta), 31.0

    rc = residual_chroma_entry("tiny_searched", models=reg, trainer=lambda p, s, i: (p, 30.0), sets=["kodak24"], limit=1, quiet=True)
    info = refine_chroma_entry(rc.name, 4, models=reg, trainer=fake_trainer, sets=["kodak24"], limit=1, quiet=True)
    assert info.name == f"{rc.name}_cr4" and info.cost > rc.cost
    prov = info.provenance
    assert prov["chroma_refined_from"] == rc.name and prov["chroma_refinement"]["width"] == 4 and prov["residual_chroma_from"] == "tiny_searched"
    assert prov["command"].startswith(f"rawdemosaic search refine-chroma {rc.name} --models {reg} --width 4 --steps ")
    out = demosaic(_mosaic((24, 32)), "GBRG", kernel=info.name, models=reg)
    assert out.shape == (24, 32, 3) and np.isfinite(out).all()
    # errors: one line, exit 2
    assert main(["refine-chroma", "tiny_searched", "--models", str(reg)]) == 2  # a learned chroma, not a residual one
    assert main(["refine-chroma", rc.name, "--width", "0", "--models", str(reg)]) == 2
