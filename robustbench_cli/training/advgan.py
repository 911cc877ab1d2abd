"""Training a perturbation generator, AdvGAN-style (Xiao et al. 2018, "Generating Adversarial Examples with
Adversarial Networks"), for the ``generator`` attack (:mod:`robustbench_cli.attacks.generative`).

The generator G maps x to ``u = G(x)`` in [-1, 1]^d; the adversarial input is ``x' = clip(x + delta)`` with
``delta = eps * u`` (Linf) or ``eps * u / ||u||_2`` (L2), so the threat's norm bound holds by construction. A
discriminator D (one logit, "real image") plays the GAN game against G. Per batch:

- D step, the discriminator's two cross-entropies: ``-log D(x) - log(1 - D(x'))`` (x' detached).
- G step: ``adv_weight * L_adv + gan_weight * L_GAN + hinge_weight * L_hinge`` with
  ``L_GAN = -log D(x')`` (the non-saturating generator loss), ``L_adv = mean max(Z_y - max_{i != y} Z_i, -kappa)``
  (the Carlini-Wagner margin on the surrogates' mean logits, as in the paper), and the paper's soft hinge on the
  perturbation's L2 norm ``L_hinge = mean max(0, ||delta||_2 - c)`` (off unless ``hinge_bound`` c is given: the
  scaling above already bounds the norm).

Defaults: 10 epochs, batch 64, Adam (lr 1e-3, betas 0.5/0.999) for both networks, adv_weight 10, gan_weight 1,
kappa 0, generator width 16 with 2 residual blocks. Deviations from the paper: a smaller generator and critic (MNIST
sized, trained on a CPU in seconds), the hard norm bound by scaling instead of clipping, and the true labels of the
training data as y (untargeted only).

Deterministic under a seed: the initial weights of G and D (``torch.manual_seed``) and the batch order (a seeded
generator); the same seed, machine and thread count give the same file. The surrogates are never the evaluated
target's queries: training costs no target query (``surrogate_passes`` counts the surrogates' forward passes).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_cli.attacks.generative import (
    Discriminator,
    GeneratorNet,
    perturbation,
    save_generator,
)
from robustbench_cli.attacks.transfer import Surrogate, describe, load_surrogate
from robustbench_cli.core.data import DataSpec, EvalSet, load_eval_set
from robustbench_cli.core.errors import DataError, UserError
from robustbench_cli.core.io import writable_parent
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.core.version import __version__
from robustbench_cli.evaluation import check_compatible
from robustbench_cli.targets import resolve_device
from robustbench_cli.training.train import check_disjoint


@dataclass
class GeneratorConfig:
    surrogates: list[str]  # SPEC or SPEC@WEIGHTS, as scan's --surrogate (a white-box target works as well)
    out: str
    data: DataSpec = field(default_factory=lambda: DataSpec("mnist:train"))  # the training data (not the evaluation data)
    exclude: list[str] = field(default_factory=list)  # evaluation data that must share no image with the training data
    threat: str = "linf:0.3"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    adv_weight: float = 10.0
    gan_weight: float = 1.0
    hinge_weight: float = 1.0
    hinge_bound: float | None = None  # c of the soft hinge on ||delta||_2; None: no hinge term
    kappa: float = 0.0
    width: int = 16
    blocks: int = 2
    seed: int = 0
    device: str = "cpu"
    weights_key: str | None = None
    num_classes: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    trust_checkpoint: bool = False


# progress(epoch, batch, batches, running stats)
Progress = Callable[[int, int, int, dict], None]


def check_out(path: str) -> Path:
    out = Path(path).expanduser()
    if out.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")

    writable_parent(out, f"cannot write {path}")
    return out


def load_training_data(spec: DataSpec, *, seed: int, exclude: list[str]) -> tuple[EvalSet, list]:
    """The training data, refused when it shares an image with any ``exclude`` (evaluation) data set."""

    data = spec.load(seed)
    if not len(data):
        raise DataError(f"data {data.name} has no samples to train on")
    excluded = []
    for e in exclude:
        other = load_eval_set(e)
        check_disjoint(data, other)
        excluded.append({"name": other.name, "n": len(other), "sha256": other.sha256})
    return data, excluded


def check_config(cfg: GeneratorConfig) -> ThreatModel:
    if not cfg.surrogates:
        raise UserError("give the model(s) to train against: --surrogate SPEC (repeatable; SPEC@WEIGHTS)")
    for name, v in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size), ("--width", cfg.width)):
        if v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    if cfg.blocks < 0:
        raise UserError(f"--blocks must be >= 0, got {cfg.blocks}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be > 0, got {cfg.lr}")
    for name, w in (("--adv-weight", cfg.adv_weight), ("--gan-weight", cfg.gan_weight),
                    ("--hinge-weight", cfg.hinge_weight), ("--kappa", cfg.kappa)):
        if not (w >= 0 and math.isfinite(w)):
            raise UserError(f"{name} must be >= 0, got {w}")
    if cfg.hinge_bound is not None and not cfg.hinge_bound >= 0:
        raise UserError(f"--hinge-bound must be >= 0, got {cfg.hinge_bound}")
    threat = ThreatModel.parse(cfg.threat)
    if threat.targeted:
        raise UserError("the generator is trained untargeted: drop ':targeted' from --threat")
    check_out(cfg.out)
    return threat


def margin_loss(z: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """Xiao et al.'s untargeted adversarial loss: ``max(Z_y - max_{i != y} Z_i, -kappa)`` per sample."""
    own = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return (own - other).clamp_min(-kappa)


