"""What is checked before any attack runs: the run's numbers, and whether the data fits each target."""

from __future__ import annotations

from typing import cast

from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import DataError, UserError
from robustbench_cli.targets.base import Target

# Upper bounds far beyond any real evaluation, so that a typo (an extra zero, a unit slip) is one clear line at
# once instead of a scan that hangs or fails at its end
MAX_SEED = 2**63 - 1
MAX_BATCH = 1_000_000
MAX_QUERIES = 10**9
MAX_EOT = 10_000


def check_run(*, seed: int = 0, batch_size: int = 256, queries: int | None = None, eot: int = 1) -> None:
    """The numbers every run needs, whoever starts it (the command line, the Python API, a test)."""
    if not 0 <= seed <= MAX_SEED:  # numpy's generators take no negative seeds
        raise UserError(f"--seed must be in 0..{MAX_SEED}, got {seed}")
    if not 0 < batch_size <= MAX_BATCH:
        raise UserError(f"--batch-size must be in 1..{MAX_BATCH:,}, got {batch_size}")
    if queries is not None and not 0 < queries <= MAX_QUERIES:
        raise UserError(f"--queries must be in 1..{MAX_QUERIES:,}, got {queries}")
    if not 1 <= eot <= MAX_EOT:
        raise UserError(f"--eot must be in 1..{MAX_EOT:,} (draws per gradient), got {eot}")


def check_compatible(target: Target, data: EvalSet) -> None:
    """Refuse before any attack runs when the data cannot be fed to the target or its labels do not fit; the target
    learns its number of classes here if loading could not tell (one query, once)."""
    import torch

    target.bind(data.sample_shape, torch.as_tensor(data.x[:1]), data.name)
    num_classes = cast(int, target.num_classes)  # learnt by bind() when loading could not tell
    if len(data) and int(data.y.max()) >= num_classes:
        raise DataError(f"data {data.name} has label {int(data.y.max())} but the model has {num_classes} "
                        f"classes (0..{num_classes - 1})")
