"""Programs as PyTorch modules: every node evaluated with its op's ``torch`` twin (defined once, in
:mod:`rawdemosaic.program.ops`), weights trainable.

:class:`ProgramModule` takes mosaics ``(N, 1, H, W)`` whose top-left pixel is at canonical CFA phase
``(0, 0)`` and ``H``, ``W`` multiples of :meth:`Program.lcm_scale`; it returns ``(N, 3, H, W)``.
Outside the image every op zero-pads (the numpy reference folds the mosaic instead), so only pixels
further than :meth:`Program.receptive_radius` from the border are comparable to the compiled kernel:
training losses crop them.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from rawdemosaic.program.graph import Node, Program
from rawdemosaic.program.ops import RefContext, Shape, get_op

__all__ = ["ProgramModule", "NodeHook", "to_program", "inherit_weights", "weight_shapes", "INITS"]

INITS = ("program", "random", "xavier")


def _pkey(key: str) -> str:
    """ParameterDict key of a program weight key (``"node.name"``: '.' is not allowed in module names)."""
    return key.replace(".", "__")


def weight_shapes(program: Program) -> dict[str, tuple[int, ...]]:
    """``"<node>.<name>" -> shape`` for every weight of every node (live or not)."""
    shapes = program.shapes()
    out: dict[str, tuple[int, ...]] = {}
    for n in program.nodes:
        op = get_op(n.op)
        for k, s in op.weight_shapes([shapes[i] for i in n.inputs], program.params(n)).items():
            out[f"{n.id}.{k}"] = tuple(int(v) for v in s)
    return out


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan-in, fan-out) of a weight laid out ``(out, in, *taps)`` (depthwise: ``(C, 1, k, k)``)."""
    if len(shape) < 2:
        return 1, max(1, shape[0]) if shape else 1
    rf = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return max(1, shape[1] * rf), max(1, shape[0] * rf)


def _random_weight(key: str, shape: tuple[int, ...], init: str, gen: torch.Generator) -> torch.Tensor:
    """Biases 0; weights N(0, std) with a small fan-in scaled std ("random") or Glorot ("xavier").

    Small weights keep the inductive bias of demosaicking programs: predictions start near 0 (so
    ``ChromaInsert`` in ``diff`` mode starts from R = B = G), softmax weightings start uniform.
    """
    name = key.rsplit(".", 1)[1]
    if "bias" in name or len(shape) < 2:
        return torch.zeros(shape)
    fan_in, fan_out = _fans(shape)
    std = 0.5 / math.sqrt(fan_in) if init == "random" else math.sqrt(2.0 / (fan_in + fan_out))
    return torch.randn(shape, generator=gen) * std


NodeHook = Callable[[Node, Sequence[torch.Tensor], Mapping[str, torch.Tensor]], tuple[Sequence[torch.Tensor], Mapping[str, torch.Tensor]]]


