"""``robust train``: train a PyTorch model (standard, PGD, TRADES, logit pairing) or a detector, and write a checkpoint
with its card. The library part is :mod:`robustbench_cli.training.train`."""

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


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


@app.command("train")
def train_command(
    model: Annotated[str, typer.Argument(help="Architecture to train: file.py:Class, package.module:attr or timm:NAME "
                                              "(as in scan). file.py imports and runs that Python file.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Checkpoint to write (a state dict); the card goes to OUT.card.json.",
                                      show_default=False)],
    data: Annotated[str, typer.Option(help="Training data, as in scan. Not the evaluation data: for the built-in sample "
                                           "use mnist:train and evaluate on mnist:test.")] = "mnist:train",
    mode: Annotated[str | None, typer.Option(help="standard, pgd (Madry), trades or alp (adversarial logit pairing). Default pgd.")] = None,
    eps: Annotated[str | None, typer.Option(help="Linf epsilon of the training attack, e.g. 0.3 or 8/255.")] = None,
    threat: Annotated[str | None, typer.Option(help="Threat model NORM:EPS of the training attack (instead of --eps), e.g. l2:1.5.")] = None,
    steps: Annotated[int, typer.Option(help="PGD steps of the training attack.")] = 10,
    step_size: Annotated[float | None, typer.Option(help="PGD step as a fraction of epsilon (default 2.5 / steps).")] = None,
    gamma: Annotated[float | None, typer.Option(help="pgd: weight of the adversarial loss in [0,1] (default 1, Madry); "
                                                        "alp: weight of the logit pairing term (default 0.5).")] = None,
    beta: Annotated[float, typer.Option(help="trades: weight of the KL term.")] = 6.0,
    epochs: Annotated[int, typer.Option(help="Passes over the training data.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Samples per update.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam or sgd (momentum 0.9).")] = "adam",
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 0.0,
    eps_ramp: Annotated[int, typer.Option(help="Epochs over which epsilon grows linearly to its value (0: from the start).")] = 0,
    holdout: Annotated[int, typer.Option(help="Samples of --data held out of training (a seeded draw); the card's final "
                                              "accuracies and the per-epoch check are measured on them.")] = 0,
    exclude: Annotated[list[str] | None, typer.Option(help="Evaluation data that must share no image with the training "
                                                              "data (repeatable), e.g. mnist:test.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of training samples (after --offset).")] = None,
    offset: Annotated[int, typer.Option(help="First sample to use.")] = 0,
    shuffle: Annotated[bool, typer.Option(help="Shuffle the data with the seed before selecting.")] = False,
    data_layout: Annotated[str | None, typer.Option(help="Layout of the data arrays: nchw or nhwc.")] = None,
    data_scale: Annotated[float | None, typer.Option(help="Divide pixel values by this.")] = None,
    check_steps: Annotated[int, typer.Option(help="PGD steps of the held-out check (verified by the harness).")] = 20,
    check_n: Annotated[int, typer.Option(help="At most this many samples in that check.")] = 1000,
    weights: Annotated[str | None, typer.Option(help="Initial weights (state dict) to fine-tune from.")] = None,
    weights_key: Annotated[str | None, typer.Option(help="Where the state dict sits in --weights.")] = None,
    trust_checkpoint: Annotated[bool, typer.Option(help="Allow full unpickling of checkpoints (runs code inside them).")] = False,
    num_classes: Annotated[int | None, typer.Option(help="Number of classes (timm models and factories that take it).")] = None,
    mean: Annotated[str | None, typer.Option(help="Per-channel mean applied inside the model, e.g. 0.1307.")] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel std applied inside the model.")] = None,
    detector: Annotated[bool, typer.Option("--detector", help="Train MODEL as a detector: clean (0) against PGD inputs (1) "
                                                              "of the classifier given by --classifier.")] = False,
    classifier: Annotated[str | None, typer.Option(help="With --detector: the classifier whose attacked inputs the detector learns.")] = None,
    classifier_weights: Annotated[str | None, typer.Option(help="With --detector: the classifier's state dict.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights, the batch order and every random start.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda[:N] or auto.")] = "cpu",
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Train MODEL on --data and write a checkpoint with a JSON card (how it was trained, data hash, final accuracies).

    Modes: standard, pgd (Madry et al. 2018), trades (Zhang et al. 2019), alp (Kannan et al. 2018); the inner attack
    is robust's own PGD. Same seed, same weights (on the same machine and thread count).
    """
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.training import train as lib

    with user_errors(debug):
        if eps is not None and threat is not None:
            raise UserError("give --eps or --threat, not both")
        if eps is not None and ":" in eps:
            raise UserError("--eps takes a number (Linf); use --threat NORM:EPS for other norms")
        if detector and classifier is None:
            raise UserError("--detector needs --classifier SPEC (and usually --classifier-weights)")
        if classifier is not None and not detector:
            raise UserError("--classifier is for --detector training")
        if detector and mode is not None:
            raise UserError("--mode does not apply to --detector training (it trains on PGD inputs of the classifier)")
        cfg = lib.TrainConfig(
            model=model, out=str(out),
            data=DataSpec(data, n=n, offset=offset, shuffle=shuffle, layout=data_layout, scale=data_scale),
            holdout=holdout, exclude=list(exclude or []), mode=mode or "pgd",
            threat=threat or f"linf:{eps or '0.3'}", steps=steps, step_size=step_size, gamma=gamma, beta=beta,
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
            eps_ramp=eps_ramp, check_steps=check_steps, check_n=check_n, weights=weights, weights_key=weights_key,
            trust_checkpoint=trust_checkpoint, num_classes=num_classes, mean=floats(mean, "--mean"),
            std=floats(std, "--std"), seed=seed, device=device, detector_for=classifier,
            classifier_weights=classifier_weights,
        )
        lib.check_config(cfg)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[stats]}"), console=err, transient=False)
        tasks: dict[int, TaskID] = {}

        def update(epoch: int, done: int, total: int, s: dict) -> None:
            if epoch not in tasks:
                tasks[epoch] = progress.add_task(f"epoch {epoch}/{epochs}", total=total, stats="")
            text = f"loss {s['loss']:.4f}  clean {_pct(s['clean'])}"
            if s.get("robust") is not None:
                text += f"  {'flagged adv' if detector else 'robust'} {_pct(s['robust'])}"
            progress.update(tasks[epoch], completed=done, stats=text)

        def epoch_line(st) -> None:
            if st.check:
                progress.console.print(f"  epoch {st.epoch}: held-out clean {_pct(st.check['clean_accuracy'])}, robust "
                                       f"{_pct(st.check['robust_accuracy'])} ({st.check['threat']}, "
                                       f"n={st.check['n']})", highlight=False)

        with progress:
            result = lib.train(cfg, progress=update, on_epoch=epoch_line if holdout else None,
                               on_start=lambda line: progress.console.print(line, highlight=False))
        ckpt, card_path = lib.save(result, out)
        final = result.card["final"]
        if detector:
            err.print(f"detector on {final['on']} (n={final['n']}): flags {_pct(final['clean_flagged'])} of clean inputs "
                      f"and {_pct(final['adversarial_flagged'])} of PGD inputs ({final['threat']})", highlight=False)
        else:
            err.print(f"final on {final['on']} (n={final['n']}): clean {_pct(final['clean_accuracy'])}, robust "
                      f"{_pct(final['robust_accuracy'])} ({final['threat']}, {final['attack']})", highlight=False)
        err.print(f"wrote {ckpt} and {card_path} ({result.card['samples_per_second']} samples/s)", highlight=False)
