"""Target-level diagnostics: randomised outputs, masked gradients, probability outputs, and robust accuracy that
rises with epsilon are each flagged with their id; a sound model passes every check."""

import numpy as np
import torch
from torch import nn

from linear_truth import linear_module, random_linear_problem
from robustbench_cli.battery import Battery, Entry, evaluate
from robustbench_cli.diagnostics import check_target
from robustbench_cli.targets.pytorch import TorchTarget
from robustbench_cli.threat_model import ThreatModel


class Noisy(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.1 * torch.randn(len(x), 1)


class Rounded(nn.Module):
    """Quantises its input to 8 bits first: the gradient through torch.round is zero everywhere."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 255) / 255)


def _findings(module, threats=("linf:0.05",)):
    W, b, data = random_linear_problem(40, 12, 3, seed=0)
    target = TorchTarget(module(linear_module(W, b)), "m")
    battery = Battery("t", 1, [Entry("fgsm", "fgsm")])
    ev = evaluate(target, data, [ThreatModel.parse(t) for t in threats], battery)
    return {f["check"]: f for f in check_target(ev)}, ev


def test_a_sound_model_passes_every_check():
    found, _ = _findings(lambda m: m, ("linf:0.02", "linf:0.1"))
    assert {"deterministic-outputs", "gradients", "epsilon-monotone"} <= set(found)
    assert all(f["passed"] for f in found.values()), found
    assert "logit-outputs" not in found


def test_randomised_outputs_are_flagged():
    found, _ = _findings(Noisy)
    assert found["deterministic-outputs"]["passed"] is False
    assert "EOT" in found["deterministic-outputs"]["message"]


def test_masked_gradients_are_flagged():
    found, _ = _findings(Rounded)
    assert found["gradients"]["passed"] is False
    assert "zero at 40" in found["gradients"]["message"]


def test_probability_outputs_are_flagged():
    found, ev = _findings(lambda m: nn.Sequential(m, nn.Softmax(dim=1)))
    assert ev.target["output_kind"] == "probabilities"
    assert found["logit-outputs"]["passed"] is False


def test_robust_accuracy_rising_with_epsilon_is_flagged():
    _, ev = _findings(lambda m: m, ("linf:0.02", "linf:0.1"))
    small, big = ev.results
    assert big.robust_accuracy <= small.robust_accuracy
    big.robust[:] = big.clean_correct  # as if no attack had worked at the larger epsilon
    found = {f["check"]: f for f in check_target(ev)}
    assert found["epsilon-monotone"]["passed"] is False
    assert "linf:0.1" in found["epsilon-monotone"]["message"]
    assert np.isclose(big.robust_accuracy, big.clean_accuracy)
