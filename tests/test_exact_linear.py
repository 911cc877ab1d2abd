"""Ground truth: for a multiclass linear classifier in the [0,1] box, the smallest Linf perturbation that flips a
sample is computable exactly. PGD's robust accuracy must match it, and no adversarial may beat the minimum."""

import numpy as np
import pytest
import torch
from linear_truth import exact_min_linf
from torch import nn

from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import PRESETS, Battery, Entry, evaluate
from robustbench_cli.targets.pytorch import TorchTarget

N, D, K = 300, 20, 4


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(K, D)).astype(np.float32)
    b = rng.normal(scale=0.5, size=K).astype(np.float32)
    x = rng.uniform(size=(N, D)).astype(np.float32)
    y = (x @ W.T + b).argmax(axis=1)
    lin = nn.Linear(D, K)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
        lin.bias.copy_(torch.from_numpy(b))
    data = EvalSet(x=x, y=y.astype(np.int64), ids=np.arange(N), name="linear")
    exact = exact_min_linf(W.astype(np.float64), b.astype(np.float64), x.astype(np.float64), y)
    return lin, data, exact


def test_exact_solver_against_brute_force_corners(problem):
    lin, data, exact = problem
    # at eps = exact - tiny the best corner for each class still loses; at exact + tiny it wins
    W, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
    for s in range(20):
        x, y = data.x[s].astype(np.float64), data.y[s]
        for eps, should_flip in [(exact[s] * (1 - 1e-6), False), (exact[s] * (1 + 1e-6), True)]:
            flips = False
            for j in range(K):
                if j == y:
                    continue
                a = W[j] - W[y]
                xa = np.clip(x + eps * np.sign(a), 0, 1)
                flips |= (W @ xa + b).argmax() != y
            assert flips == should_flip


@pytest.mark.parametrize("preset", ["default"])
def test_pgd_matches_exact_robust_accuracy(problem, preset):
    lin, data, exact = problem
    target = TorchTarget(lin, "linear", num_classes=K)
    quantiles = np.quantile(exact[np.isfinite(exact)], [0.2, 0.5, 0.8])
    threats = [ThreatModel(ThreatModel.parse("linf:0.1").norm, float(q), f"{q:.5f}") for q in quantiles]
    ev = evaluate(target, data, threats, PRESETS[preset], seed=0)
    for threat, res in zip(threats, ev.results):
        truth = float((exact > threat.epsilon).mean())
        # robust accuracy is an upper bound on the truth, and a strong attack makes it tight
        assert res.robust_accuracy >= truth - 1e-12
        assert res.robust_accuracy - truth <= 1.0 / N + 1e-12, (threat.name, res.robust_accuracy, truth)
        broken = ~res.robust
        assert np.all(res.distance[broken] >= exact[broken] - 1e-5), "an adversarial closer than the exact minimum"
        assert np.all(res.distance[broken] <= threat.epsilon + 1e-6)


def test_single_pgd_is_within_one_sample(problem):
    lin, data, exact = problem
    target = TorchTarget(lin, "linear", num_classes=K)
    eps = float(np.median(exact))
    threat = ThreatModel(ThreatModel.parse("linf:0.1").norm, eps, f"{eps:.5f}")
    ev = evaluate(target, data, [threat], Battery("pgd", 1, [Entry("pgd", "pgd", {"steps": 40, "loss": "margin"})]))
    truth = float((exact > eps).mean())
    assert 0 <= ev.results[0].robust_accuracy - truth <= 1.0 / N + 1e-12
