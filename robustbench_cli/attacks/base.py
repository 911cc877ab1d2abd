"""The attack contract and its registry.

An attack declares its ``name``, the ``norms`` it supports and what it ``requires`` of a target, takes
keyword-only hyperparameters, and returns *candidates* from :meth:`Attack.run`. It never decides whether a
candidate succeeded: the harness projects each one onto the threat model, asks the target again, and only
then records a success.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import ClassVar, cast

import torch

from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.threat_model import Norm, ThreatModel
from robustbench_cli.targets.base import Capability, Oracle

REGISTRY: dict[str, type[Attack]] = {}


def register(cls: type[Attack]) -> type[Attack]:
    if cls.name in REGISTRY:
        raise ValueError(f"attack {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


@dataclasses.dataclass
class Goal:
    """What the attack must achieve per sample: leave ``labels`` (untargeted) or reach them (targeted)."""

    labels: torch.Tensor
    targeted: bool

    def reached(self, pred: torch.Tensor) -> torch.Tensor:
        return pred == self.labels if self.targeted else pred != self.labels

    def subset(self, idx) -> Goal:
        return Goal(self.labels[idx], self.targeted)


def likeliest_wrong_classes(oracle: Oracle, x0: torch.Tensor, goal: Goal, *, module: bool = False) -> torch.Tensor:
    """(n, classes - 1): each sample's other classes, likeliest first at the clean input (one query a sample), for
    attacks that pursue the top wrong classes in turn (APGD-T, FMN with ``targets``). Rows that cannot pay for the
    query keep their own label in every column, a target never reached. ``module``: ask the differentiable module
    rather than the scores route (the fast forward route may differ in the last bits)."""
    k = oracle.num_classes
    rows = torch.arange(len(x0))
    if oracle.budget is not None:
        rows = rows[oracle.remaining(rows) >= 1]
    ranked = goal.labels[:, None].repeat(1, max(k - 1, 1))
    if len(rows):
        r = rows.to(x0.device)
        with torch.no_grad():
            z = oracle.forward(x0[r], rows) if module else oracle.logits(x0[r], rows)
        ranked[r] = z.scatter(1, goal.labels[r][:, None], float("-inf")).argsort(dim=1, descending=True)[:, : k - 1]
    return ranked


class Attack(ABC):
    name: ClassVar[str]
    family: ClassVar[str]  # gradient | query | transfer | generative | baseline
    norms: ClassVar[frozenset[Norm]] = frozenset({Norm.LINF, Norm.L2})
    requires: ClassVar[Capability] = Capability.SCORES
    summary: ClassVar[str] = ""
    # the candidate is the smallest adversarial found, not bounded by the threat's epsilon
    minimum_norm: ClassVar[bool] = False
    # its candidates depend on the other samples of its batch (a shard cannot reproduce them: shards.py)
    batch_dependent: ClassVar[bool] = False

    def config(self) -> dict:
        """The hyperparameters, as recorded in the report."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @property
    def label(self) -> str:
        return self.name

    def unsupported_reason(self, capabilities: Capability, threat: ThreatModel, dim: int | None = None) -> str | None:
        """Why this attack cannot run on a target/threat/input size (``dim`` values per sample), or None if it can."""
        missing = [c for c in Capability if c in self.requires and c not in capabilities]
        if missing:
            return f"needs {', '.join(cast(str, c.name).lower() for c in missing)}; the target offers {', '.join(Capability.names(capabilities))}"
        if threat.norm not in self.norms:
            return f"supports {', '.join(sorted(n.value for n in self.norms))}, not {threat.norm.value}"
        return None

    def check_shape(self, sample_shape: tuple[int, ...]) -> None:
        """Refuse, before any work, inputs of a shape the attack cannot take (most take any shape)."""

    def forward_queries(self, sample_shape: tuple[int, ...], num_classes: int) -> int:
        """At most how many forward-only queries one sample costs this attack on a ``num_classes`` model: scores
        without gradients, the ones a target may answer from a faster stand-in (the harness's verification is not
        counted). The scan plans with it whether that stand-in repays its making (cascade.py). Gradient attacks ask a
        few per pass (a pass per restart and target class): the clean ranking of the classes, the last step's check."""
        targets = min(int(getattr(self, "targets", 1) or 1), max(num_classes - 1, 1))
        return 2 * int(getattr(self, "restarts", 1) or 1) * targets + 1

    @abstractmethod
    def run(self, oracle: Oracle, x: torch.Tensor, goal: Goal, threat: ThreatModel, rng: SampleRng) -> torch.Tensor:
        """Return one candidate per row of ``x`` (any value: the harness projects and verifies it)."""


def create(name: str, **params) -> Attack:

    if name not in REGISTRY:
        raise UserError(f"unknown attack {name!r} (known: {', '.join(sorted(REGISTRY))})")
    try:
        return REGISTRY[name](**params)
    except (TypeError, ValueError) as e:  # unknown or nonsensical hyperparameters
        raise UserError(f"attack {name}: {e}") from None