class ProgramModule(nn.Module):
    """A :class:`Program` as a trainable module.

    Parameters
    ----------
    program
        The program (validated; its structure is fixed, only weights train).
    init
        ``"program"``: the program's own weights; ``"random"``: N(0, (0.5/sqrt(fan-in))^2), biases 0;
        ``"xavier"``: Glorot normal, biases 0.
    seed
        Seed of the random initialisations.
    """

    def __init__(self, program: Program, init: str = "program", seed: int = 0):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        shapes = program.shapes()
        self.program = program
        self.scale = program.lcm_scale()
        self._nodes = program.live_nodes()
        self._params = {n.id: program.params(n) for n in self._nodes}
        self._ctx = RefContext(pattern=program.cfa.canonical, origin_y=0, origin_x=0)
        self._wkeys: dict[str, dict[str, str]] = {}  # node id -> {weight name: parameter key}
        gen = torch.Generator().manual_seed(int(seed))
        self.weights = nn.ParameterDict()
        live = {n.id for n in self._nodes}
        for key, shp in weight_shapes(program).items():
            nid, name = key.rsplit(".", 1)
            if nid not in live:
                continue  # dead nodes keep their weights (to_program copies them over unchanged)
            pk = _pkey(key)
            if pk in self.weights:
                raise ValueError(f"{program.name}: weight keys collide after sanitising ({key!r})")
            if init == "program":
                val = torch.as_tensor(np.array(program.weights[key], np.float32))
            else:
                val = _random_weight(key, shp, init, gen)
            self.weights[pk] = nn.Parameter(val.float())
            self._wkeys.setdefault(nid, {})[name] = pk
        # the last use of each value, to free intermediates early
        self._last_use: dict[str, int] = {}
        for k, n in enumerate(self._nodes):
            for i in n.inputs:
                self._last_use[i] = k
        self._out_shape: Shape = shapes[program.output]

    def node_weights(self, nid: str) -> dict[str, torch.Tensor]:
        return {name: self.weights[pk] for name, pk in self._wkeys.get(nid, {}).items()}

    def forward(self, mosaic: torch.Tensor, hook: "NodeHook | None" = None) -> torch.Tensor:
        """``(N, 3, H, W)`` from mosaics ``(N, 1, H, W)``. ``hook(node, inputs, weights) -> (inputs, weights)``,
        if given, sees every node but the input before it runs and may replace what it runs on (e.g. to
        record activation ranges or simulate quantisation, ``benchmarks/quantisation.py``)."""
        if mosaic.ndim != 4 or mosaic.shape[1] != 1:
            raise ValueError(f"mosaic must be (N, 1, H, W), got {tuple(mosaic.shape)}")
        h, w = mosaic.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(f"{self.program.name}: H, W must be multiples of {self.scale}, got {h}x{w}")
        vals: dict[str, torch.Tensor] = {}
        out_id = self.program.output
        for k, n in enumerate(self._nodes):
            if n.op == "Input":
                vals[n.id] = mosaic
            else:
                ins, w = [vals[i] for i in n.inputs], self.node_weights(n.id)
                if hook is not None:
                    ins, w = hook(n, ins, w)
                vals[n.id] = get_op(n.op).torch(ins, self._params[n.id], w, self._ctx)
            for i in n.inputs:
                if self._last_use.get(i) == k and i != out_id:
                    vals.pop(i, None)
        return vals[out_id]

    def extra_repr(self) -> str:
        return f"program={self.program.name!r}, nodes={len(self._nodes)}, params={sum(p.numel() for p in self.parameters())}"


def to_program(module: ProgramModule, name: str | None = None, meta: Mapping | None = None) -> Program:
    """A copy of ``module.program`` carrying the module's (trained) weights (a self-ensemble stays one: the
    module trains the graph it averages)."""
    prog = module.program
    weights = {k: np.array(v, np.float32, copy=True) for k, v in prog.weights.items()}
    for nid, names in module._wkeys.items():
        for wname, pk in names.items():
            weights[f"{nid}.{wname}"] = module.weights[pk].detach().cpu().numpy().astype(np.float32).copy()
    out = Program(name or prog.name, prog.cfa, prog.nodes, prog.output, weights, dict(meta if meta is not None else prog.meta), prog.ensemble)
    out.shapes()
    return out


def inherit_weights(module: ProgramModule, parent: Program) -> list[str]:
    """Copy ``parent``'s weights into ``module`` where node id and weight shape match.

    Returns the program weight keys copied (a node is copied whole or not at all).
    """
    copied: list[str] = []
    with torch.no_grad():
        for nid, names in module._wkeys.items():
            src = {wname: parent.weights.get(f"{nid}.{wname}") for wname in names}
            if any(v is None or tuple(v.shape) != tuple(module.weights[names[w]].shape) for w, v in src.items()):
                continue
            try:
                if parent.node(nid).op != module.program.node(nid).op:
                    continue
            except Exception:  # noqa: BLE001 - a node missing in the parent
                continue
            for wname, v in src.items():
                module.weights[names[wname]].copy_(torch.as_tensor(np.asarray(v, np.float32)))
                copied.append(f"{nid}.{wname}")
    return copied
