"""The search's program space: seeds, mutations, pruning rules, structural hash."""

from __future__ import annotations

import numpy as np
import pytest

from rawdemosaic.cfa import CFA
from rawdemosaic.program.graph import Node, Program
from rawdemosaic.search import space as S

MUTATION_NAMES = [k for k in S.MUTATIONS if k != "green_swap"]


def _programs(cfa: str) -> list[Program]:
    """Seeds plus a few random descendants (including resolution changes with factor 4)."""
    seeds = S.seed_programs(cfa, width=4, seed=1, deep=[(4, 2)], midres=[(4, 1)])
    rng = np.random.default_rng(5)
    sp = S.SpaceConfig(cfa=cfa, mode="joint", max_cost=1e9, max_radius=10**6)
    out = list(seeds)
    for p in seeds:
        c, _ = S.mutate(p, rng, sp, kind="res_create")
        out.append(c)
        for _ in range(50):  # one with a factor-4 resolution change (for res_shrink)
            c4, _ = S.mutate(p, rng, sp, kind="res_create")
            if any(n.op == "Downsample" and n.params["factor"] == 4 for n in c4.nodes):
                out.append(c4)
                break
        c2, _ = S.mutate(c, rng, sp, kind="insert")
        out.append(c2)
    return out


def _snapshot(p: Program):
    return ([n.to_json() for n in p.nodes], {k: v.copy() for k, v in p.weights.items()})


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
@pytest.mark.parametrize("kind", MUTATION_NAMES)
def test_every_mutation_valid(cfa, kind):
    sp = S.SpaceConfig(cfa=cfa, mode="joint", max_cost=1e9, max_radius=10**6)
    rng = np.random.default_rng(hash(kind) % 1000)
    applied = 0
    for p in _programs(cfa):
        before = _snapshot(p)
        try:
            child, k = S.mutate(p, rng, sp, kind=kind, attempts=40)
        except S.InvalidMutation:
            continue  # e.g. no factor-4 pair to shrink in this program
        applied += 1
        assert k == kind
        shapes = child.shapes()  # valid
        assert shapes[child.output].channels == 3 and shapes[child.output].scale == 1
        # resolution rules: every scale on the grid p * 2^k (k >= -1), sinks at full res
        for n in child.live_nodes():
            s = shapes[n.id].scale
            assert s == 1 or ((2 * s) % child.period == 0 and ((2 * s // child.period) & (2 * s // child.period - 1)) == 0)
            assert s <= sp.max_scale
        assert shapes["green"].scale == 1
        # cost recomputed from the new weights
        assert child.cost() == pytest.approx(sum(child.node_costs().values()))
        assert S.structural_hash(child) != S.structural_hash(p)
        # parent untouched
        after = _snapshot(p)
        assert before[0] == after[0]
        assert all(np.array_equal(before[1][k], after[1][k]) for k in before[1])
        # unchanged nodes keep the parent's weights, new/reshaped ones are fresh and finite
        for key, w in child.weights.items():
            assert np.all(np.isfinite(w))
            nid = key.split(".")[0]
            if nid not in child.meta["renewed"] and key in p.weights:
                assert np.array_equal(w, p.weights[key])
    assert applied >= 1, f"{kind} never applied"


def test_mutation_changes_cost():
    sp = S.SpaceConfig(cfa="bayer", mode="joint", max_cost=1e9)
    p = S.demosaicnet_like("bayer", width=8)
    child, _ = S.mutate(p, np.random.default_rng(0), sp, kind="channels")
    assert child.cost() != p.cost()


def test_green_swap_uses_pool_and_keeps_chroma():
    seeds = S.seed_programs("bayer", width=4)
    prog = S.compose(seeds[0], seeds[1])
    sp = S.SpaceConfig(cfa="bayer", mode="chroma", green_pool=seeds, max_cost=1e9)
    child, k = S.mutate(prog, np.random.default_rng(0), sp, kind="green_swap")
    assert k == "green_swap"
    assert [n.to_json() for n in S.green_part(child)] == [n.to_json() for n in S.green_part(seeds[1])]
    assert [n.to_json() for n in S.chroma_part(child)] == [n.to_json() for n in S.chroma_part(prog)]
    with pytest.raises(S.InvalidMutation):
        S.mutate(prog, np.random.default_rng(0), S.SpaceConfig(cfa="bayer", mode="joint"), kind="green_swap", attempts=2)


@pytest.mark.parametrize("mode", ["green", "chroma"])
def test_modes_mutate_only_their_part(mode):
    seeds = S.seed_programs("bayer", width=4)
    sp = S.SpaceConfig(cfa="bayer", mode=mode, max_cost=1e9, max_radius=10**6, green_pool=seeds)
    rng = np.random.default_rng(3)
    for p in seeds:
        for _ in range(8):
            child, k = S.mutate(p, rng, sp)
            fixed = S.chroma_part if mode == "green" else S.green_part
            if k != "green_swap":
                assert [n.to_json() for n in fixed(child)] == [n.to_json() for n in fixed(p)]


def test_extra_ops_flag():
    sp = S.SpaceConfig(cfa="bayer", mode="joint", extra_ops=False, max_cost=1e9, max_radius=10**6)
    assert not set(S.EXTRA_OPS) & set(sp.ops)
    rng = np.random.default_rng(0)
    p = S.demosaicnet_like("bayer", width=4)
    for _ in range(60):
        child, _ = S.mutate(p, rng, sp, kind="insert")
        ops = {n.op for n in child.nodes}
        assert not ops & {"SeparableConv", "BSConv", "GatedConv", "ChannelShuffle"}
        assert all(child.params(n).get("dilation", 1) == 1 for n in child.nodes)
    assert set(S.EXTRA_OPS) <= set(S.SpaceConfig(cfa="bayer").ops)


# --- pruning -------------------------------------------------------------------------------------


def _with(prog: Program, extra: list[Node], rewire: tuple[str, str, str]) -> Program:
    """Insert ``extra`` before ``rewire[0]`` and point its input ``rewire[1]`` to ``rewire[2]``."""
    nodes = []
    for n in prog.nodes:
        if n.id == rewire[0]:
            nodes += extra
            n = Node(n.id, n.op, tuple(rewire[2] if i == rewire[1] else i for i in n.inputs), dict(n.params))
        nodes.append(n)
    shell = Program(prog.name, prog.cfa, tuple(nodes), prog.output)
    from rawdemosaic.program.ops import get_op

    shapes = {}
    for n in nodes:
        op = get_op(n.op)
        shapes[n.id] = op.infer([shapes[i] for i in n.inputs], op.params(n.params), prog.period)
    w = dict(prog.weights)
    w.update(S.fresh_weights(tuple(nodes), prog.cfa, shapes, np.random.default_rng(0), {n.id for n in extra}))
    del shell
    p = Program(prog.name, prog.cfa, tuple(nodes), prog.output, w)
    p.shapes()
    return p


@pytest.fixture
def base():
    return S.demosaicnet_like("bayer", width=8)


@pytest.fixture
def sp():
    return S.SpaceConfig(cfa="bayer", mode="joint")


def test_prune_accepts_normal(base, sp):
    assert S.prune(base, sp, set()) is None
    for p in S.seed_programs("xtrans"):
        assert S.prune(p, S.SpaceConfig(cfa="xtrans")) is None


def test_prune_inverse_pack_unpack(base, sp):
    p = _with(base, [Node("g_x1", "Unpack", ("g_r0",), {}), Node("g_x2", "Pack", ("g_x1",), {})], ("g_c1", "g_r0", "g_x2"))
    assert "inverse pair" in S.prune(p, sp)


def test_prune_inverse_down_up(base, sp):
    p = _with(
        base,
        [Node("g_x1", "Downsample", ("g_r0",), {"factor": 2, "out_channels": 8}), Node("g_x2", "LearnedUpsample", ("g_x1",), {"factor": 2, "out_channels": 8})],
        ("g_c1", "g_r0", "g_x2"),
    )
    assert "inverse pair Downsample->LearnedUpsample" in S.prune(p, sp)
    # an op between the two is fine
    q = _with(
        base,
        [
            Node("g_x1", "Downsample", ("g_r0",), {"factor": 2, "out_channels": 8}),
            Node("g_x3", "Conv2D", ("g_x1",), {"out_channels": 8}),
            Node("g_x2", "Upsample", ("g_x3",), {"factor": 2}),
        ],
        ("g_c1", "g_r0", "g_x2"),
    )
    assert S.prune(q, sp) is None


def test_prune_repeated_relu(base, sp):
    p = _with(base, [Node("g_x1", "ReLU", ("g_r0",))], ("g_c1", "g_r0", "g_x1"))
    assert "repeated ReLU" in S.prune(p, sp)


def test_prune_inverse_channel_shuffles(base, sp):
    pair = [Node("g_x1", "ChannelShuffle", ("g_r0",), {"groups": 2}), Node("g_x2", "ChannelShuffle", ("g_x1",), {"groups": 4})]
    assert "inverse channel shuffles (g_x1->g_x2)" in S.prune(_with(base, pair, ("g_c1", "g_r0", "g_x2")), sp)
    one = [Node("g_x1", "ChannelShuffle", ("g_r0",), {"groups": 2})]
    assert S.prune(_with(base, one, ("g_c1", "g_r0", "g_x1")), sp) is None


def test_prune_relu_of_the_mosaic(base, sp):
    p = _with(base, [Node("g_x1", "ReLU", ("g_pack",))], ("g_c0", "g_pack", "g_x1"))
    assert "ReLU of a non-negative input (g_pack->g_x1)" in S.prune(p, sp)
    # a ReLU after a (signed) convolution stays
    q = _with(base, [Node("g_x1", "ReLU", ("g_c0",))], ("g_c1", "g_r0", "g_x1"))
    assert S.prune(q, sp) is None


def test_prune_off_grid_scale(base, sp):
    p = _with(
        base,
        [Node("g_x1", "Downsample", ("g_r0",), {"factor": 3, "out_channels": 8}), Node("g_x3", "Conv2D", ("g_x1",), {"out_channels": 8}), Node("g_x2", "Upsample", ("g_x3",), {"factor": 3})],
        ("g_c1", "g_r0", "g_x2"),
    )
    assert "grid" in S.prune(p, sp)


def test_prune_size_and_receptive_bounds(base):
    assert "cost" in S.prune(base, S.SpaceConfig(cfa="bayer", max_cost=100.0))
    assert "cost" in S.prune(base, S.SpaceConfig(cfa="bayer", min_cost=1000.0, max_cost=2000.0))
    assert "channels" in S.prune(base, S.SpaceConfig(cfa="bayer", max_channels=6))
    assert "nodes" in S.prune(base, S.SpaceConfig(cfa="bayer", max_nodes=5))
    assert "receptive radius" in S.prune(base, S.SpaceConfig(cfa="bayer", max_radius=10))
    assert "receptive radius" in S.prune(base, S.SpaceConfig(cfa="bayer", min_radius=500, max_radius=1000))


def test_prune_seen(base, sp):
    seen = {S.structural_hash(base)}
    assert S.prune(base, sp, seen) == "already seen"
    other = S.weighted_interp("bayer")
    assert S.prune(other, sp, seen) is None


def test_prune_trivial_prediction(base, sp):
    nodes = tuple(Node(n.id, n.op, ("mosaic", "mosaic"), {}) if n.id == "green" else n for n in base.nodes)
    p = Program("t", base.cfa, nodes, "rgb", base.weights)
    p.shapes()
    assert "prediction" in S.prune(p, sp)


# --- structural hash -------------------------------------------------------------------------------


def test_hash_stable_under_renaming_and_weights():
    for p in _programs("bayer"):
        h = S.structural_hash(p)
        r = S.rename_nodes(p, lambda i: i[:2] + "renamed_" + i[::-1])
        assert S.structural_hash(r) == h
        w = Program(p.name, p.cfa, p.nodes, p.output, {k: v * 2 + 1 for k, v in p.weights.items()})
        assert S.structural_hash(w) == h
        assert w.digest() != p.digest()


def test_hash_distinguishes_structure():
    a, b = S.seed_programs("bayer", width=4)
    assert S.structural_hash(a) != S.structural_hash(b)
    assert S.structural_hash(S.demosaicnet_like("bayer", width=4)) != S.structural_hash(S.demosaicnet_like("bayer", width=8))
    assert S.structural_hash(S.demosaicnet_like("bayer")) != S.structural_hash(S.demosaicnet_like("xtrans"))
    # decoupling a shared node changes the hash
    sp = S.SpaceConfig(cfa="bayer", mode="joint", max_cost=1e9)
    c, _ = S.mutate(b, np.random.default_rng(0), sp, kind="decouple")
    assert S.structural_hash(c) != S.structural_hash(b)


def test_hash_commutative_inputs():
    p = S.weighted_interp("bayer")
    nodes = tuple(Node(n.id, n.op, n.inputs[::-1], dict(n.params)) if n.op == "Mul" else n for n in p.nodes)
    q = Program(p.name, p.cfa, nodes, p.output, p.weights)
    assert S.structural_hash(q) == S.structural_hash(p)


def test_compose_and_part_costs():
    g, c = S.seed_programs("xtrans", width=4)
    p = S.compose(g, c)
    assert p.cfa is CFA.XTRANS
    assert S.part_cost(p, "g") + S.part_cost(p, "c") == pytest.approx(p.cost() - sum(v for k, v in p.node_costs().items() if not k.startswith(("g_", "c_")) and k not in ("green", "rgb")))
    for key in p.weights:
        src = g if key.startswith("g_") else c
        assert np.array_equal(p.weights[key], src.weights[key])


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
def test_deep_net_structure_and_cost(cfa):
    """BSConv blocks ``x + ReLU(BSConv(x))``: cost grows by one block's count per level of depth."""
    pp = CFA(cfa).period ** 2
    w, cw = 8, 12
    shallow, deep = S.deep_net(cfa, w, 1, cw, 1), S.deep_net(cfa, w, 3, cw, 2)
    ops = [n.op for n in deep.nodes]
    assert ops.count("BSConv") == (1 + 3 + 1) + (1 + 2 + 1) and ops.count("ReLU") == (1 + 3) + (1 + 2)
    block = lambda c: (c * c + 9 * c + c + 2 * c) / pp  # pointwise, depthwise 3x3, bias, ReLU, Add
    assert deep.cost() - shallow.cost() == pytest.approx(2 * block(w) + block(cw))
    # the chroma trunk reads the green trunk (joint), and the programs are well formed
    c_in = deep.node("c_in")
    assert c_in.op == "Stack" and c_in.inputs == ("c_d", "g_s2")
    assert deep.shapes()["rgb"].channels == 3


def test_deep_seeds_from_config():
    seeds = S.seed_programs("bayer", width=4, residual=[(8, 1)], deep=[(8, 2), (8, 1, 12, 3)])
    names = [p.name for p in seeds]
    assert names[-2:] == ["seed_deep_bayer_8x2", "seed_deep_bayer_8x1"]
    assert [n.op for n in seeds[-1].nodes].count("Add") == 1 + 3 + 2  # blocks + the two output sums


def test_residual_seed_head_kernel():
    """The fourth residual-seed number sets the linear paths' and heads' kernel (X-Trans default 1x1)."""
    one, three = S.seed_programs("xtrans", width=4, residual=[(8, 1, 8), (8, 1, 8, 3)])[-2:]
    assert three.name == one.name + "_k3"
    heads = ("g_lin", "g_res", "c_lin", "c_res")
    assert [one.params(one.node(h))["kernel"] for h in heads] == [1] * 4
    assert [three.params(three.node(h))["kernel"] for h in heads] == [3] * 4
    assert three.cost() - one.cost() == pytest.approx(8 * sum(one.node_costs()[h] - one.params(one.node(h))["out_channels"] / 36 for h in heads))


@pytest.mark.parametrize("cfa", ["bayer", "xtrans"])
def test_midres_net_structure_and_cost(cfa):
    """Trunks on the half-period grid: a 3x3 layer of W channels costs (9 W^2 + 2 W) / (p/2)^2 per pixel."""
    p = CFA(cfa).period
    w = 8
    one, two = S.midres_net(cfa, w, 1, 6), S.midres_net(cfa, w, 2, 6)
    shapes = two.shapes()
    assert shapes["g_c1"].scale == shapes["c_c0"].scale == p // 2
    assert shapes["g_dn"].scale == p and shapes["g_dn"].channels == 4 * w
    assert two.node("c_in").inputs == ("c_up", "g_r1")  # the chroma trunk reads the green one
    assert two.cost() - one.cost() == pytest.approx((9 * w * w + 2 * w) / (p // 2) ** 2)  # conv taps, bias, ReLU
    assert S.prune(two, S.SpaceConfig(cfa=cfa, max_cost=1e9)) is None
    with pytest.raises(ValueError, match="does not divide"):
        S.midres_net(cfa, w, 1, factor=4)


def test_midres_seeds_from_config():
    seeds = S.seed_programs("xtrans", width=4, midres=[(8, 1), (8, 2, 4, 3)])
    assert [p.name for p in seeds[-2:]] == ["seed_midres_xtrans_8x1_f2", "seed_midres_xtrans_8x2_f3"]
    assert seeds[-1].shapes()["g_c0"].scale == 2 and seeds[-1].shapes()["c_c0"].channels == 4
    # the 2-pixel grid is off the search's p * 2^k grid: such a seed is pruned, not trained
    assert "scale off" in S.prune(seeds[-1], S.SpaceConfig(cfa="xtrans", max_cost=1e9))
