"""The attacks, one module per family, and their registry (``robust attacks`` lists them)."""

from robustbench_cli.attacks import apgd, cw, fgsm, fmn, generative, hopskipjump, noise, pgd, square, transfer  # noqa: F401  (registration side effects)  # noqa: F401,E402  (registration side effects)
from robustbench_cli.attacks.base import REGISTRY, Attack, Goal, create, register

__all__ = ["REGISTRY", "Attack", "Goal", "create", "register"]
