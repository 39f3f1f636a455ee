"""Folding chains of affine convolutions (search/fold.py, ``rawdemosaic search fold``): same function, lower cost."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

pytest.importorskip("torch")

from rawdemosaic.cfa import CFA  # noqa: E402
from rawdemosaic.errors import ProgramError  # noqa: E402
from rawdemosaic.program.graph import Node, Program  # noqa: E402
from rawdemosaic.program.reference import run_reference  # noqa: E402
from rawdemosaic.search.fold import deployed, expand_linear, fold_linear, foldable_pairs  # noqa: E402
from rawdemosaic.search.space import _build, _default_chroma_nodes  # noqa: E402

from .test_channels import _mosaic  # noqa: E402


def _green(first: dict, *middle: tuple[str, dict], pp: int = 4) -> list[Node]:
    """Pack -> first convolution (``g_c``) -> the ``middle`` 1x1 layers -> ReLU -> 3x3 to the ``pp`` packed greens."""
    nodes = [Node("g_pack", "Pack", ("mosaic",)), Node("g_c", first.pop("op", "Conv2D"), ("g_pack",), first)]
    prev = "g_c"
    for nid, p in middle:
        nodes.append(Node(nid, "Conv1x1", (prev,), p))
        prev = nid
    nodes += [Node("g_r", "ReLU", (prev,)), Node("g_out", "Conv2D", ("g_r",), {"out_channels": pp})]
    return nodes


def _prog(cfa: str, green: list[Node], seed: int = 0) -> Program:
    return _build("chain", CFA(cfa), green, _default_chroma_nodes(CFA(cfa)), np.random.default_rng(seed))


def _same(a: Program, b: Program, cfa: str) -> None:
    m = _mosaic((24, 30) if cfa == "xtrans" else (22, 26))
    np.testing.assert_allclose(run_reference(a, m), run_reference(b, m), rtol=0, atol=2e-5)


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
@pytest.mark.parametrize(
    "first",
    [
        {"out_channels": 12},
        {"out_channels": 12, "kernel": 5, "dilation": 2, "bias": False},
        {"op": "Conv1D", "out_channels": 12, "axis": "y", "kernel": 5},
        {"op": "Conv1x1", "out_channels": 12},
    ],
)
def test_a_convolution_read_only_by_a_pointwise_one_folds_into_one_layer(cfa, first):
    prog = _prog(cfa, _green(dict(first), ("g_m", {"out_channels": 6}), pp=CFA(cfa).period ** 2))
    folded = fold_linear(prog, name="f")
    assert folded.name == "f" and folded.meta["folded"] == [["g_c", "g_m"]]
    node = folded.node("g_m")
    assert node.op == first.get("op", "Conv2D") and node.inputs == ("g_pack",) and folded.shapes()["g_m"].channels == 6
    assert all(n.id != "g_c" for n in folded.nodes)
    assert folded.cost() < prog.cost()
    _same(prog, folded, cfa)


def test_chains_fold_repeatedly_and_groups_and_missing_biases_carry_over():
    # 8 -> 8 -> 8 in two groups each: the folded layer is still block-diagonal (2 groups); no bias anywhere
    green = _green({"out_channels": 8, "groups": 2, "bias": False}, ("g_m", {"out_channels": 8, "groups": 2, "bias": False}), ("g_m2", {"out_channels": 8, "groups": 2, "bias": False}))
    green[1] = Node("g_c", "Conv2D", ("g_pack",), {"out_channels": 8, "groups": 2, "bias": False})
    prog = _prog("bayer", green, seed=1)
    folded = fold_linear(prog)
    assert folded.meta["folded"] == [["g_c", "g_m"], ["g_m", "g_m2"]]
    p = folded.params(folded.node("g_m2"))
    assert p["groups"] == 2 and p["bias"] is False and "g_m2.bias" not in folded.weights
    assert folded.weights["g_m2.weight"].shape == (8, 2, 3, 3)
    _same(prog, folded, "bayer")


def test_chains_that_would_cost_more_folded_or_feed_two_readers_are_left_alone():
    # a grouped 3x3 (4 -> 8 in 4 groups: 8 x 9 weights) and a dense 1x1 (8 x 8): one dense 3x3 would be 8 x 4 x 9
    grouped = _green({"out_channels": 8, "groups": 4}, ("g_m", {"out_channels": 8}))
    prog = _prog("bayer", grouped)
    assert foldable_pairs(prog) == [("g_c", "g_m")]
    with pytest.raises(ProgramError, match="no chain"):
        fold_linear(prog)
    # a per-channel 1x1 (8 groups of 1) folds into the 3x3 before it, and then the dense 1x1 after it does too
    chain = _green({"out_channels": 8}, ("g_s", {"out_channels": 8, "groups": 8}), ("g_m", {"out_channels": 8}))
    prog = _prog("bayer", chain)
    folded = fold_linear(prog)
    assert folded.meta["folded"] == [["g_c", "g_s"], ["g_s", "g_m"]] and foldable_pairs(folded) == []
    _same(prog, folded, "bayer")
    # g_c also feeds the ReLU: folding it away would change what that reads
    two = [Node("g_pack", "Pack", ("mosaic",)), Node("g_c", "Conv2D", ("g_pack",), {"out_channels": 4}), Node("g_m", "Conv1x1", ("g_c",), {"out_channels": 4}),
           Node("g_a", "Add", ("g_c", "g_m")), Node("g_out", "Conv2D", ("g_a",), {"out_channels": 4})]
    prog = _prog("bayer", two)
    assert foldable_pairs(prog) == []
    with pytest.raises(ProgramError, match="no chain"):
        fold_linear(prog)
    # a self-ensemble averages the folded graph
    ens = _prog("bayer", _green({"out_channels": 8}, ("g_m", {"out_channels": 8}))).with_ensemble(2)
    folded = fold_linear(ens)
    assert folded.ensemble == 2 and folded.cost() < ens.cost() and deployed(ens).cost() == folded.cost()
    _same(ens, folded, "bayer")
    assert deployed(prog) is prog  # nothing folds: the program itself


def test_fold_entry_adds_the_folded_entry_and_the_front_drops_the_parent(tmp_path):
    from rawdemosaic import demosaic
    from rawdemosaic.registry import add_entry, kernels
    from rawdemosaic.search.cli import config_path, fold_entry, main

    prog = _prog("bayer", _green({"out_channels": 12}, ("g_m", {"out_channels": 8})), seed=2)
    prog = Program("tiny_chain", prog.cfa, prog.nodes, prog.output, prog.weights).with_domain("srgb")
    reg = tmp_path / "models"
    prov = {"source": "rawdemosaic.search", "run": "runs/x", "seed": 5, "config": config_path("smoke").read_text(), "candidate": 3, "command": "rawdemosaic search export runs/x"}
    from rawdemosaic.search.export import measure_quality

    add_entry(prog, reg, measure_quality(prog, ["kodak24", "mcmaster18"], validation=False), description="searched bayer program", provenance=prov)
    info = fold_entry("tiny_chain", models=reg, sets=["kodak24"], limit=1, quiet=True)
    assert info.name == "tiny_chain_f" and info.cost < prog.cost() and "folded" in info.description
    p = info.provenance
    assert p["folded_from"] == "tiny_chain" and p["folded_from_digest"] == prog.digest() and p["folded"] == [["g_c", "g_m"]]
    assert p["seed"] == 5 and p["run"] == "runs/x" and p["folded_from_command"] == "rawdemosaic search export runs/x"
    assert p["command"] == f"rawdemosaic search fold tiny_chain --models {reg} --sets kodak24 --limit 1" and p["digest"] == info.program().digest()
    m = _mosaic((24, 32))
    np.testing.assert_allclose(demosaic(m, "RGGB", kernel=info.name, models=reg), demosaic(m, "RGGB", kernel="tiny_chain", models=reg), rtol=0, atol=2e-5)
    # measured on the sets the front ranks by, as good as the parent (same function) at a lower cost: the parent is dropped
    full = fold_entry("tiny_chain", models=reg, name="tiny_chain_full", sets=["kodak24", "mcmaster18"], quiet=True)
    assert full is not None and {k.name for k in kernels("bayer", models=reg, plugins=False)} >= {"tiny_chain_full"}
    assert "tiny_chain" not in {k.name for k in kernels("bayer", models=reg, plugins=False)}
    # command-line errors: one line, exit 2
    assert main(["fold", "nope", "--models", str(reg)]) == 2
    assert main(["fold", "tiny_chain_full", "--models", str(reg)]) == 2  # nothing left to fold


def test_the_search_ranks_and_the_registry_stores_programs_folded(tmp_path):
    from rawdemosaic.search.export import export_entry
    from rawdemosaic.search.space import SpaceConfig, part_cost

    prog = _prog("bayer", _green({"out_channels": 16}, ("g_m", {"out_channels": 8})), seed=3)
    folded = fold_linear(prog)
    assert SpaceConfig(cfa="bayer", mode="joint").cost(prog) == folded.cost() < prog.cost()
    assert SpaceConfig(cfa="bayer", mode="green").cost(prog) == part_cost(folded, "g") < part_cost(prog, "g")
    info = export_entry(prog, {"run": "runs/x"}, tmp_path / "models", quality={"kodak24": 30.0, "mcmaster18": 30.0})
    stored = info.program()
    assert info.cost == folded.cost() and info.provenance["folded"] == [["g_c", "g_m"]] and info.provenance["digest"] == stored.digest()
    assert stored.name == prog.name and not any(n.id == "g_c" for n in stored.nodes)
    _same(prog, stored, "bayer")


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
def test_an_expanded_program_computes_the_same_and_folds_back_to_its_cost(cfa):
    from rawdemosaic.search.space import residual_net

    prog = residual_net(cfa, width=8, depth=2, chroma_width=6, seed=5)
    wide = expand_linear(prog, {"g_c0": 20, "c_c0": 12}, seed=1)
    assert wide.meta["expanded"] == {"g_c0": 20, "c_c0": 12} and wide.cost() > prog.cost()
    assert expand_linear(expand_linear(prog, {"g_c0": 20}), {"c_c0": 12}).meta["expanded"] == {"g_c0": 20, "c_c0": 12}  # expansions add up
    assert wide.node("g_c0").op == "Conv1x1" and wide.node("g_c0").inputs == ("g_c0_wide",) and wide.shapes()["g_c0_wide"].channels == 20
    _same(prog, wide, cfa)
    back = deployed(wide)
    assert back.cost() == prog.cost() and sorted(back.meta["folded"]) == [["c_c0_wide", "c_c0"], ["g_c0_wide", "g_c0"]]
    _same(prog, back, cfa)
    # once the wide layers have trained (here: perturbed), the folded program still computes what they do
    rng = np.random.default_rng(2)
    moved = Program(wide.name, wide.cfa, wide.nodes, wide.output, {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for k, v in wide.weights.items()}, wide.meta)
    assert deployed(moved).cost() <= prog.cost() + 1e-9
    _same(moved, deployed(moved), cfa)


def test_expansion_refusals_name_the_node():
    from rawdemosaic.search.space import residual_net

    prog = residual_net("bayer", width=8, depth=1, chroma_width=4, seed=0)
    with pytest.raises(ProgramError, match="cannot expand it to 4"):
        expand_linear(prog, {"g_c0": 4})
    with pytest.raises(ProgramError, match="'g_r0' is not an ungrouped convolution"):
        expand_linear(prog, {"g_r0": 16})
    with pytest.raises(ProgramError, match="no node"):
        expand_linear(prog, {"nope": 16})
    sparse = dict(prog.weights)
    sparse["g_c0.weight"] = np.where(np.arange(sparse["g_c0.weight"].size).reshape(sparse["g_c0.weight"].shape) % 2, sparse["g_c0.weight"], 0).astype(np.float32)
    with pytest.raises(ProgramError, match="'g_c0' has pruned"):
        expand_linear(Program(prog.name, prog.cfa, prog.nodes, prog.output, sparse, prog.meta), {"g_c0": 16})


def test_dead_nodes_reading_a_folded_node_are_dropped():
    # g_dead reads g_c, which folding removes; nothing reads g_dead, so the folded program drops it
    chain = _green({"out_channels": 8}, ("g_m", {"out_channels": 8}))
    chain.insert(2, Node("g_dead", "ReLU", ("g_c",)))
    prog = _prog("bayer", chain)
    assert "g_dead" in {n.id for n in prog.nodes} - {n.id for n in prog.live_nodes()}
    folded = fold_linear(prog)
    assert folded.meta["folded"] == [["g_c", "g_m"]] and "g_dead" not in {n.id for n in folded.nodes}
    assert deployed(prog).cost() == folded.cost() < prog.cost()
    _same(prog, folded, "bayer")


def test_expand_entry_trains_wide_and_writes_the_entry_folded(tmp_path):
    from rawdemosaic.search.cli import expand_entry, main

    from .test_channels import _searched_registry

    reg, parent = _searched_registry(tmp_path)
    calls = []

    def fake_trainer(program, seed, init_from):
        calls.append(program)
        return program, 31.0

    info = expand_entry("tiny_searched", {"g_c0": 16}, models=reg, trainer=fake_trainer, sets=["kodak24"], limit=1, overrides={"lr": 1e-3}, quiet=True)
    assert len(calls) == 1 and calls[0].shapes()["g_c0_wide"].channels == 16
    assert info.name == "tiny_searched_w" and info.cost == parent.cost() and "over-parameterised" in info.description
    p = info.provenance
    assert p["expanded_from"] == "tiny_searched" and p["expanded"] == {"g_c0": 16} and p["folded"] == [["g_c0_wide", "g_c0"]]
    assert p["command"].startswith(f"rawdemosaic search expand tiny_searched --models {reg} --wide g_c0=16 --steps ") and p["command"].endswith("--set lr=0.001")
    assert not any(n.id.endswith("_wide") for n in info.program().nodes)
    assert main(["expand", "tiny_searched", "--wide", "g_c0=4", "--models", str(reg)]) == 2  # narrower than it is
    assert main(["expand", "tiny_searched", "--wide", "g_c0", "--models", str(reg)]) == 2


def test_ensemble_entry_adds_the_reflection_average_of_an_entry(tmp_path):
    from rawdemosaic import demosaic
    from rawdemosaic.program.reference import run_reference as ref
    from rawdemosaic.registry import add_entry, load_registry
    from rawdemosaic.search.cli import config_path, ensemble_entry, main

    prog = _prog("bayer", _green({"out_channels": 8}), seed=4)
    prog = Program("tiny", prog.cfa, prog.nodes, prog.output, prog.weights).with_domain("linear")  # demosaic() feeds it as is
    reg = tmp_path / "my models"  # a space: the recorded command quotes it
    prov = {"source": "rawdemosaic.search", "run": "runs/x", "seed": 5, "config": config_path("smoke").read_text(), "pruned_from": "big", "command": "rawdemosaic search prune big --keep g_c=8 --steps 7"}
    add_entry(prog, reg, {"kodak24": 20.0, "mcmaster18": 20.0}, description="searched bayer program", provenance=prov)
    info = ensemble_entry("tiny", 2, models=reg, sets=["kodak24"], limit=1, quiet=True)
    assert info.name == "tiny_x2" and info.cost == 2 * prog.cost() + 6 and "self-ensemble of 2" in info.description
    p = info.provenance
    assert p["ensemble_of"] == "tiny" and p["ensemble"] == 2 and p["ensemble_of_digest"] == prog.digest() and p["seed"] == 5
    assert p["ensemble_of_command"] == prov["command"]
    assert shlex.split(p["command"]) == ["rawdemosaic", "search", "ensemble", "tiny", "--models", str(reg), "--n", "2", "--sets", "kodak24", "--limit", "1"]
    assert p["pruned_from"] == "big" and p["digest"] == info.program().digest()
    m = _mosaic((24, 32))
    # the kernel is the parent's graph averaged over reflections of the mosaic, not the parent itself
    out = demosaic(m, "RGGB", kernel="tiny_x2", models=reg)
    np.testing.assert_allclose(out, ref(prog.with_ensemble(2), m), rtol=0, atol=2e-5)
    assert np.abs(out - ref(prog, m)).max() > 1e-3
    assert main(["ensemble", "tiny_x2", "--models", str(reg), "--limit", "1", "--sets", "kodak24"]) == 2  # already an ensemble
    assert main(["ensemble", "nope", "--models", str(reg)]) == 2
    # a name that would replace the parent, or leave the registry directory: refused before anything is written
    before = sorted(f.name for f in reg.iterdir())
    assert main(["ensemble", "tiny", "--name", "tiny", "--models", str(reg), "--limit", "1", "--sets", "kodak24"]) == 2
    assert main(["ensemble", "tiny", "--name", "../escaped", "--models", str(reg), "--limit", "1", "--sets", "kodak24"]) == 2
    assert sorted(f.name for f in reg.iterdir()) == before and not (tmp_path / "escaped.json").exists()
    assert {e.name: e.quality for e in load_registry(reg)}["tiny"] == {"kodak24": 20.0, "mcmaster18": 20.0}
    with pytest.raises(SystemExit):
        main(["ensemble", "tiny", "--n", "3", "--models", str(reg)])


def test_limited_quality_keeps_set_names_with_underscores():
    from rawdemosaic.search.cli import _limited_quality

    prog = _prog("bayer", _green({"out_channels": 4}), seed=1).with_domain("srgb")
    img = np.random.default_rng(0).random((48, 48, 3)).astype(np.float32)
    q = _limited_quality(prog, ["set_a", "set_b"], 1, images={"set_a": [img], "set_b": [img[::-1].copy()]})
    assert set(q) == {"set_a@1", "set_a@1_linear", "set_b@1", "set_b@1_linear"}
