"""The linear example of the lecture notes, through the project's own gradient source, step and FGSM code."""

import math

import torch
from torch import nn

from robustbench_cli.attacks import Goal
from robustbench_cli.attacks.fgsm import FGSM
from robustbench_cli.attacks.gradients import Autograd
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.attacks.steps import ascent_step
from robustbench_cli.core.threat_model import Norm, ThreatModel
from robustbench_cli.targets.base import Oracle
from robustbench_cli.targets.pytorch import TorchTarget

W = [1.0, 3.0, -1.0, 2.0, 2.0, 3.0]
X = [[1.0, -1.0, 2.0, 0.0, 3.0, -2.0]]


def linear_target(two_class: bool) -> TorchTarget:
    lin = nn.Linear(6, 2 if two_class else 1, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0] * 6, W] if two_class else [W]))
        lin.bias.zero_()
    t = TorchTarget(lin, "lecture-linear")
    t.bounds = (-math.inf, math.inf)  # the lecture's x lives outside the image box
    t.num_classes = 2 if two_class else 1
    return t


def score(t: TorchTarget, x: torch.Tensor) -> float:
    return float(t.scores(x)[0, -1])


def test_score_and_gradient_of_the_linear_model():
    t = linear_target(False)
    x = torch.tensor(X)
    assert score(t, x) == -4.0
    loss, grad, _ = Autograd().value_and_grad(Oracle(t, 1), x, torch.arange(1), Goal(torch.zeros(1, dtype=torch.long), False),
                                              lambda z, goal: z[:, 0], SampleRng(0, "t", [0]))
    assert float(loss[0]) == -4.0
    assert grad[0].tolist() == W


def test_step_along_the_gradient_gives_the_lecture_numbers():
    t = linear_target(False)
    x = torch.tensor(X)
    _, grad, _ = Autograd().value_and_grad(Oracle(t, 1), x, torch.arange(1), Goal(torch.zeros(1, dtype=torch.long), False),
                                           lambda z, goal: z[:, 0], SampleRng(0, "t", [0]))
    x_star = ascent_step(x, grad, 0.2, None)
    assert torch.allclose(x_star, torch.tensor([[1.2, -0.4, 1.8, 0.4, 3.4, -1.4]]))
    assert math.isclose(score(t, x_star), 1.6, abs_tol=1e-5)
    x_fgsm = ascent_step(x, grad, 0.2, Norm.LINF)
    assert math.isclose(score(t, x_fgsm) - score(t, x), 0.2 * sum(abs(w) for w in W), abs_tol=1e-5)  # 2.4


def test_fgsm_attack_raises_the_score_by_eps_times_l1_norm():
    t = linear_target(True)  # logits [0, w.x]: class 0 is predicted at x (w.x = -4)
    x = torch.tensor(X)
    adv = FGSM().run(Oracle(t, 1), x, Goal(torch.zeros(1, dtype=torch.long), False), ThreatModel.parse("linf:0.2"),
                     SampleRng(0, "t", [0]))
    assert torch.allclose(adv, x + 0.2 * torch.sign(torch.tensor(W)))
    assert math.isclose(score(t, adv), -4.0 + 2.4, abs_tol=1e-5)