def train_generator(cfg: GeneratorConfig, progress: Progress | None = None) -> tuple[GeneratorNet, dict]:
    """Train G (and its discriminator) and return G with the file's config (nothing is written: see :func:`save`)."""

    threat = check_config(cfg)
    device = resolve_device(cfg.device)
    data, excluded = load_training_data(cfg.data, seed=cfg.seed, exclude=cfg.exclude)
    if len(data.sample_shape) != 3:
        raise DataError(f"the generator works on images (channels, height, width); data {data.name} has inputs of "
                        f"shape {'x'.join(map(str, data.sample_shape))}")
    threat.check_against_dim(int(np.prod(data.sample_shape)))
    models = [load_surrogate(s, weights_key=cfg.weights_key, num_classes=cfg.num_classes, mean=cfg.mean, std=cfg.std,
                             device=str(device), trust_checkpoint=cfg.trust_checkpoint) for s in cfg.surrogates]
    for model in models:
        check_compatible(model, data)
        model.detect_output_kind(model.scores(torch.as_tensor(data.x[:64]).to(device)))
    ensemble = Surrogate(models)
    lo, hi = models[0].bounds

    channels = data.sample_shape[0]
    torch.manual_seed(cfg.seed)  # the initial weights of both networks follow the seed
    gen = GeneratorNet(channels, cfg.width, cfg.blocks).to(device)
    disc = Discriminator(channels, cfg.width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    x_all = torch.as_tensor(data.x).to(device)
    y_all = torch.as_tensor(data.y).to(device)
    order = torch.Generator().manual_seed(cfg.seed)
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    history, passes = [], 0
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        gen.train()
        disc.train()
        perm = torch.randperm(len(data), generator=order)
        tot = {"loss_d": 0.0, "loss_g": 0.0, "adv": 0.0, "gan": 0.0, "fooled": 0.0}
        count = 0
        for b in range(per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(device)
            xb, yb = x_all[idx], y_all[idx]
            delta = perturbation(gen(xb), threat.norm, threat.epsilon)
            x_adv = (xb + delta).clamp(lo, hi)
            # the discriminator's two cross-entropies: real images are 1, perturbed ones 0
            opt_d.zero_grad(set_to_none=True)
            d_real, d_fake = disc(xb), disc(x_adv.detach())
            loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            loss_d.backward()
            opt_d.step()
            # the generator: fool the surrogates, look real to D (non-saturating -log D(x')), stay small
            opt_g.zero_grad(set_to_none=True)
            d_fake = disc(x_adv)
            l_gan = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            with torch.enable_grad():
                z = ensemble.logits(x_adv)
            passes += len(xb) * len(models)
            l_adv = margin_loss(z, yb, cfg.kappa).mean()
            loss_g = cfg.adv_weight * l_adv + cfg.gan_weight * l_gan
            if cfg.hinge_bound is not None:
                loss_g = loss_g + cfg.hinge_weight * (delta.flatten(1).norm(dim=1) - cfg.hinge_bound).clamp_min(0).mean()
            if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
                raise UserError(f"the training loss became non-finite at epoch {epoch}, batch {b + 1}: lower --lr")
            loss_g.backward()
            opt_g.step()
            m = len(xb)
            count += m
            for k, v in (("loss_d", loss_d), ("loss_g", loss_g), ("adv", l_adv), ("gan", l_gan)):
                tot[k] += float(v.detach()) * m
            tot["fooled"] += float((z.argmax(dim=1) != yb).sum())
            if progress:
                progress(epoch, b + 1, per_epoch, {k: v / count for k, v in tot.items()})
        history.append({"epoch": epoch, **{k: round(v / count, 6) for k, v in tot.items()}})
    seconds = time.perf_counter() - t_start
    gen.eval()

    config = {
        "architecture": {"channels": int(channels), "width": cfg.width, "blocks": cfg.blocks},
        "input_shape": list(map(int, data.sample_shape)),
        "threat": threat.name, "norm": threat.norm.value, "epsilon": threat.epsilon,
        **describe(models),
        "data": {"name": data.name, "n": len(data), "sha256": data.sha256, "excluded": excluded},
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
        "loss": {"adv_weight": cfg.adv_weight, "gan_weight": cfg.gan_weight, "hinge_weight": cfg.hinge_weight,
                 "hinge_bound": cfg.hinge_bound, "kappa": cfg.kappa,
                 "generator": "adv_weight * mean max(Z_y - max_other Z, -kappa) + gan_weight * -log D(x') "
                              "+ hinge_weight * mean max(0, ||delta||_2 - hinge_bound)",
                 "discriminator": "-log D(x) - log(1 - D(x'))"},
        "history": history,
        "surrogate_passes": passes,
        "seconds": round(seconds, 3),
        "tool": {"name": "robust", "version": __version__},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return gen, config


def save(gen: GeneratorNet, config: dict, out: str | Path) -> Path:
    return save_generator(check_out(str(out)), gen, config)

