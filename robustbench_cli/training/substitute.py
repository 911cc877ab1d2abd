"""Training a substitute (surrogate) model from the target's answers, for transfer attacks when the user has none
(Papernot et al. 2017, "Practical Black-Box Attacks against Machine Learning").

The substitute F (any PyTorch architecture, as ``robust train`` builds it) learns to imitate the target O from O's
predicted labels only:

1. S_0: ``n`` inputs drawn (seeded) from the training data the user names (their labels are never used).
2. For each round rho = 0 .. R: label the new points of S_rho by O (one counted query each), train F on
   (S_rho, O(S_rho)) for ``epochs`` epochs (warm start from the previous round), then, unless rho = R, augment by
   Jacobian-based data augmentation: ``S_{rho+1} = S_rho U {clip(x + lambda_rho * sign(dF_{O(x)}(x) / dx))}``,
   which doubles the set, moving each point along the gradient of F's score for O's label.
3. ``lambda_rho = lambda`` (0.1), or with ``tau`` Papernot's periodic step size ``lambda * (-1)^floor(rho / tau)``.

Queries: every labelled point costs one query of the target, counted by the project's :class:`Oracle` (the card
records the total and the count per round). ``queries`` is a hard budget on them: when a round's new points would
exceed it, a seeded random subset of them that fits is labelled, and augmentation stops once it is spent.

Defaults: n 150 (the paper's MNIST seed set), R 0 (no augmentation; the paper uses 6 rounds), lambda 0.1, 10
epochs a round, batch 64, Adam lr 1e-3. Deviations: warm start between rounds, and the budget's random subset in
place of the paper's reservoir sampling. Deterministic under a seed (initial weights, batch order, the subset).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_cli.core.data import DataSpec
from robustbench_cli.core.errors import TargetError, UserError
from robustbench_cli.core.io import atomic_write
from robustbench_cli.core.version import __version__
from robustbench_cli.evaluation import check_compatible
from robustbench_cli.targets import TargetSpec, load_target, resolve_device
from robustbench_cli.targets.base import Oracle
from robustbench_cli.targets.pytorch import load_torch_target
from robustbench_cli.training.advgan import check_out, load_training_data
from robustbench_cli.training.train import trainable_parameters

CARD_FORMAT = "robust-substitute-card/1"


@dataclass
class SubstituteConfig:
    target: str  # the model to imitate: any scan target spec (ONNX black box included)
    arch: str  # the substitute's architecture: file.py:Class, package.module:attr or timm:NAME
    out: str
    # the training data (not the evaluation data); a seeded draw: the first n of a class-sorted set would be one class
    data: DataSpec = field(default_factory=lambda: DataSpec("mnist:train", n=150, shuffle=True))
    exclude: list[str] = field(default_factory=list)
    rounds: int = 0  # Jacobian-based augmentation rounds
    lam: float = 0.1
    tau: int | None = None  # flip lambda's sign every tau rounds (periodic step size); None: never
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    queries: int | None = None  # budget of target queries (labels)
    seed: int = 0
    device: str = "cpu"
    # how the target is loaded (as in scan)
    target_weights: str | None = None
    weights_key: str | None = None
    layout: str | None = None
    output: str | None = None
    access: str = "auto"
    num_classes: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    trust_checkpoint: bool = False


Progress = Callable[[int, int, int, dict], None]  # (round, epoch, epochs, stats)


def check_config(cfg: SubstituteConfig) -> None:
    for name, v, low in (("--rounds", cfg.rounds, 0), ("--epochs", cfg.epochs, 1), ("--batch-size", cfg.batch_size, 1)):
        if v < low:
            raise UserError(f"{name} must be >= {low}, got {v}")
    if cfg.tau is not None and cfg.tau < 1:
        raise UserError(f"--tau must be >= 1, got {cfg.tau}")
    if not (cfg.lam > 0 and math.isfinite(cfg.lam)):
        raise UserError(f"--lam must be > 0, got {cfg.lam}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.queries is not None and cfg.queries < 1:
        raise UserError(f"--queries must be >= 1, got {cfg.queries}")
    if cfg.arch.lower().endswith(".onnx"):
        raise TargetError("the substitute needs a PyTorch architecture to train (file.py:Class, package.module:attr or "
                          "timm:NAME), not an ONNX file")

    check_out(cfg.out)


def label(target, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, int]:
    """The target's predicted class for every row of ``x``, one counted query each; (labels, queries spent)."""

    out, spent = [], 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(target.device)
        oracle = Oracle(target, len(xb))
        pred = oracle.predict(xb, exact=True)
        spent += int(oracle.used.sum())
        out.append(pred.cpu())
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)), spent


