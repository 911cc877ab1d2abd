"""Ground truth: for a multiclass linear classifier in the [0,1] box, the smallest Linf perturbation that flips a
sample is computable exactly. PGD's robust accuracy must match it, and no adversarial may beat the minimum."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


@pytest.mark.parametrize("preset", ["default", "standard"])
def test_presets_give_the_exact_robust_accuracy(problem, preset):
    lin, data, exact = problem
    target = TorchTarget(lin, "linear", num_classes=K)
    quantiles = np.quantile(exact[np.isfinite(exact)], [0.2, 0.5, 0.8])
    threats = [ThreatModel(ThreatModel.parse("linf:0.1").norm, float(q), f"{q:.5f}") for q in quantiles]
    ev = evaluate(target, data, threats, PRESETS[preset], seed=0)
    for threat, res in zip(threats, ev.results):
        _assert_exact(res, exact, threat.epsilon)


def _assert_exact(res, exact: np.ndarray, eps: float) -> None:
    """Robust exactly where no perturbation inside the ball and the box flips the sample (samples whose exact minimum
    lies within float32 rounding of epsilon may go either way), and no break closer than the exact minimum."""
    edge = np.abs(exact - eps) <= 1e-5 * max(eps, 1e-3)
    should = exact > eps
    assert np.array_equal(res.robust[~edge], should[~edge]), (eps, np.flatnonzero(res.robust[~edge] != should[~edge]))
    broken = ~res.robust & res.clean_correct
    assert np.all(res.distance[broken] >= exact[broken] - 1e-5), "an adversarial closer than the exact minimum"
    assert np.all(res.distance[broken] <= eps + 1e-6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(2, 12), d=st.integers(2, 24), seed=st.integers(0, 2**16), binding=st.floats(0.0, 0.9),
       share=st.floats(0.1, 0.9))
def test_default_is_exact_on_any_linear_model(k, d, seed, binding, share):
    """Random linear models, class counts, epsilons, and data whose pixels sit on the box's faces (a share
    ``binding`` of them at 0 or 1), where a step that ignores the box overshoots."""
    rng = np.random.default_rng(seed)
    n = 60
    W = rng.normal(size=(k, d)).astype(np.float32)
    b = rng.normal(scale=0.5, size=k).astype(np.float32)
    x = rng.uniform(size=(n, d)).astype(np.float32)
    on_face = rng.uniform(size=(n, d)) < binding
    x[on_face] = rng.integers(0, 2, size=int(on_face.sum())).astype(np.float32)
    y = (x.astype(np.float64) @ W.T.astype(np.float64) + b).argmax(axis=1)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
        lin.bias.copy_(torch.from_numpy(b))
    exact = exact_min_linf(W.astype(np.float64), b.astype(np.float64), x.astype(np.float64), y)
    finite = exact[np.isfinite(exact)]
    if not len(finite) or finite.max() <= 0:
        return
    eps = float(np.quantile(finite, share))
    if eps <= 1e-4 or eps >= 0.99:
        return
    data = EvalSet(x=x, y=y.astype(np.int64), ids=np.arange(n), name="linear")
    threat = ThreatModel(ThreatModel.parse("linf:0.1").norm, eps, f"{eps:.6f}")
    ev = evaluate(TorchTarget(lin, "linear", num_classes=k), data, [threat], PRESETS["default"], seed=0)
    _assert_exact(ev.results[0], exact, eps)


def test_single_pgd_is_within_one_sample(problem):
    lin, data, exact = problem
    target = TorchTarget(lin, "linear", num_classes=K)
    eps = float(np.median(exact))
    threat = ThreatModel(ThreatModel.parse("linf:0.1").norm, eps, f"{eps:.5f}")
    ev = evaluate(target, data, [threat], Battery("pgd", 1, [Entry("pgd", "pgd", {"steps": 40, "loss": "margin"})]))
    truth = float((exact > eps).mean())
    assert 0 <= ev.results[0].robust_accuracy - truth <= 1.0 / N + 1e-12
