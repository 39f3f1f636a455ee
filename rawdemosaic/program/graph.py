"""Programs: a DAG of ops with weights, stored as JSON plus an ``.npz`` of weights.

JSON layout (``format: rawdemosaic-program/1``)::

    {"format": "rawdemosaic-program/1", "name": "bayer_bilinear", "cfa": "bayer",
     "nodes": [{"id": "mosaic", "op": "Input"},
               {"id": "packed", "op": "Pack", "inputs": ["mosaic"]}, ...],
     "output": "rgb", "weights": "bayer_bilinear.npz", "meta": {...}}

Nodes are listed in topological order; ``inputs`` name earlier nodes. Weights are stored under
``"<node id>.<weight name>"``. The output node must be ``(3 channels, scale 1)``. An optional
``"ensemble": n`` (2 or 4) averages the program over reflections of the mosaic
(:mod:`rawdemosaic.program.ensemble`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..cfa import CFA
from ..errors import ProgramError
from .ensemble import reflections
from .ops import Shape, get_op

__all__ = ["Node", "Program", "FORMAT"]

FORMAT = "rawdemosaic-program/1"


@dataclass(frozen=True)
class Node:
    id: str
    op: str
    inputs: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "op": self.op}
        if self.inputs:
            d["inputs"] = list(self.inputs)
        d.update(self.params)
        return d


@dataclass(eq=False)
class Program:
    """A demosaicking program for one CFA family (written for its canonical pattern)."""

    name: str
    cfa: CFA
    nodes: tuple[Node, ...]
    output: str
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    ensemble: int = 1  # self-ensemble size: the graph averaged over this many reflections of the mosaic

    def __post_init__(self) -> None:
        self.cfa = CFA(self.cfa)
        reflections(self.ensemble)  # validates
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.weights.items()}
        self._shapes: dict[str, Shape] | None = None

    # --- structure ------------------------------------------------------------------------------
    @property
    def period(self) -> int:
        return self.cfa.period

    @property
    def domain(self) -> str:
        """The data encoding the program expects, from its Input node (``"linear"`` or ``"srgb"``)."""
        for n in self.nodes:
            if n.op == "Input":
                return str(self.params(n)["domain"])
        return "linear"

    def with_domain(self, domain: str) -> "Program":
        """A copy whose Input node declares ``domain`` (weights shared)."""
        nodes = tuple(replace(n, params={**n.params, "domain": domain}) if n.op == "Input" else n for n in self.nodes)
        prog = Program(self.name, self.cfa, nodes, self.output, dict(self.weights), dict(self.meta), self.ensemble)
        prog.shapes()
        return prog

    def with_ensemble(self, n: int, name: str | None = None) -> "Program":
        """A copy averaged over ``n`` reflections of the mosaic (weights shared)."""
        return Program(name or self.name, self.cfa, self.nodes, self.output, dict(self.weights), dict(self.meta), n)

    def node(self, nid: str) -> Node:
        for n in self.nodes:
            if n.id == nid:
                return n
        raise ProgramError(f"{self.name}: no node {nid!r}")

    def params(self, n: Node) -> dict[str, Any]:
        return get_op(n.op).params(n.params)

    def node_weights(self, n: Node) -> dict[str, np.ndarray]:
        prefix = n.id + "."
        return {k[len(prefix) :]: v for k, v in self.weights.items() if k.startswith(prefix)}

    def shapes(self) -> dict[str, Shape]:
        """Validate the program and return every node's shape."""
        if self._shapes is None:
            self._shapes = self._validate()
        return self._shapes

    def _validate(self) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {}
        inputs = [n for n in self.nodes if n.op == "Input"]
        if len(inputs) != 1:
            raise ProgramError(f"{self.name}: needs exactly one Input node, has {len(inputs)}")
        for n in self.nodes:
            if n.id in shapes:
                raise ProgramError(f"{self.name}: duplicate node id {n.id!r}")
            op = get_op(n.op)
            missing = [i for i in n.inputs if i not in shapes]
            if missing:
                raise ProgramError(f"{self.name}: node {n.id!r} uses {missing} before they are defined")
            p = op.params(n.params)
            try:
                shape = op.infer([shapes[i] for i in n.inputs], p, self.period)
            except ProgramError as e:
                raise ProgramError(f"{self.name}: node {n.id!r}: {e}") from None
            want = op.weight_shapes([shapes[i] for i in n.inputs], p)
            have = self.node_weights(n)
            if set(want) != set(have):
                raise ProgramError(f"{self.name}: node {n.id!r} expects weights {sorted(want)}, has {sorted(have)}")
            for k, s in want.items():
                if tuple(have[k].shape) != tuple(s):
                    raise ProgramError(f"{self.name}: {n.id}.{k} has shape {have[k].shape}, expected {s}")
                if not np.all(np.isfinite(have[k])):
                    raise ProgramError(f"{self.name}: {n.id}.{k} holds non-finite values")
            shapes[n.id] = shape
        if self.output not in shapes:
            raise ProgramError(f"{self.name}: output {self.output!r} is not a node")
        if shapes[self.output] != Shape(3, 1):
            raise ProgramError(f"{self.name}: output must be 3 channels at full resolution, is {shapes[self.output]}")
        stray = set(self.weights) - {f"{n.id}.{k}" for n in self.nodes for k in self.node_weights(n)}
        if stray:
            raise ProgramError(f"{self.name}: weights for unknown nodes {sorted(stray)}")
        return shapes

    def live_nodes(self) -> list[Node]:
        """Nodes the output depends on, in order."""
        need = {self.output}
        for n in reversed(self.nodes):
            if n.id in need:
                need.update(n.inputs)
        return [n for n in self.nodes if n.id in need]

    def live_only(self) -> "Program":
        """A copy without the nodes the output does not depend on, nor their weights (``self`` when all are live)."""
        live = {n.id for n in self.live_nodes()}
        if len(live) == len(self.nodes):
            return self
        nodes = tuple(n for n in self.nodes if n.id in live)
        weights = {k: v for k, v in self.weights.items() if k.split(".", 1)[0] in live}
        return Program(self.name, self.cfa, nodes, self.output, weights, self.meta, self.ensemble)

    # --- cost -----------------------------------------------------------------------------------
    def node_costs(self) -> dict[str, float]:
        """Operations per full-resolution output pixel, per live node."""
        shapes = self.shapes()
        out = {}
        for n in self.live_nodes():
            op = get_op(n.op)
            c = op.cost([shapes[i] for i in n.inputs], shapes[n.id], self.params(n), self.node_weights(n))
            out[n.id] = c / shapes[n.id].scale ** 2
        return out

    def cost(self) -> float:
        """Total operations per output pixel (see :mod:`rawdemosaic.program.ops` for the model); an
        ensemble of ``n`` runs the graph ``n`` times and adds ``n`` operations per channel to average."""
        graph = float(sum(self.node_costs().values()))
        return graph if self.ensemble == 1 else self.ensemble * graph + 3 * self.ensemble

    def lcm_scale(self) -> int:
        return math.lcm(*(s.scale for s in self.shapes().values()), self.period)

    def receptive_radius(self) -> int:
        """Upper bound on how far (in full-resolution pixels) the output reads from the mosaic."""
        shapes = self.shapes()
        reach: dict[str, int] = {}
        for n in self.live_nodes():
            op = get_op(n.op)
            p = self.params(n)
            own = max((shapes[i].scale for i in n.inputs), default=1) * (op.radius(p) + 1)
            reach[n.id] = max((reach[i] for i in n.inputs), default=0) + own
        return reach[self.output]

    # --- identity and storage -------------------------------------------------------------------
    def to_json(self, weights_file: str | None = None) -> dict:
        d = {
            "format": FORMAT,
            "name": self.name,
            "cfa": self.cfa.value,
            "nodes": [n.to_json() for n in self.nodes],
            "output": self.output,
        }
        if self.ensemble != 1:
            d["ensemble"] = self.ensemble
        if weights_file:
            d["weights"] = weights_file
        if self.meta:
            d["meta"] = self.meta
        return d

    def digest(self) -> str:
        """Content hash of structure and weights (names and metadata excluded)."""
        h = hashlib.sha256()
        core = {"cfa": self.cfa.value, "nodes": [n.to_json() for n in self.nodes], "output": self.output}
        if self.ensemble != 1:  # single programs keep the digests (and kernel caches) they always had
            core["ensemble"] = self.ensemble
        h.update(json.dumps(core, sort_keys=True).encode())
        for k in sorted(self.weights):
            h.update(k.encode())
            h.update(np.ascontiguousarray(self.weights[k], np.float32).tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def from_json(cls, d: Mapping[str, Any], weights: Mapping[str, np.ndarray] | None = None) -> "Program":
        if d.get("format") != FORMAT:
            raise ProgramError(f"not a {FORMAT} document (format={d.get('format')!r})")
        try:
            nodes = []
            for nd in d["nodes"]:
                nd = dict(nd)
                nid, op = nd.pop("id"), nd.pop("op")
                ins = tuple(nd.pop("inputs", ()))
                nodes.append(Node(nid, op, ins, nd))
            prog = cls(d["name"], CFA(d["cfa"]), tuple(nodes), d["output"], dict(weights or {}), dict(d.get("meta", {})), int(d.get("ensemble", 1)))
        except (KeyError, TypeError, ValueError) as e:
            raise ProgramError(f"malformed program: {e!r}") from None
        prog.shapes()
        return prog

    @classmethod
    def load(cls, path: str | Path) -> "Program":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ProgramError(f"{path}: cannot read program: {e}") from None
        weights: dict[str, np.ndarray] = {}
        if d.get("weights"):
            wpath = path.parent / d["weights"]
            try:
                with np.load(wpath) as z:
                    weights = {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:
                raise ProgramError(f"{wpath}: cannot read weights: {e}") from None
        try:
            return cls.from_json(d, weights)
        except ProgramError as e:
            raise ProgramError(f"{path}: {e}") from None

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (JSON) and its weights beside it (``<stem>.npz``); returns the JSON path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.shapes()
        wname = path.with_suffix(".npz").name
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.weights)
        _atomic_write(path.parent / wname, buf.getvalue())
        _atomic_write(path, (json.dumps(self.to_json(wname), indent=1) + "\n").encode())
        return path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
