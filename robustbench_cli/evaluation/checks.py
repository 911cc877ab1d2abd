"""What is checked before any attack runs: the run's numbers, and whether the data fits each target."""

from __future__ import annotations

from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import DataError, UserError
from robustbench_cli.targets.base import Target


def check_run(*, seed: int = 0, batch_size: int = 256, queries: int | None = None, eot: int = 1) -> None:
    """The numbers every run needs, whoever starts it (the command line, the Python API, a test)."""
    if seed < 0:  # numpy's generators take no negative seeds
        raise UserError(f"--seed must be >= 0, got {seed}")
    if batch_size <= 0:
        raise UserError(f"--batch-size must be > 0, got {batch_size}")
    if queries is not None and queries <= 0:
        raise UserError(f"--queries must be > 0, got {queries}")
    if eot < 1:
        raise UserError(f"--eot must be >= 1, got {eot}")


def check_compatible(target: Target, data: EvalSet) -> None:
    """Refuse before any attack runs when the data cannot be fed to the target or its labels do not fit; the target
    learns its number of classes here if loading could not tell (one query, once)."""
    import torch

    target.bind(data.sample_shape, torch.as_tensor(data.x[:1]), data.name)
    if len(data) and int(data.y.max()) >= target.num_classes:
        raise DataError(f"data {data.name} has label {int(data.y.max())} but the model has {target.num_classes} "
                        f"classes (0..{target.num_classes - 1})")
