"""Random-noise baseline: points drawn uniformly from the epsilon ball (Linf: the cube; L2: uniform in radius^d and
direction), clipped to the input box, one query each. It is not an attack but a yardstick: the harness runs it on
every clean-correct sample, and if noise breaks more of an attack's samples than the attack itself did, the attack
is not working (gradient masking, a wrong loss, a bug) and the report says so.

Default: 20 draws per sample; a sample stops at the first draw that reaches the goal.

Example::

    robust scan model.onnx --eps 0.3 --attacks noise
"""

from __future__ import annotations

import torch

from robustbench_cli.attacks.base import Attack, register
from robustbench_cli.attacks.steps import random_start
from robustbench_cli.targets.base import Capability


@register
class Noise(Attack):
    name = "noise"
    family = "baseline"
    requires = Capability.LABELS
    summary = "uniform random points in the epsilon ball: the yardstick every attack must beat"

    def __init__(self, *, draws: int = 20):
        if draws < 1:
            raise ValueError("draws must be >= 1")
        self.draws = draws

    def forward_queries(self, sample_shape: tuple[int, ...], num_classes: int) -> int:
        return self.draws

    def run(self, oracle, x0, goal, threat, rng):
        bounds = oracle.target.bounds
        out = x0.clone()
        pending = torch.ones(len(x0), dtype=torch.bool)
        for _ in range(self.draws):
            rows = (pending & (oracle.remaining() >= 1)).nonzero().squeeze(1)
            if not len(rows):
                break
            dev_rows = rows.to(x0.device)
            x = random_start(x0[dev_rows], threat, rng, rows.tolist(), bounds)
            hit = goal.subset(dev_rows).reached(oracle.predict(x, rows).to(x0.device)).cpu()
            out[dev_rows] = x  # the last draw stands when none succeeds; the harness judges it
            pending[rows[hit]] = False
        return out
