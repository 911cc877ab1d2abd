"""Commands that craft attack material: ``robust generator train`` (an AdvGAN perturbation generator for the
``generator`` attack) and ``robust surrogate train`` (a substitute model trained on a target's labels, for the
transfer attacks). The library parts are :mod:`robustbench_cli.training.advgan` and :mod:`robustbench_cli.training.substitute`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from robustbench_cli.cli.app import app, floats, user_errors
from robustbench_cli.core.errors import UserError

err = Console(stderr=True)

generator_app = typer.Typer(help="Train perturbation generators (AdvGAN) for the generator attack.", no_args_is_help=True)
surrogate_app = typer.Typer(help="Train substitute models on a target's labels, for the transfer attacks.",
                            no_args_is_help=True)
app.add_typer(generator_app, name="generator")
app.add_typer(surrogate_app, name="surrogate")

Data = Annotated[str, typer.Option(help="Training data, as in scan; not the evaluation data (for the built-in sample use "
                                        "mnist:train and evaluate on mnist:test).")]
Exclude = Annotated[list[str] | None, typer.Option(help="Evaluation data that must share no image with the training "
                                                           "data (repeatable), e.g. mnist:test.")]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[stats]}"), console=err, transient=False)


def _threat(eps: str | None, threat: str | None) -> str:
    if eps is not None and threat is not None:
        raise UserError("give --eps or --threat, not both")
    if eps is not None and ":" in eps:
        raise UserError("--eps takes a number (Linf); use --threat NORM:EPS for other norms")
    return threat or f"linf:{eps or '0.3'}"


@generator_app.command("train")
def generator_train(
    out: Annotated[Path, typer.Option("-o", "--out", help="Generator file to write (state dict and config; "
                                                          "scan loads it with --generator).", show_default=False)],
    surrogate: Annotated[list[str] | None, typer.Option(help="Model to fool, SPEC or SPEC@WEIGHTS (repeatable: an "
                                                                "ensemble); a surrogate, or the white-box target itself.")] = None,
    data: Data = "mnist:train",
    eps: Annotated[str | None, typer.Option(help="Linf epsilon, e.g. 0.3 or 8/255.")] = None,
    threat: Annotated[str | None, typer.Option(help="Threat model NORM:EPS instead of --eps, e.g. l2:2.")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training data.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Samples per update.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate of the generator and the discriminator.")] = 1e-3,
    adv_weight: Annotated[float, typer.Option(help="Weight of the adversarial (margin) loss.")] = 10.0,
    gan_weight: Annotated[float, typer.Option(help="Weight of the generator's GAN loss -log D(x').")] = 1.0,
    hinge_bound: Annotated[float | None, typer.Option(help="L2 bound c of the soft hinge max(0, ||delta||_2 - c) (off by default).")] = None,
    hinge_weight: Annotated[float, typer.Option(help="Weight of the hinge term.")] = 1.0,
    kappa: Annotated[float, typer.Option(help="Confidence margin of the adversarial loss.")] = 0.0,
    width: Annotated[int, typer.Option(help="Channels of the generator's first layer (and the discriminator's).")] = 16,
    blocks: Annotated[int, typer.Option(help="Residual blocks of the generator.")] = 2,
    n: Annotated[int | None, typer.Option("--n", help="Number of training samples (after --offset).")] = None,
    offset: Annotated[int, typer.Option(help="First sample to use.")] = 0,
    shuffle: Annotated[bool, typer.Option(help="Shuffle the data with the seed before selecting.")] = False,
    exclude: Exclude = None,
    weights_key: Annotated[str | None, typer.Option(help="Where the state dict sits in the surrogates' checkpoints.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Number of classes (timm models and factories that take it).")] = None,
    mean: Annotated[str | None, typer.Option(help="Per-channel mean applied inside the surrogates.")] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel std applied inside the surrogates.")] = None,
    trust_checkpoint: Annotated[bool, typer.Option(help="Allow full unpickling of checkpoints (runs code inside them).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and the batch order.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda[:N] or auto.")] = "cpu",
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Train an AdvGAN perturbation generator against --surrogate model(s) and write it to OUT.

    The generator attacks any number of inputs with one forward pass each: robust scan ... --generator OUT.
    """
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.training import advgan

    with user_errors(debug):
        cfg = advgan.GeneratorConfig(
            surrogates=list(surrogate or []), out=str(out),
            data=DataSpec(data, n=n, offset=offset, shuffle=shuffle),
            exclude=list(exclude or []), threat=_threat(eps, threat), epochs=epochs, batch_size=batch_size, lr=lr,
            adv_weight=adv_weight, gan_weight=gan_weight, hinge_weight=hinge_weight, hinge_bound=hinge_bound,
            kappa=kappa, width=width, blocks=blocks, seed=seed, device=device, weights_key=weights_key,
            num_classes=num_classes, mean=floats(mean, "--mean"), std=floats(std, "--std"),
            trust_checkpoint=trust_checkpoint)
        advgan.check_config(cfg)
        err.print(f"robust generator train: against {', '.join(cfg.surrogates)} on {data}, {cfg.threat}, "
                  f"{epochs} epoch(s), seed {seed}", highlight=False)
        progress = _progress()
        tasks: dict[int, TaskID] = {}

        def update(epoch: int, done: int, total: int, s: dict) -> None:
            if epoch not in tasks:
                tasks[epoch] = progress.add_task(f"epoch {epoch}/{epochs}", total=total, stats="")
            progress.update(tasks[epoch], completed=done, stats=(
                f"D {s['loss_d']:.3f}  G {s['loss_g']:.3f}  adv {s['adv']:.3f}  fools the surrogate "
                f"{100 * s['fooled']:.1f}%"))

        with progress:
            gen, config = advgan.train_generator(cfg, progress=update)
        path = advgan.save(gen, config, out)
        last = config["history"][-1]
        err.print(f"wrote {path}: fools the surrogate(s) on {100 * last['fooled']:.1f}% of the training batches in the "
                  f"last epoch ({config['seconds']:.1f}s); use it with robust scan ... --generator {path}",
                  highlight=False)


