"""Channel pruning: the channels removed are the ones nothing reads, the graph stays consistent, refusals."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

pytest.importorskip("torch")

from rawdemosaic.cfa import CFA  # noqa: E402
from rawdemosaic.errors import ProgramError  # noqa: E402
from rawdemosaic.program.graph import Node, Program  # noqa: E402
from rawdemosaic.program.reference import run_reference  # noqa: E402
from rawdemosaic.search.channels import channel_importance, prune_channels  # noqa: E402
from rawdemosaic.search.space import _build, _default_chroma_nodes, residual_net  # noqa: E402


def _silence(prog: Program, nid: str, channels: list[int], readers: dict[str, int]) -> Program:
    """Zero the weights that read ``channels`` of ``nid`` (``readers``: reader node -> channel offset)."""
    w = dict(prog.weights)
    for r, off in readers.items():
        rw = w[f"{r}.weight"].copy()
        rw[:, [off + c for c in channels]] = 0
        w[f"{r}.weight"] = rw
    return Program(prog.name, prog.cfa, prog.nodes, prog.output, w, dict(prog.meta))


def _mosaic(shape=(22, 26)) -> np.ndarray:
    return np.random.default_rng(3).random(shape, dtype=np.float32)


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
def test_channels_nothing_reads_are_the_ones_pruned_and_the_output_is_unchanged(cfa):
    # g_c1 feeds g_res through a ReLU and c_c0 through a ReLU and a Stack (after the 4 or 9 c_d channels)
    prog = residual_net(cfa, width=8, depth=2, chroma_width=6, seed=1)
    pp = CFA(cfa).period ** 2
    dead_g, dead_c = [1, 4, 6], [0, 5]
    prog = _silence(prog, "g_c1", dead_g, {"g_res": 0, "c_c0": pp})
    prog = _silence(prog, "c_c0", dead_c, {"c_res": 0})
    assert np.count_nonzero(channel_importance(prog, "g_c1")) == 8 - len(dead_g)
    pruned = prune_channels(prog, {"g_c1": 5, "c_c0": 4}, name="narrow")
    assert pruned.name == "narrow" and pruned.shapes()["g_c1"].channels == 5 and pruned.shapes()["c_c0"].channels == 4
    assert pruned.meta["pruned"] == {"g_c1": [0, 2, 3, 5, 7], "c_c0": [1, 2, 3, 4]}
    assert pruned.weights["c_c0.weight"].shape[1] == pp + 5 and pruned.weights["g_res.weight"].shape[1] == 5
    # each removed g_c1 channel took 8*9 + 1 weights and bias, and a 3x3 tap from g_res (gp outputs) and
    # c_c0 (6 outputs); counted cost is per full-resolution pixel
    assert pruned.cost() < prog.cost()
    m = _mosaic((24, 30) if cfa == "xtrans" else (22, 26))
    np.testing.assert_allclose(run_reference(pruned, m), run_reference(prog, m), rtol=0, atol=1e-5)


def test_downsample_and_upsample_are_followed():
    rng = np.random.default_rng(0)
    green = [
        Node("g_pack", "Pack", ("mosaic",)),
        Node("g_c0", "Conv2D", ("g_pack",), {"out_channels": 8}),
        Node("g_d", "Downsample", ("g_c0",), {"factor": 2, "out_channels": 6}),
        Node("g_u", "Upsample", ("g_d",), {"factor": 2}),
        Node("g_r", "ReLU", ("g_u",)),
        Node("g_out", "Conv2D", ("g_r",), {"out_channels": 4}),
    ]
    prog = _build("ds", CFA.BAYER, green, _default_chroma_nodes(CFA.BAYER), rng)
    prog = _silence(prog, "g_d", [2, 3], {"g_out": 0})
    prog = _silence(prog, "g_c0", [7], {"g_d": 0})
    pruned = prune_channels(prog, {"g_d": 4, "g_c0": 7})
    assert pruned.weights["g_d.weight"].shape == (4, 7, 2, 2) and pruned.weights["g_out.weight"].shape[1] == 4
    m = _mosaic((20, 28))
    np.testing.assert_allclose(run_reference(pruned, m), run_reference(prog, m), rtol=0, atol=1e-5)


def test_pruning_ranks_on_the_program_pruned_so_far_and_keeps_the_strongest():
    prog = residual_net("bayer", width=6, depth=2, chroma_width=4, seed=2)
    score = channel_importance(prog, "g_c1")
    pruned = prune_channels(prog, {"g_c1": 3})
    assert sorted(pruned.meta["pruned"]["g_c1"]) == sorted(np.argsort(-score)[:3].tolist())
    again = prune_channels(pruned, {"c_c0": 2})
    assert set(again.meta["pruned"]) == {"g_c1", "c_c0"}  # the record accumulates


@pytest.mark.parametrize(
    "keep, message",
    [
        ({"g_out": 2}, "Add"),  # the green prediction is summed with the linear path
        ({"g_r0": 2}, "ReLU"),  # not a convolution
        ({"g_c0": 0}, "cannot keep 0"),
        ({"g_c0": 9}, "cannot keep 9"),
        ({"nope": 2}, "no node"),
    ],
)
def test_refusals_name_the_node_and_the_reason(keep, message):
    prog = residual_net("bayer", width=8, depth=1, chroma_width=4, seed=0)
    with pytest.raises(ProgramError, match=message):
        prune_channels(prog, keep)


def test_grouped_convolutions_are_refused():
    prog = residual_net("bayer", width=8, depth=2, chroma_width=4, seed=0)
    nodes = tuple(Node(n.id, n.op, n.inputs, {**n.params, "groups": 2}) if n.id == "g_c1" else n for n in prog.nodes)
    w = dict(prog.weights)
    w["g_c1.weight"] = w["g_c1.weight"][:, :4]
    grouped = Program(prog.name, prog.cfa, nodes, prog.output, w)
    with pytest.raises(ProgramError, match="grouped"):
        prune_channels(grouped, {"g_c1": 4})


def test_grouped_readers_lose_channels_evenly():
    # g_c0 (8 channels) is read by a 2-group convolution (like c333's green): channels 1 and 6 read by
    # nothing go, one from each group, the output is unchanged and the grouped weights narrow per group
    rng = np.random.default_rng(2)
    nodes = (
        Node("mosaic", "Input"), Node("g_pack", "Pack", ("mosaic",)),
        Node("g_c0", "Conv2D", ("g_pack",), {"out_channels": 8}), Node("g_r0", "ReLU", ("g_c0",)),
        Node("g_res", "Conv2D", ("g_r0",), {"out_channels": 4, "groups": 2}), Node("g_out", "Add", ("g_pack", "g_res")),
        Node("green", "GreenInsert", ("mosaic", "g_out")), Node("rgb", "ResidualChroma", ("mosaic", "green")),
    )
    w = {"g_c0.weight": rng.standard_normal((8, 4, 3, 3)), "g_c0.bias": rng.standard_normal(8),
         "g_res.weight": rng.standard_normal((4, 4, 3, 3)), "g_res.bias": rng.standard_normal(4)}
    w["g_res.weight"][0:2, 1] = 0  # channel 1: column 1 of group 0's outputs
    w["g_res.weight"][2:4, 2] = 0  # channel 6: column 2 of group 1's outputs
    prog = Program("grp", CFA.BAYER, nodes, "rgb", {k: v.astype(np.float32) for k, v in w.items()})
    assert np.flatnonzero(channel_importance(prog, "g_c0") == 0).tolist() == [1, 6]
    with pytest.raises(ProgramError, match="multiple of 2"):
        prune_channels(prog, {"g_c0": 5})
    pruned = prune_channels(prog, {"g_c0": 6})
    assert pruned.meta["pruned"] == {"g_c0": [0, 2, 3, 4, 5, 7]} and pruned.weights["g_res.weight"].shape == (4, 3, 3, 3)
    m = _mosaic((24, 28))
    np.testing.assert_allclose(run_reference(pruned, m), run_reference(prog, m), rtol=0, atol=1e-5)
    # the most important channels of each group are kept, never all from one group
    four = prune_channels(prog, {"g_c0": 4}).meta["pruned"]["g_c0"]
    assert sum(c < 4 for c in four) == 2


def _searched_registry(tmp_path):
    from rawdemosaic.registry import add_entry
    from rawdemosaic.search.cli import config_path

    prog = residual_net("bayer", width=8, depth=2, chroma_width=6, seed=4)
    prog = Program("tiny_searched", prog.cfa, prog.nodes, prog.output, prog.weights).with_domain("srgb")
    reg = tmp_path / "models"
    prov = {"source": "rawdemosaic.search", "run": "runs/x", "seed": 5, "config": config_path("smoke").read_text(), "candidate": 3}
    add_entry(prog, reg, {"kodak24": 30.0, "mcmaster18": 30.0}, description="searched bayer program", provenance=prov)
    return reg, prog


def test_prune_entry_fine_tunes_with_the_run_config_and_records_provenance(tmp_path):
    from rawdemosaic import demosaic
    from rawdemosaic.registry import kernels
    from rawdemosaic.search.cli import main, prune_entry

    reg, parent = _searched_registry(tmp_path)
    calls = []

    def fake_trainer(program, seed, init_from):
        calls.append((program, seed))
        return program, 31.5

    tdir = tmp_path / "trained"
    tdir.mkdir()
    info = prune_entry("tiny_searched", {"c_c0": 4, "g_c1": 6}, models=reg, trainer=fake_trainer, trained_dir=tdir, sets=["kodak24"], limit=1, overrides={"lr": 1e-3}, quiet=True)
    assert len(calls) == 1 and calls[0][0].shapes()["c_c0"].channels == 4
    assert info.name == f"tiny_searched_p{int(round(calls[0][0].cost()))}" and info.cost < parent.cost()
    prov = info.provenance
    assert prov["pruned_from"] == "tiny_searched" and prov["pruned_from_digest"] == parent.digest()
    assert prov["keep"] == {"c_c0": 4, "g_c1": 6} and set(prov["kept_channels"]) == {"c_c0", "g_c1"}
    assert prov["seed"] == 5 and prov["run"] == "runs/x" and "[search]" in prov["config"]
    assert prov["finetune"]["lr"] == 1e-3 and prov["full_train_val_psnr"] == 31.5
    assert prov["command"].startswith(f"rawdemosaic search prune tiny_searched --models {reg} --keep c_c0=4 g_c1=6 --steps ") and prov["command"].endswith("--set lr=0.001")
    # the recorded command parses back to what made the entry (sets, limit and overrides included)
    from rawdemosaic.search.cli import _parser, parse_overrides

    args = _parser().parse_args(shlex.split(prov["command"])[2:])
    assert (args.entry, args.keep, args.sets, args.limit, parse_overrides(args.overrides)) == ("tiny_searched", ["c_c0=4", "g_c1=6"], ["kodak24"], 1, {"lr": 1e-3})
    assert "channels pruned (c_c0 4, g_c1 6)" in info.description
    assert set(info.quality) == {"kodak24@1", "kodak24@1_linear"}
    out = demosaic(_mosaic((24, 32)), "GRBG", kernel=info.name, models=reg)
    assert out.shape == (24, 32, 3) and np.isfinite(out).all()
    # the fine-tuned program is kept and reused: no second training
    assert (tdir / f"{info.name}.json").exists()
    again = prune_entry("tiny_searched", {"c_c0": 4, "g_c1": 6}, models=reg, trainer=None, trained_dir=tdir, sets=["kodak24"], limit=1, overrides={"lr": 1e-3}, quiet=True)
    assert again.name == info.name
    with pytest.raises(ValueError, match="fine-tuned with"):  # the kept program is not what this command asks for
        prune_entry("tiny_searched", {"c_c0": 4, "g_c1": 6}, models=reg, trained_dir=tdir, steps=7, sets=["kodak24"], limit=1, overrides={"lr": 1e-3}, quiet=True)
    assert {e.name for e in kernels("bayer", models=reg, plugins=False)} >= {"tiny_searched", info.name}
    # errors: one line, exit 2
    assert main(["prune", "nope", "--keep", "c_c0=4", "--models", str(reg)]) == 2
    assert main(["prune", "tiny_searched", "--keep", "c_c0", "--models", str(reg)]) == 2
    assert main(["prune", "tiny_searched", "--keep", "g_out=2", "--models", str(reg), "--trained", str(tdir), "--train-only"]) == 2


def test_prune_entry_refuses_entries_without_a_search_config(tmp_path):
    from rawdemosaic.program.classical import bayer_bilinear
    from rawdemosaic.registry import add_entry
    from rawdemosaic.search.cli import prune_entry

    reg = tmp_path / "models"
    add_entry(bayer_bilinear(), reg, {"kodak24": 30.0, "mcmaster18": 32.0})
    with pytest.raises(ValueError, match="no search config"):
        prune_entry("bayer_bilinear", {"x": 1}, models=reg, quiet=True)
    assert json.loads((reg / "registry.json").read_text())["entries"][0]["name"] == "bayer_bilinear"


def test_prune_entry_fine_tunes_for_real_on_the_corpus(tmp_path):
    """The default trainer: the pruned program is trained (its weights move) with the run config's data."""
    try:
        from rawdemosaic.search.data import list_images

        list_images()
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"no training corpus: {e}")
    from rawdemosaic.search.channels import prune_channels as narrow
    from rawdemosaic.search.cli import prune_entry

    reg, parent = _searched_registry(tmp_path)
    tdir = tmp_path / "trained"
    tdir.mkdir()
    info = prune_entry("tiny_searched", {"c_c0": 4}, models=reg, steps=6, trained_dir=tdir, sets=["kodak24"], limit=1, quiet=True)
    start = narrow(parent, {"c_c0": 4})
    tuned = Program.load(tdir / f"{info.name}.json")
    from rawdemosaic.search.train import default_device

    assert tuned.meta["full_train"]["steps"] == 6 and tuned.meta["full_train"]["device"] == str(default_device())
    assert any(not np.array_equal(tuned.weights[k], start.weights[k]) for k in start.weights)
    assert info.provenance["finetune"]["steps"] == 6 and info.provenance["full_train_device"] == str(default_device())
