"""What each sample's attack must achieve: leave its label (untargeted) or reach a target class (``--targeted``)."""

from __future__ import annotations

import numpy as np
import torch

from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.errors import UserError


def choose_goal(spec: str | None, labels: np.ndarray, clean_scores: torch.Tensor, k: int, seed: int,
                ids) -> tuple[np.ndarray, np.ndarray]:
    """Goal classes and eligibility: untargeted leaves the label; targeted reaches random / least-likely / class k."""
    if spec is None:
        return labels.copy(), np.ones(len(labels), dtype=bool)
    if spec == "random":
        offs = SampleRng(seed, "target-class", ids).integers(k - 1).numpy()
        return (labels + 1 + offs) % k, np.ones(len(labels), dtype=bool)
    if spec in ("least-likely", "ll"):
        return clean_scores.argmin(dim=1).cpu().numpy().astype(np.int64), np.ones(len(labels), dtype=bool)
    try:
        cls = int(spec)
    except ValueError:
        raise UserError(f"--targeted must be random, least-likely or a class index, got {spec!r}") from None
    if not 0 <= cls < k:
        raise UserError(f"--targeted class {cls} is outside the model's classes 0..{k - 1}")
    # samples of the target class itself have nothing to reach: they are left out of n
    return np.full(len(labels), cls, dtype=np.int64), labels != cls
