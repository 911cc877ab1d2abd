"""FMN (Pintor et al. 2021): exact minimal distances on linear models, targeted goals, budgets, batch independence.

Distances are the harness's: every candidate is projected onto a threat ball larger than any minimum, asked of the
model again, and only a verified success has a distance.
"""

import numpy as np
import pytest
import torch
from linear_truth import (
    exact_min_l2_binary,
    exact_min_linf,
    linear_module,
    nearest_boundary_point_binary,
    random_linear_problem,
)
from torch import nn

from robustbench_cli.attacks import REGISTRY, Attack, Goal, create
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.threat_model import Norm, ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.targets.base import Oracle
from robustbench_cli.targets.pytorch import TorchTarget

N, D, K = 100, 20, 4
TOL = 1e-5  # float32 rounding of the model's logits, in distance


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared machine: one thread avoids oversubscription (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fmn(**params) -> Battery:
    return Battery("fmn", 1, [Entry("fmn", "fmn", params)])


def wide(norm: Norm, eps: float) -> ThreatModel:
    """A ball that holds every minimal perturbation of the problem, so the harness's projection changes nothing."""
    return ThreatModel(norm, eps, str(eps))


def torch_linear(W, b):
    return TorchTarget(linear_module(W, b), "linear", num_classes=W.shape[0])


@pytest.fixture(scope="module")
def multiclass():
    W, b, data = random_linear_problem(N, D, K, seed=3)
    exact = exact_min_linf(W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64), data.y)
    assert np.isfinite(exact).all() and exact.max() < 0.5
    return W, b, data, exact