def jacobian_step(forward, x: torch.Tensor, labels: torch.Tensor, lam: float, bounds, batch_size: int) -> torch.Tensor:
    """``clip(x + lam * sign(d F_label(x) / dx))``: Papernot's augmentation along the substitute's Jacobian row."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            z = forward(xb)
            (g,) = torch.autograd.grad(z.gather(1, labels[i : i + batch_size, None].to(z.device)).sum(), xb)
        out.append((xb.detach() + lam * g.sign()).clamp(*bounds))
    return torch.cat(out)


def train_substitute(cfg: SubstituteConfig, progress: Progress | None = None):
    """Train the substitute; returns (module, card). Nothing is written: see :func:`save`."""

    check_config(cfg)
    device = resolve_device(cfg.device)
    data, excluded = load_training_data(cfg.data, seed=cfg.seed, exclude=cfg.exclude)
    onnx = cfg.target.lower().endswith(".onnx")
    target = load_target(TargetSpec(
        cfg.target, weights=cfg.target_weights, weights_key=cfg.weights_key, num_classes=cfg.num_classes,
        mean=None if onnx or cfg.mean is None else tuple(cfg.mean),
        std=None if onnx or cfg.std is None else tuple(cfg.std), layout=cfg.layout, output=cfg.output,
        access=cfg.access, device=str(device), trust_checkpoint=cfg.trust_checkpoint))
    probe_rows = 1 if target.num_classes is None else 0  # check_compatible asks one row for the class count
    check_compatible(target, data)
    if cfg.queries is not None and len(data) > cfg.queries:
        raise UserError(f"--queries {cfg.queries} cannot label the {len(data)} initial samples: lower --n or raise the budget")
    torch.manual_seed(cfg.seed)  # the substitute's initial weights follow the seed
    net = load_torch_target(cfg.arch, num_classes=cfg.num_classes or target.num_classes, mean=cfg.mean, std=cfg.std,
                            device=device)
    if net.kind == "torchscript":
        raise TargetError(f"{cfg.arch} is TorchScript: the substitute needs its architecture as Python code")
    if not net.accepts(data.sample_shape):
        raise TargetError(f"the substitute {cfg.arch} takes {net.expected_shape_text()}, not the data's "
                          f"{'x'.join(map(str, data.sample_shape))}")
    try:
        width = int(net.scores(torch.as_tensor(data.x[:1]).to(device)).shape[1])
    except RuntimeError as e:
        raise TargetError(f"the substitute {cfg.arch} rejects inputs of shape {data.sample_shape}: "
                          f"{str(e).strip().splitlines()[0]}") from None
    if width != target.num_classes:
        raise TargetError(f"the substitute {cfg.arch} has {width} outputs but the target has {target.num_classes} "
                          "classes (factories that take num_classes get the target's)")
    module = net.model
    params = trainable_parameters(module, cfg.arch)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    order = torch.Generator().manual_seed(cfg.seed)
    subset_rng = np.random.default_rng(cfg.seed)

    x = torch.as_tensor(data.x)
    y, spent = label(target, x, 256)
    queries_per_round = [spent]
    rounds: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for rho in range(cfg.rounds + 1):
        for epoch in range(1, cfg.epochs + 1):
            module.train()
            perm = torch.randperm(len(x), generator=order)
            tot, correct = 0.0, 0
            for b in range(0, len(x), cfg.batch_size):
                idx = perm[b : b + cfg.batch_size]
                xb, yb = x[idx].to(device), y[idx].to(device)
                opt.zero_grad(set_to_none=True)
                z = net.forward(xb)
                loss = F.cross_entropy(z, yb)
                if not torch.isfinite(loss):
                    raise UserError(f"the training loss became {float(loss)} in round {rho}: lower --lr")
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(idx)
                correct += int((z.argmax(dim=1) == yb).sum())
            if progress:
                progress(rho, epoch, cfg.epochs, {"loss": tot / len(x), "agreement": correct / len(x), "points": len(x),
                                                  "queries": sum(queries_per_round)})
        module.eval()
        agree = float((net.scores(x.to(device)).argmax(1).cpu() == y).float().mean())
        rounds.append({"round": rho, "points": len(x), "queries": queries_per_round[-1], "train_agreement": round(agree, 6)})
        if rho == cfg.rounds:
            break
        left = None if cfg.queries is None else cfg.queries - sum(queries_per_round)
        if left is not None and left <= 0:
            rounds[-1]["stopped"] = "query budget spent"
            break
        lam = cfg.lam * (-1) ** (rho // cfg.tau) if cfg.tau else cfg.lam
        new = jacobian_step(net.forward, x.to(device), y, lam, target.bounds, 256).cpu()
        if left is not None and len(new) > left:  # the budget's share: a seeded random subset of the new points
            keep = np.sort(subset_rng.choice(len(new), size=left, replace=False))
            new = new[torch.as_tensor(keep)]
        y_new, spent = label(target, new, 256)
        queries_per_round.append(spent)
        x, y = torch.cat([x, new]), torch.cat([y, y_new])
    module.eval()
    for p in params:
        p.requires_grad_(False)
    card = {
        "format": CARD_FORMAT,
        "method": "Papernot et al. 2017: substitute trained on the target's labels, Jacobian-based augmentation",
        "target": target.describe(),
        "architecture": cfg.arch,
        "data": {"name": data.name, "n": len(data), "sha256": data.sha256, "excluded": excluded},
        "rounds": cfg.rounds, "lambda": cfg.lam, "tau": cfg.tau, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "seed": cfg.seed, "budget": cfg.queries,
        "queries": int(sum(queries_per_round)), "queries_per_round": queries_per_round, "probe_rows": probe_rows,
        "history": rounds,
        "seconds": round(time.perf_counter() - t0, 3),
        "use": f"--surrogate {cfg.arch}@{cfg.out}",
        "tool": {"name": "robust", "version": __version__},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return module, card


def save(module, card: dict, out: str | Path) -> tuple[Path, Path]:
    """The state dict at ``out`` and the card at ``out.card.json``, each written atomically."""
    import io


    p = Path(out).expanduser()
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buf)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(p)
    card_path = p.with_name(p.name + ".card.json")
    atomic_write(card_path, json.dumps(card, indent=1) + "\n")
    return p, card_path
