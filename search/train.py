"""Training programs: fast training for selection, full training of finalists, measured quality.

* :func:`train` — Adam on an L2 (or L1) loss over the *interior* of patches (the receptive radius is
  cropped: PyTorch zero-pads where the kernels fold the mosaic). "Fast training for selection": ``inits``
  initialisations are trained for ``select_after`` steps, the best on the validation patches is kept and
  trained on. With ``init_from`` the first initialisation inherits a parent's weights wherever node id, op
  and weight shapes match (the others stay random, so the search can measure whether inheriting helps).
* :func:`full_train` — one initialisation (the program's own weights by default), longer, cosine lr decay.
* :func:`evaluate_program` — CPSNR with the project's protocol (:func:`rawdemosaic.evaluate.evaluate`)
  through the compiled Halide kernel: the number that gets reported.

A GPU is used when ``torch.cuda.is_available()`` (``device=None``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from rawdemosaic.program.graph import Program

from .model import ProgramModule, inherit_weights, to_program

__all__ = ["TrainResult", "train", "full_train", "evaluate_program", "patch_psnr", "interior_crop", "default_device"]


@dataclass
class TrainResult:
    """A trained program, its PSNR on the validation patches (dB, in the data's domain) and the log."""

    program: Program
    val_psnr: float
    history: list[dict[str, Any]] = field(default_factory=list)
    init_psnr: float = float("nan")  # validation PSNR of the kept initialisation before training
    chosen_init: int = 0
    inherited: list[str] = field(default_factory=list)
    seconds: float = 0.0


def default_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def interior_crop(program: Program, patch: int) -> int:
    """Border cropped from losses: the receptive radius, capped so at least half the patch side remains."""
    return int(min(program.receptive_radius(), patch // 4))


def _tensors(data: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "tensors"):
        m, rgb = data.tensors()
    else:
        m, rgb = data
        m, rgb = torch.as_tensor(m), torch.as_tensor(rgb)
    return m.float().to(device), rgb.float().to(device)


def patch_psnr(module: ProgramModule, m: torch.Tensor, rgb: torch.Tensor, crop: int, batch: int = 64) -> float:
    """PSNR (dB, peak 1) of the clipped output over the interiors of all patches (one pooled MSE)."""
    se, n = 0.0, 0
    was = module.training
    module.eval()
    with torch.no_grad():
        for s in range(0, len(m), batch):
            out = module(m[s : s + batch]).clamp(0, 1)
            d = (out - rgb[s : s + batch])
            if crop:
                d = d[..., crop:-crop, crop:-crop]
            se += float(d.double().pow(2).sum())
            n += d.numel()
    module.train(was)
    mse = se / max(1, n)
    if not math.isfinite(mse):
        return float("-inf")
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _loss_fn(kind: str):
    if kind == "l2":
        return lambda a, b: (a - b).pow(2).mean()
    if kind == "l1":
        return lambda a, b: (a - b).abs().mean()
    raise ValueError(f"loss must be 'l2' or 'l1', got {kind!r}")


class _Run:
    """One initialisation being trained: module, optimiser and its own batch order."""

    def __init__(self, module: ProgramModule, lr: float, seed: int):
        self.module = module
        self.opt = torch.optim.Adam(module.parameters(), lr=lr)
        self.gen = np.random.default_rng(seed)
        self.perm: np.ndarray = np.empty(0, np.int64)
        self.pos = 0
        self.steps = 0
        self.failed = False

    def next_idx(self, n: int, batch: int) -> np.ndarray:
        """Sampling without replacement inside an epoch."""
        batch = min(batch, n)
        if self.pos + batch > len(self.perm):
            self.perm, self.pos = self.gen.permutation(n), 0
        idx = self.perm[self.pos : self.pos + batch]
        self.pos += batch
        return idx


def _freeze_zeros(module: ProgramModule) -> None:
    """Mask the gradient of every zero weight, so Adam never moves it (its moments stay zero). The zeros of
    a linear expansion (:func:`rawdemosaic.search.fold.expand_linear`: its pointwise layer starts as a
    selection) and of a chroma refinement's zero-started layer (:func:`rawdemosaic.search.rechroma.with_chroma_refinement`)
    are their initialisation, not pruning, and stay free."""
    meta = module.program.meta
    starts = [*meta.get("expanded", {}), *meta.get("chroma_refinement", {}).get("zero_start", [])]
    free = {id(p) for nid in starts for p in module.node_weights(nid).values()}
    for p in module.weights.values():
        if id(p) in free:
            continue
        mask = p.detach() != 0
        if not bool(mask.all()):
            p.register_hook(lambda g, m=mask: g * m.to(g.device))


def _steps(run: _Run, m, rgb, count: int, batch: int, crop: int, loss, lr_at, history, tag: str, log_every: int, deadline: float | None = None) -> None:
    params = [p for p in run.module.parameters()]
    for _ in range(count):
        if run.failed or (deadline is not None and time.time() > deadline):
            return
        for g in run.opt.param_groups:
            g["lr"] = lr_at(run.steps)
        idx = torch.from_numpy(np.sort(run.next_idx(len(m), batch))).to(m.device)
        out = run.module(m[idx])
        tgt = rgb[idx]
        if crop:
            out, tgt = out[..., crop:-crop, crop:-crop], tgt[..., crop:-crop, crop:-crop]
        val = loss(out, tgt)
        if not torch.isfinite(val):
            run.failed = True
            history.append({"init": tag, "step": run.steps, "loss": float("nan"), "event": "non-finite loss"})
            return
        run.opt.zero_grad(set_to_none=True)
        val.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        run.opt.step()
        run.steps += 1
        if log_every and run.steps % log_every == 0:
            history.append({"init": tag, "step": run.steps, "loss": float(val.detach())})


def train(
    program: Program,
    train_data: Any,
    val_data: Any,
    steps: int = 400,
    lr: float = 2e-3,
    batch: int = 16,
    seed: int = 0,
    inits: int = 3,
    select_after: int | None = None,
    device: str | torch.device | None = None,
    *,
    loss: str = "l2",
    init: str = "random",
    init_from: Program | None = None,
    lr_decay: bool = False,
    log_every: int = 50,
    eval_every: int | None = None,
    time_limit: float | None = None,
    keep_zeros: bool = False,
) -> TrainResult:
    """Train ``program``'s weights; returns the best of ``inits`` initialisations after ``select_after`` steps.

    Parameters
    ----------
    train_data, val_data
        :class:`~rawdemosaic.search.data.PatchDataset` s or ``(mosaic (N,1,P,P), rgb (N,3,P,P))`` pairs.
    steps
        Total optimiser steps of the kept initialisation (``select_after`` of them before selection).
    init
        How initialisations are drawn: ``"random"`` / ``"xavier"`` (seeded by ``seed`` and their index), or
        ``"program"`` (the first initialisation is the program's own weights, the others random).
    init_from
        A parent program whose matching weights the first initialisation inherits.
    lr_decay
        Cosine decay from ``lr`` to ``lr / 100`` over ``steps``.
    eval_every
        Also measure validation PSNR every so many steps after selection, and return the best state.
    time_limit
        Stop the continued training after this many seconds (selection always completes).
    keep_zeros
        Weights that are zero in the first initialisation (the program's own or inherited ones) get no
        gradient, so they stay zero: a sparse kernel (a classical filter, a pruned one) is retrained at its
        counted cost instead of densifying. Random initialisations are dense and unaffected.
    """
    t0 = time.time()
    dev = default_device(device)
    torch.manual_seed(seed)
    m, rgb = _tensors(train_data, dev)
    vm, vrgb = _tensors(val_data, dev)
    crop = interior_crop(program, m.shape[-1])
    vcrop = interior_crop(program, vm.shape[-1])
    lossf = _loss_fn(loss)
    inits = max(1, int(inits))
    select_after = max(0, min(steps, steps // 5 if select_after is None else int(select_after)))
    lr_at = (lambda s: lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))) if lr_decay else (lambda s: lr)
    history: list[dict[str, Any]] = []

    runs: list[_Run] = []
    inherited: list[str] = []
    rand_init = init if init in ("random", "xavier") else "random"
    for k in range(inits):
        if k == 0 and init == "program" and init_from is None:
            mod = ProgramModule(program, init="program")
        else:
            mod = ProgramModule(program, init=rand_init, seed=seed * 1009 + k)
            if k == 0 and init_from is not None:
                inherited = inherit_weights(mod, init_from)
        if keep_zeros and k == 0 and (init == "program" or init_from is not None):
            _freeze_zeros(mod)
        runs.append(_Run(mod.to(dev), lr, seed * 7919 + k))
    init_psnrs = [patch_psnr(r.module, vm, vrgb, vcrop) for r in runs]

    # fast training for selection
    scores = []
    for k, r in enumerate(runs):
        _steps(r, m, rgb, select_after, batch, crop, lossf, lr_at, history, str(k), log_every)
        scores.append(float("-inf") if r.failed else patch_psnr(r.module, vm, vrgb, vcrop))
        history.append({"init": str(k), "step": r.steps, "val_psnr": scores[-1], "event": "selection"})
    best = int(np.argmax(scores))
    run = runs[best]
    del runs

    # continue the kept one
    best_state = {k: v.detach().clone() for k, v in run.module.state_dict().items()}
    best_psnr = scores[best]
    left = steps - select_after
    chunk = eval_every or max(1, left)
    deadline = None if time_limit is None else t0 + time_limit
    while left > 0 and not run.failed:
        if deadline is not None and time.time() > deadline:
            history.append({"init": str(best), "step": run.steps, "event": "time limit"})
            break
        before = run.steps
        _steps(run, m, rgb, min(chunk, left), batch, crop, lossf, lr_at, history, str(best), log_every, deadline)
        left -= run.steps - before
        if run.failed:
            break
        v = patch_psnr(run.module, vm, vrgb, vcrop)
        history.append({"init": str(best), "step": run.steps, "val_psnr": v})
        if v >= best_psnr or not eval_every:
            best_psnr = v
            best_state = {k: t.detach().clone() for k, t in run.module.state_dict().items()}
    run.module.load_state_dict(best_state)
    run.module.cpu()
    trained = to_program(run.module)
    return TrainResult(
        program=trained,
        val_psnr=best_psnr,
        history=history,
        init_psnr=init_psnrs[best],
        chosen_init=best,
        inherited=inherited if best == 0 else [],
        seconds=time.time() - t0,
    )


def full_train(
    program: Program,
    train_data: Any,
    val_data: Any,
    steps: int = 4000,
    lr: float = 2e-3,
    batch: int = 32,
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    init: str = "program",
    init_from: Program | None = None,
    loss: str = "l2",
    eval_every: int | None = None,
    time_limit: float | None = None,
    keep_zeros: bool = False,
) -> TrainResult:
    """Longer training of a finalist from its current weights, with cosine lr decay; keeps the best
    validation state (checked every ``eval_every`` steps, default ``steps // 10``). ``keep_zeros``: see
    :func:`train`."""
    return train(
        program,
        train_data,
        val_data,
        steps=steps,
        lr=lr,
        batch=batch,
        seed=seed,
        inits=1,
        select_after=0,
        device=device,
        loss=loss,
        init=init,
        init_from=init_from,
        lr_decay=True,
        eval_every=eval_every or max(1, steps // 10),
        time_limit=time_limit,
        keep_zeros=keep_zeros,
    )


def evaluate_program(program: Program, images: Sequence[np.ndarray], cfa: Any = None, linear: bool = False) -> float:
    """Mean CPSNR (dB) of ``program`` compiled with Halide over sRGB ``images``, with the protocol of
    :func:`rawdemosaic.evaluate.evaluate` (``linear=True``: mosaic in linear light, re-encoded to score)."""
    from rawdemosaic.evaluate import evaluate
    from rawdemosaic.program.compiler import Kernel

    kernel = Kernel(program, quiet=True, linear_io=linear)  # linear light in and out, as the converter runs it
    return evaluate(kernel, images, cfa if cfa is not None else program.cfa.value, linear=linear)