@pytest.fixture(scope="module")
def mlp():
    """A small random ReLU net labelled by its own predictions (nonlinear, clean accuracy 1)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))
    x = torch.rand(24, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net[-1].weight.mul_(10.0)
        net[-1].bias.sub_(net(x).mean(dim=0))  # centre the logits: every class gets samples
        y = net(x).argmax(dim=1)
    data = EvalSet(x=x.numpy(), y=y.numpy().astype(np.int64), ids=np.arange(len(x)), name="random-mlp")
    return TorchTarget(net, "mlp", num_classes=5), data


def test_contract_and_registration():
    assert REGISTRY["fmn"].minimum_norm is True and Attack.minimum_norm is False
    a = create("fmn")
    assert (a.steps, a.alpha0, a.alpha_final, a.gamma0, a.gamma_final, a.targets, a.stop_at_epsilon) == \
        (100, 1.0, 0.01, 0.05, 0.001, 0, False)
    assert a.unsupported_reason(REGISTRY["pgd-nes"].requires, wide(Norm.LINF, 0.1)) is not None  # needs gradients


@pytest.mark.parametrize("params", [{"steps": 0}, {"steps": 2.5}, {"alpha0": -1.0}, {"alpha0": 0.1, "alpha_final": 0.2},
                                    {"gamma0": 1.0}, {"gamma0": 0.01, "gamma_final": 0.05}, {"targets": -1},
                                    {"stop_at_epsilon": "yes"}, {"alpha0": float("nan")}])
def test_nonsense_hyperparameters_are_user_errors(params):
    with pytest.raises(UserError, match="attack fmn"):
        create("fmn", **params)


# (1) Linf, multiclass: the paper's untargeted FMN follows the runner-up class and can end on its boundary, a local
# minimum (on this problem up to 30% above the truth for about 1 sample in 10); sweeping the wrong classes as targets
# finds the global one.
def test_linf_multiclass_linear_within_one_percent_of_the_exact_minimum(multiclass):
    W, b, data, exact = multiclass
    ev = evaluate(torch_linear(W, b), data, [wide(Norm.LINF, 0.5)], fmn(targets=K - 1), seed=0)
    res = ev.results[0]
    assert not res.robust.any(), "every candidate must be verified adversarial by the harness"
    assert np.all(res.distance >= exact - TOL), "an adversarial closer than the exact minimum"
    ratio = res.distance / exact
    assert ratio.max() <= 1.01, (ratio.max(), int(ratio.argmax()))
    # the default single untargeted run is exact on most samples and never below the truth
    plain = evaluate(torch_linear(W, b), data, [wide(Norm.LINF, 0.5)], fmn(), seed=0).results[0]
    assert not plain.robust.any() and np.all(plain.distance >= exact - TOL)
    assert np.mean(plain.distance / exact <= 1.01) >= 0.8


# (2) L2, two classes, nearest boundary points inside the box: the distance is the one to the hyperplane.
def test_l2_binary_linear_within_one_percent_of_the_exact_minimum():
    W, b, data = random_linear_problem(N, D, 2, seed=5, lo=0.3, hi=0.7, bias=0.05)
    Wd, bd, xd = W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64)
    nearest = nearest_boundary_point_binary(Wd, bd, xd)
    assert ((nearest >= 0) & (nearest <= 1)).all(), "the problem must keep its nearest boundary points in the box"
    exact = exact_min_l2_binary(Wd, bd, xd)
    res = evaluate(torch_linear(W, b), data, [wide(Norm.L2, 2.0)], fmn(), seed=0).results[0]
    assert not res.robust.any()
    assert np.all(res.distance >= exact - TOL)
    assert (res.distance / exact).max() <= 1.01


# (3) Targeted: every sample reaches its own target class, verified, never closer than the untargeted minimum; where
# the exact two-class corner point already wins outright, FMN matches its distance within 1%.
def test_targeted_reaches_the_target_at_the_exact_distance(multiclass):
    W, b, data, exact = multiclass
    Wd, bd, xd = W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64)
    res = evaluate(torch_linear(W, b), data, [wide(Norm.LINF, 0.9)], fmn(), seed=0, targeted="random").results[0]
    assert not res.robust.any()
    assert np.array_equal(res.adv_pred, res.goal) and np.all(res.goal != res.labels)
    assert np.all(res.distance >= exact - TOL)
    checked = 0
    for s in range(N):
        y, t = data.y[s], res.goal[s]
        pair = exact_min_linf(Wd[[y, t]], bd[[y, t]], xd[s : s + 1], np.array([0]))[0]  # y against t alone
        corner = np.clip(xd[s] + pair * 1.0001 * np.sign(Wd[t] - Wd[y]), 0, 1)
        assert res.distance[s] >= pair - TOL  # beating every class costs at least beating y
        if (Wd @ corner + bd).argmax() == t:  # the pair's optimum reaches t: it is the targeted optimum
            assert res.distance[s] <= 1.01 * pair, (s, res.distance[s], pair)
            checked += 1
    assert checked >= N // 2


def test_targeted_on_a_small_net(mlp):
    target, data = mlp
    res = evaluate(target, data, [wide(Norm.L2, 3.0)], fmn(steps=50), seed=0, targeted="random").results[0]
    assert res.robust_accuracy == 0.0 and np.array_equal(res.adv_pred, res.goal)


# (4) Budgets: no row spends more than its budget, whatever the passes; the harness adds its verification query.
@pytest.mark.parametrize("budget, params", [(1, {}), (17, {}), (17, {"targets": 3}), (250, {"targets": 3})])
def test_budget_is_never_exceeded(multiclass, budget, params):
    W, b, data, _ = multiclass
    target = torch_linear(W, b)
    x0, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    oracle = Oracle(target, N, budget=budget)
    cand = create("fmn", **params).run(oracle, x0, Goal(y, False), wide(Norm.LINF, 0.5), SampleRng(0, "fmn", data.ids))
    assert cand.shape == x0.shape and torch.isfinite(cand).all()
    assert int(oracle.used.max()) <= budget
    full = 1 + 3 * 101 if params else 101  # (ranking query +) steps + 1 evaluations per pass
    assert int(oracle.used.min()) == min(budget, full)  # every row here needs its whole budget
    res = evaluate(target, data, [wide(Norm.LINF, 0.5)], fmn(**params), seed=0, queries=budget).results[0]
    assert res.queries.max() <= budget


def test_stop_at_epsilon_returns_a_point_inside_and_saves_queries(multiclass):
    W, b, data, exact = multiclass
    eps = float(np.median(exact))
    full = evaluate(torch_linear(W, b), data, [wide(Norm.LINF, eps)], fmn(), seed=0).results[0]
    stop = evaluate(torch_linear(W, b), data, [wide(Norm.LINF, eps)], fmn(stop_at_epsilon=True), seed=0).results[0]
    assert np.array_equal(stop.robust, full.robust)  # on a linear model the untargeted run never misses inside eps
    broken = ~stop.robust
    assert broken.sum() >= N // 3
    assert np.all(stop.distance[broken] <= eps + 1e-6)
    assert stop.queries[broken].max() < full.queries[broken].min()  # they stopped early


# (5) Batch independence: rows alone, in odd batches or all together give the same outcomes. The model's float32
# sums round differently in batches of other sizes, so a point right on the boundary can be judged on the other side
# at one step, which moves that sample's eps path by a factor (1 +- gamma_k): distances agree to a fraction of a
# percent (4e-4 relative at most here), not bit for bit. The same batch size reproduces them exactly.
@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_results_do_not_depend_on_the_batch_size(mlp, norm):
    target, data = mlp
    threat = wide(norm, 0.5 if norm is Norm.LINF else 3.0)
    data = EvalSet(x=data.x[:12], y=data.y[:12], ids=data.ids[:12], name="random-mlp-12")
    runs = [evaluate(target, data, [threat], fmn(steps=25, targets=2), seed=0, batch_size=bs).results[0]
            for bs in (1, 5, len(data), 5)]
    assert not runs[0].robust.any()
    for other in runs[1:]:
        assert np.array_equal(other.robust, runs[0].robust) and np.array_equal(other.adv_pred, runs[0].adv_pred)
        assert np.array_equal(other.queries, runs[0].queries)
        assert np.allclose(other.distance, runs[0].distance, rtol=2e-3, atol=0)
    assert np.array_equal(runs[3].distance, runs[1].distance)