@surrogate_app.command("train")
def surrogate_train(
    model: Annotated[str, typer.Argument(help="The model to imitate, as in scan (an ONNX black box, file.py:factory with "
                                              "--weights, TorchScript, timm:NAME); only its predicted labels are used.",
                                         show_default=False)],
    arch: Annotated[str, typer.Option(help="Architecture of the substitute: file.py:Class, package.module:attr or timm:NAME.",
                                      show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Substitute checkpoint to write (a state dict); the card goes "
                                                          "to OUT.card.json.", show_default=False)],
    data: Data = "mnist:train",
    n: Annotated[int | None, typer.Option("--n", help="Initial samples (after --offset); their own labels are never used.")] = 150,
    offset: Annotated[int, typer.Option(help="First sample to use.")] = 0,
    shuffle: Annotated[bool, typer.Option(help="Shuffle the data with the seed before selecting (--no-shuffle: the first n).")] = True,
    exclude: Exclude = None,
    rounds: Annotated[int, typer.Option(help="Jacobian-based augmentation rounds (each doubles the set; 0: none).")] = 0,
    lam: Annotated[float, typer.Option(help="Augmentation step lambda.")] = 0.1,
    tau: Annotated[int | None, typer.Option(help="Flip lambda's sign every TAU rounds (periodic step size).")] = None,
    queries: Annotated[int | None, typer.Option(help="Budget of target queries (one per labelled point), the initial samples included.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs per round.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Samples per update.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    weights: Annotated[str | None, typer.Option(help="Checkpoint of MODEL when it is a PyTorch architecture.")] = None,
    weights_key: Annotated[str | None, typer.Option(help="Where the state dict sits in --weights.")] = None,
    layout: Annotated[str | None, typer.Option(help="ONNX input layout: nchw, nhwc or flat.")] = None,
    output: Annotated[str | None, typer.Option(help="ONNX output to read.")] = None,
    access: Annotated[str, typer.Option(help="What is asked of MODEL: auto, scores or labels (only labels are used).")] = "auto",
    num_classes: Annotated[int | None, typer.Option(help="Number of classes.")] = None,
    trust_checkpoint: Annotated[bool, typer.Option(help="Allow full unpickling of checkpoints (runs code inside them).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights, the batch order and the budget's subset.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda[:N] or auto.")] = "cpu",
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Train a substitute of MODEL from its labels (Papernot et al. 2017) and write a checkpoint with its card.

    Every labelled point is one counted query of MODEL (the card records them); use the result as
    robust scan MODEL ... --surrogate ARCH@OUT.
    """
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.training import substitute as lib

    with user_errors(debug):
        cfg = lib.SubstituteConfig(
            target=model, arch=arch, out=str(out), data=DataSpec(data, n=n, offset=offset, shuffle=shuffle),
            exclude=list(exclude or []), rounds=rounds, lam=lam, tau=tau, epochs=epochs, batch_size=batch_size, lr=lr,
            queries=queries, seed=seed, device=device, target_weights=weights, weights_key=weights_key, layout=layout,
            output=output, access=access, num_classes=num_classes, trust_checkpoint=trust_checkpoint)
        lib.check_config(cfg)
        err.print(f"robust surrogate train: {arch} imitating {model} on {data} (n={n}), {rounds} augmentation "
                  f"round(s), seed {seed}", highlight=False)
        progress = _progress()
        tasks: dict[int, TaskID] = {}

        def update(rho: int, epoch: int, total: int, s: dict) -> None:
            if rho not in tasks:
                tasks[rho] = progress.add_task(f"round {rho}/{rounds}", total=total, stats="")
            progress.update(tasks[rho], completed=epoch, stats=(
                f"{s['points']} points  loss {s['loss']:.4f}  agrees with the target on {100 * s['agreement']:.1f}%  "
                f"queries {s['queries']}"))

        with progress:
            module, card = lib.train_substitute(cfg, progress=update)
        ckpt, card_path = lib.save(module, card, out)
        last = card["history"][-1]
        err.print(f"wrote {ckpt} and {card_path}: {card['queries']} target queries, {last['points']} points, agrees "
                  f"with the target on {100 * last['train_agreement']:.1f}% of them; use it with "
                  f"--surrogate {arch}@{ckpt}", highlight=False)
