"""The lecture's targeted attack and Carlini-Wagner L2: exact distances on linear models, the lambda trade-off on
the embedded MNIST CNN, and budgets."""

import numpy as np
import pytest
from linear_truth import exact_min_l2_binary, linear_module, random_linear_problem

from robustbench_cli import zoo
from robustbench_cli.core.data import load_eval_set
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.targets.pytorch import TorchTarget


def _run(target, data, threat, attack, params=None, **kw):
    battery = Battery("t", 1, [Entry(attack, attack, params or {})])
    return evaluate(target, data, [ThreatModel.parse(threat)], battery, **kw).results[0]


@pytest.fixture(scope="module")
def binary():
    d, n = 20, 30
    W, b, data = random_linear_problem(n, d, 2, seed=0, lo=0.3, hi=0.7, bias=0.05)
    target = TorchTarget(linear_module(W, b), "lin2")
    return W, b, data, target


@pytest.mark.parametrize("attack", ["cw-l2", "lecture"])
def test_distances_approach_the_exact_l2_minimum_on_a_linear_model(binary, attack):
    W, b, data, target = binary
    exact = exact_min_l2_binary(W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64))
    res = _run(target, data, "l2:4", attack, {"steps": 200, "search_steps": 8})
    broken = ~res.robust & res.clean_correct
    assert broken.mean() > 0.9
    ratio = res.distance[broken] / exact[broken]
    assert ratio.min() >= 1 - 1e-4, "closer than the exact minimum: impossible"
    assert np.median(ratio) <= 1.1, np.median(ratio)


@pytest.fixture(scope="module")
def mnist():
    target = load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), device="cpu"))
    return target, load_eval_set("mnist:test", n=40, shuffle=True, seed=0)


def test_lecture_attack_turns_digits_into_the_chosen_class(mnist):
    target, data = mnist
    res = _run(target, data, "l2:3", "lecture", targeted="3")
    broken = ~res.robust & res.clean_correct
    assert broken.sum() > 0.5 * res.clean_correct.sum()  # most digits become a 3 within L2 distance 3
    assert np.all(res.adv_pred[broken] == 3)
    assert np.all(res.distance[broken] <= 3 + 1e-5)


def test_lambda_trades_distance_against_success(mnist):
    target, data = mnist
    runs = {lam: _run(target, data, "l2:3", "lecture", {"lam": lam, "search_steps": 1}, targeted="3")
            for lam in (0.01, 1.0)}
    success = {lam: int((~r.robust & r.clean_correct).sum()) for lam, r in runs.items()}
    dist = {lam: float(np.nanmedian(r.distance)) for lam, r in runs.items()}
    assert success[0.01] > success[1.0]  # a weaker distance penalty reaches the target more often ...
    assert success[1.0] == 0 or dist[0.01] > dist[1.0]  # ... with larger perturbations (when the strong one breaks any)


@pytest.mark.parametrize("attack", ["cw-l2", "lecture"])
def test_budgets_hold(binary, attack):
    _, _, data, target = binary
    res = _run(target, data, "l2:4", attack, {"steps": 10, "search_steps": 5}, queries=35)
    assert res.queries.max() <= 35
