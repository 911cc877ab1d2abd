"""Per-sample smallest verified distances and the robust-accuracy-versus-epsilon curve from one scan.

The harness, not the attack, records a distance: a minimum-norm attack's candidate beyond epsilon is kept in the
input box, re-queried on the model, and recorded only if the model's answer meets the goal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from linear_truth import CountingTarget, exact_min_linf, linear_module, random_linear_problem

from robustbench_cli.attacks import REGISTRY, Attack
from robustbench_cli.core.threat_model import Norm, ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.reports.build import build_report, epsilon_curve
from robustbench_cli.reports.model import report_schema
from robustbench_cli.targets.base import Capability

N, D, K = 60, 12, 4


class _Oracular(Attack):
    """Knows the linear model; returns for each sample the point ``factor`` times as far as the exact minimal
    Linf adversarial along the optimal direction (adversarial when factor > 1, not when factor < 1)."""

    name, family, minimum_norm = "oracular-min", "gradient", True
    requires = Capability.SCORES

    def __init__(self, *, factor: float = 1.01):
        self.factor = factor

    def run(self, oracle, x0, goal, threat, rng):
        W, b = self.W, self.b
        out = x0.clone()
        for i in range(len(x0)):
            y = int(goal.labels[i])
            best = (np.inf, None)
            for j in range(W.shape[0]):
                if j == y:
                    continue
                a = W[j] - W[y]
                e = exact_min_linf(W[[y, j]], b[[y, j]], x0[i : i + 1].numpy().astype(np.float64), np.array([0]))[0]
                if e < best[0]:
                    best = (e, np.sign(a))
            e, s = best
            out[i] = (x0[i] + torch.as_tensor(s * e * self.factor, dtype=x0.dtype)).clamp(0, 1)
        return out


@pytest.fixture
def problem(monkeypatch):
    W, b, data = random_linear_problem(N, D, K, seed=3, scale=1.0)
    monkeypatch.setitem(REGISTRY, _Oracular.name, _Oracular)
    _Oracular.W, _Oracular.b = W.astype(np.float64), b.astype(np.float64)
    exact = exact_min_linf(W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64), data.y)
    return CountingTarget(linear_module(W, b), K), data, exact


def test_distances_beyond_epsilon_are_verified_and_drawn_as_a_curve(problem):
    target, data, exact = problem
    eps = float(np.quantile(exact, 0.3))
    threat = ThreatModel(Norm.LINF, eps, "t")
    r = evaluate(target, data, [threat], Battery("b", 1, [Entry("m", "oracular-min", {"factor": 1.001})])).results[0]
    # the candidate is ~0.1% beyond the exact minimum: inside epsilon it breaks, beyond it is still recorded
    found = np.isfinite(r.min_distance)
    assert found.sum() >= N - 2  # a candidate clipped by the box may fall short of the boundary
    np.testing.assert_allclose(r.min_distance[found], exact[found] * 1.001, rtol=2e-3)
    assert (r.min_distance[~r.robust & r.clean_correct] <= eps + 1e-6).all()
    curve = epsilon_curve(r)
    es, ra = np.array(curve["epsilon"]), np.array(curve["robust_accuracy"])
    assert ra[es == eps][0] == pytest.approx(r.robust_accuracy)
    assert ra[0] == pytest.approx(r.clean_accuracy) and ra[-1] <= 2 / N
    assert (np.diff(ra) <= 0).all()  # an upper bound that falls with epsilon
    for e, a in zip(es, ra):  # within the 0.1% overshoot, it is the exact robust accuracy
        assert float((exact > e * 1.001).mean()) - 1e-9 <= a <= float((exact > e / 1.001).mean()) + 2 / N
    assert curve["minimum_norm_attacks"] == ["m"]


def test_a_candidate_that_is_not_adversarial_records_nothing(problem):
    target, data, exact = problem
    threat = ThreatModel(Norm.LINF, float(np.quantile(exact, 0.3)), "t")
    r = evaluate(target, data, [threat], Battery("b", 1, [Entry("m", "oracular-min", {"factor": 0.98})])).results[0]
    assert np.isnan(r.min_distance).all()  # short of the boundary: the model says no, whatever the attack claims
    assert r.robust_accuracy == r.clean_accuracy


def test_the_extra_verification_is_counted_and_fits_the_budget(problem):
    target, data, exact = problem
    threat = ThreatModel(Norm.LINF, float(np.quantile(exact, 0.3)), "t")
    before = target.rows
    ev = evaluate(target, data, [threat], Battery("b", 1, [Entry("m", "oracular-min")]), queries=2)
    r = ev.results[0]
    probes = ev.probes.get("model_rows", 0) if isinstance(ev.probes, dict) else 0
    beyond = r.robust & r.clean_correct  # candidates outside the ball cost a second query
    assert (r.queries[beyond] == 2).all() and (r.queries[~r.robust & r.clean_correct] == 1).all()
    assert r.queries.max() <= 2
    assert target.rows - before - N - probes == int(r.queries.sum())
    # with a budget of one query there is no second verification: nothing is recorded beyond epsilon
    r1 = evaluate(target, data, [threat], Battery("b", 1, [Entry("m", "oracular-min")]), queries=1).results[0]
    assert r1.queries.max() <= 1
    assert np.isnan(r1.min_distance[r1.robust]).all()


def test_report_carries_the_curve_and_validates(problem):
    import jsonschema

    target, data, exact = problem
    threat = ThreatModel(Norm.LINF, float(np.quantile(exact, 0.3)), "t")
    battery = Battery("b", 1, [Entry("m", "oracular-min")])
    ev = evaluate(target, data, [threat], battery)
    rep = build_report([ev], data=data.describe(), battery=battery.config(), seed=0, device="cpu").to_dict()
    jsonschema.validate(rep, report_schema())
    res = rep["results"][0]
    assert len(res["samples"]["min_distance"]) == N
    assert res["robust_accuracy_by_epsilon"]["minimum_norm_attacks"] == ["m"]
