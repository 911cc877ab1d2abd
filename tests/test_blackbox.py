"""Black-box attacks against ground truth: on linear models the exact answer is known, so Square, NES-PGD and
HopSkipJump must come close to it and nothing may ever beat it. Label-only access really hides the scores, the
harness never reports an adversarial outside the threat model, the noise check catches an attack that does nothing,
the report's curves are consistent, and per-sample seeding makes results independent of the batch size."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linear_truth import (
    CountingTarget,
    exact_min_l2_binary,
    exact_min_linf,
    linear_module,
    nearest_boundary_point_binary,
    random_linear_problem,
)

from robustbench_cli.attacks import REGISTRY, Attack, Goal, create
from robustbench_cli.attacks.base import register
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.threat_model import Norm, ThreatModel
from robustbench_cli.evaluation import PRESETS, Battery, Entry, evaluate
from robustbench_cli.evaluation.diagnostics import check
from robustbench_cli.evaluation.harness import verify
from robustbench_cli.evaluation.presets import WHEN
from robustbench_cli.reports.build import build_report
from robustbench_cli.reports.model import Report
from robustbench_cli.reports.writers import to_csv
from robustbench_cli.targets.base import Capability, LabelOnly, Oracle


def threat(norm: str, eps: float) -> ThreatModel:
    return ThreatModel(Norm(norm), float(eps), f"{eps:.6g}")


def within_eps(dist, eps: float):
    """Inside the ball up to float32 rounding of points in [0,1] (a few ulps of 1.0), far tighter than any real escape."""
    return np.asarray(dist) <= eps * (1 + 1e-6) + 3e-7


def stub_for(W, b) -> CountingTarget:
    return CountingTarget(linear_module(W, b), W.shape[0])


def report_of(ev, data, battery) -> dict:
    rep = build_report([ev], data=data.describe(), battery=battery.config(), seed=0, device="cpu").to_dict()
    json.dumps(rep, allow_nan=False)
    return rep


# --- test-only attacks ------------------------------------------------------------------------------
class _Liar(Attack):
    """Knows the (linear) model and returns, far outside the ball and the box, a point on the far side of the
    boundary of the class that is cheapest to reach. The raw point is misclassified but illegal: only its
    projection onto the threat model may count."""

    name, family, requires = "test-blackbox-liar", "query", Capability.SCORES

    def run(self, oracle, x, goal, threat, rng):
        lin = oracle.target.module
        W, b = lin.weight.detach().double(), lin.bias.detach().double()
        y = goal.labels
        a = W[None, :, :] - W[y][:, None, :]  # (n, k, d): w_j - w_y
        need = -(torch.einsum("nkd,nd->nk", a, x.double()) + b[None, :] - b[y][:, None])
        if threat.norm is Norm.LINF:
            cost = need / a.abs().sum(dim=2).clamp_min(1e-12)
            step = a.sign()
        else:
            cost = need / a.norm(dim=2).clamp_min(1e-12)
            step = a / a.norm(dim=2, keepdim=True).clamp_min(1e-12)
        cost[torch.arange(len(x)), y] = float("inf")
        j = cost.argmin(dim=1)
        return (x.double() + 10.0 * step[torch.arange(len(x)), j]).float()  # far outside ball and box


class _Idle(Attack):
    """Does nothing: returns the clean inputs. The noise check must flag it."""

    name, family, requires = "test-blackbox-idle", "query", Capability.LABELS

    def run(self, oracle, x, goal, threat, rng):
        return x.clone()


@pytest.fixture(scope="module", autouse=True)
def registered_test_attacks():
    """Register the test-only attacks once for this module (the registry refuses duplicates) and remove them after."""
    for cls in (_Liar, _Idle):
        register(cls)
    yield
    for cls in (_Liar, _Idle):
        REGISTRY.pop(cls.name)


# --- 2. exact robust accuracy on a linear black box -------------------------------------------------------
N2, D2, K2 = 100, 20, 4


@pytest.fixture(scope="module")
def linear4():
    W, b, data = random_linear_problem(N2, D2, K2, seed=1)
    exact = exact_min_linf(W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64), data.y)
    s = np.sort(exact)
    threats = []
    for q in (0.3, 0.7):  # epsilons half way between two samples' exact minima: no sample sits on a tie
        i = int(q * len(s))
        assert s[i] - s[i - 1] > 1e-4
        threats.append(threat("linf", (s[i - 1] + s[i]) / 2))
    return W, b, data, exact, threats


@pytest.mark.parametrize("attack, params, queries", [
    ("square", {"max_queries": 1000}, 200),
    ("pgd-nes", {"steps": 30}, None),
], ids=["square", "pgd-nes"])
def test_score_attacks_reach_the_exact_robust_accuracy_and_never_beat_it(linear4, attack, params, queries):
    W, b, data, exact, threats = linear4
    target = stub_for(W, b)
    assert Capability.GRADIENTS not in target.capabilities  # a black box: no autograd behind the attack
    ev = evaluate(target, data, threats, Battery("t", 1, [Entry(attack, attack, params)]), queries=queries)
    for th, res in zip(threats, ev.results):
        truth = float((exact > th.epsilon).mean())
        assert 0.15 < truth < 0.85  # a real mix of robust and breakable samples
        assert res.robust_accuracy >= truth - 1e-9, "an attack beat the exact minimum: a verification bug"
        assert res.robust_accuracy - truth <= 0.03, (th.name, res.robust_accuracy, truth)
        broken = ~res.robust
        assert np.all(res.distance[broken] >= exact[broken] - 1e-5)
        assert np.all(within_eps(res.distance[broken], th.epsilon))


# --- 3. HopSkipJump's distance against the exact L2 distance ----------------------------------------------------
def test_hopskipjump_l2_distance_approaches_the_exact_minimum():
    d, n = 20, 30
    W, b, data = random_linear_problem(n, d, 2, seed=0, lo=0.3, hi=0.7, bias=0.05)
    W64, b64, x64 = W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64)
    exact = exact_min_l2_binary(W64, b64, x64)
    nearest = nearest_boundary_point_binary(W64, b64, x64)
    # the box does not get in the way: the nearest boundary point of every sample is inside [0,1]^d
    assert nearest.min() > 0 and nearest.max() < 1
    assert 5 < int(data.y.sum()) < n - 5  # both classes, so HopSkipJump starts from other samples of the batch
    eps = 4.0
    assert eps < np.sqrt(d) and eps > exact.max()
    stub = stub_for(W, b)
    battery = Battery("t", 1, [Entry("hsj", "hopskipjump", {"stop_at_epsilon": False})])
    res = evaluate(LabelOnly(stub), data, [threat("l2", eps)], battery, queries=2000).results[0]
    assert not res.robust.any()  # every sample is broken (eps is large) ...
    ratio = res.distance / exact  # ... and the distance reached is what is judged
    assert ratio.min() >= 1 - 1e-4, "closer than the exact minimum: impossible"
    assert np.median(ratio) <= 1.1, np.median(ratio)
    assert ratio.max() <= 1.3, ratio.max()
    assert res.queries.max() <= 2000


def test_hopskipjump_linf_never_beats_the_exact_minimum():
    W, b, data = random_linear_problem(30, 16, 3, seed=2)
    exact = exact_min_linf(W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64), data.y)
    stub = stub_for(W, b)
    battery = Battery("t", 1, [Entry("hsj", "hopskipjump", {"stop_at_epsilon": False})])
    res = evaluate(LabelOnly(stub), data, [threat("linf", 0.9)], battery, queries=500).results[0]
    broken = ~res.robust
    assert broken.mean() > 0.9
    assert np.all(res.distance[broken] >= exact[broken] - 1e-5)
    assert np.median(res.distance[broken] / exact[broken]) <= 2.0  # a weaker walk in Linf, but a walk


# --- 4. label-only access hides the scores -------------------------------------------------------------------
@pytest.fixture(scope="module")
def small3():
    return random_linear_problem(16, 16, 3, seed=0)


def test_label_only_view_returns_one_hot_decisions(small3):
    W, b, data = small3
    stub = stub_for(W, b)
    view = LabelOnly(stub)
    x = torch.as_tensor(data.x)
    s = view.scores(x)
    assert view.capabilities == Capability.LABELS
    assert s.shape == (len(x), 3)
    assert torch.equal(s, torch.nn.functional.one_hot(stub.predict(x), 3).float())  # nothing but the decision
    assert set(s.unique().tolist()) == {0.0, 1.0}


def test_blackbox_preset_on_label_only_and_score_targets(small3):
    W, b, data = small3
    th = [threat("linf", 0.08)]
    battery = PRESETS["blackbox"]

    view = LabelOnly(stub_for(W, b))
    res = evaluate(view, data, th, battery, queries=100).results[0]
    by = {a.label: a for a in res.attacks}
    for label in ("pgd-nes", "square"):
        assert by[label].skipped and "scores" in by[label].skipped and by[label].attempted == 0
    assert by["hopskipjump"].skipped is None and by["hopskipjump"].attempted == int(res.clean_correct.sum())
    assert by["noise"].skipped is None
    assert view.output_kind == "labels"
    assert by["hopskipjump"].broken > 0

    scores = stub_for(W, b)
    res = evaluate(scores, data, th, battery, queries=100).results[0]
    by = {a.label: a for a in res.attacks}
    assert by["hopskipjump"].skipped == WHEN["labels-only"] and by["hopskipjump"].attempted == 0
    assert by["pgd-nes"].skipped is None and by["square"].skipped is None
    # Square leads the cascade and sees every clean-correct sample; NES-PGD sees what Square left
    assert by["square"].attempted == int(res.clean_correct.sum())
    assert by["pgd-nes"].attempted == int(res.clean_correct.sum()) - by["square"].broken


def _export_linear_onnx(W, b, path) -> str:
    lin = linear_module(W, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lin, (torch.zeros(1, W.shape[1]),), str(path), input_names=["input"], output_names=["out"],
                          opset_version=17, dynamo=False, dynamic_axes={"input": {0: "batch"}, "out": {0: "batch"}})
    return str(path)


def test_cli_access_labels_runs_hopskipjump_and_lists_skipped_score_attacks(tmp_path, run_cli, small3):
    W, b, data = small3
    model = _export_linear_onnx(W, b, tmp_path / "lin.onnx")
    np.savez(tmp_path / "d.npz", x=data.x, y=data.y)
    reports = {}
    for access in ("labels", "auto"):
        out = tmp_path / f"{access}.json"
        res = run_cli("scan", model, "--data", tmp_path / "d.npz", "--eps", "0.08", "--preset", "blackbox",
                      "--queries", 60, "--access", access, "-o", out)
        assert res.exit_code == 0, res.output
        reports[access] = json.loads(out.read_text())
    lab, auto = reports["labels"], reports["auto"]
    assert lab["targets"][0]["capabilities"] == ["labels"] and lab["targets"][0]["access"] == "labels"
    attacks = {a["label"]: a for a in lab["results"][0]["attacks"]}
    for label in ("pgd-nes", "square"):
        assert "needs scores" in attacks[label]["skipped"]
    assert attacks["hopskipjump"]["skipped"] is None and attacks["hopskipjump"]["attempted"] > 0
    assert auto["targets"][0]["capabilities"] == ["labels", "scores"]
    attacks = {a["label"]: a for a in auto["results"][0]["attacks"]}
    assert attacks["hopskipjump"]["skipped"] == WHEN["labels-only"]
    assert attacks["pgd-nes"]["skipped"] is None and attacks["square"]["skipped"] is None


# --- 5. nothing outside the ball or the box is ever reported --------------------------------------------------
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("linf", 0.1), ("l2", 0.3)])
def test_lying_attack_is_judged_on_its_projection(norm, eps):
    W, b, data = random_linear_problem(60, 16, 4, seed=3)
    W64, b64, x64 = W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64)
    stub = stub_for(W, b)
    th = threat(norm, eps)
    liar = create("test-blackbox-liar")
    x0, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    raw = liar.run(Oracle(stub, len(x0)), x0, Goal(y, False), th, SampleRng(0, "liar", data.ids))
    assert (th.distance(raw, x0) > 5 * eps).all() and ((raw < 0) | (raw > 1)).flatten(1).any(dim=1).all()
    raw_pred = stub.predict(raw).numpy()

    # what the harness must do: project the raw point onto the ball, then the box, and ask the model about that
    raw64, x064 = raw.double(), x0.double()
    if norm == "linf":
        legal = torch.minimum(torch.maximum(raw64, x064 - eps), x064 + eps).clamp(0, 1)
    else:
        delta = raw64 - x064
        legal = (x064 + delta * (eps / delta.norm(dim=1, keepdim=True)).clamp(max=1)).clamp(0, 1)
    expected_broken = (stub.predict(legal.float()) != y).numpy()

    res = evaluate(stub, data, [th], Battery("t", 1, [Entry("liar", "test-blackbox-liar")])).results[0]
    broken = ~res.robust
    assert res.robust.any() and broken.any()
    assert (raw_pred[res.robust] != data.y[res.robust]).all()  # every raw point lied, also for the samples kept robust
    assert broken.tolist() == expected_broken.tolist()  # judged on the projection, exactly
    assert np.all(within_eps(res.distance[broken], eps))
    assert np.allclose(res.distance[broken], th.distance(legal, x064).numpy()[broken], atol=1e-6)
    if norm == "linf":
        # no adversarial may be closer than the exact minimum, and none can be missed for want of a legal point
        exact = exact_min_linf(W64, b64, x64, data.y)
        assert np.all(res.distance[broken] >= exact[broken] - 1e-5)
        assert res.robust_accuracy >= float((exact > eps).mean()) - 1e-9
    else:
        # the box-free distance to the nearest other class is a lower bound on any adversarial's distance
        lower = np.full(len(x64), np.inf)
        for j in range(W.shape[0]):
            a = W64[j][None] - W64[data.y]
            need = -((a * x64).sum(1) + b64[j] - b64[data.y])
            with np.errstate(divide="ignore", invalid="ignore"):
                lower = np.minimum(lower, np.where(j == data.y, np.inf, need / np.linalg.norm(a, axis=1)))
        assert np.all(res.distance[broken] >= lower[broken] - 1e-5)


def _check_candidates(stub, th, cand, x0, goal, success, pred):
    assert torch.isfinite(cand).all()
    assert bool(((cand >= 0) & (cand <= 1)).all()), "a candidate outside the input box"
    assert within_eps(th.distance(cand, x0).numpy(), th.epsilon).all(), "a candidate outside the ball"
    assert torch.equal(stub.predict(cand), pred)  # the verdict is the target's answer on that very point
    assert torch.equal(success, goal.reached(pred))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    d=st.sampled_from([4, 9, 12]),
    k=st.integers(2, 4),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.02, 0.4),
    attack=st.sampled_from(["square", "noise", "hopskipjump", "test-blackbox-liar"]),
    budget=st.integers(2, 80),
    targeted=st.booleans(),
)
def test_verified_candidates_lie_in_ball_and_box(seed, d, k, norm, eps, attack, budget, targeted):
    W, b, data = random_linear_problem(10, d, k, seed=seed)
    stub = stub_for(W, b)
    th = threat(norm, eps)
    x0 = torch.as_tensor(data.x)
    labels = torch.as_tensor(data.y)
    if targeted:
        labels = (labels + 1) % k
    goal = Goal(labels, targeted)
    target = LabelOnly(stub) if attack == "hopskipjump" else stub
    target.detect_output_kind(target.scores(x0))
    oracle = Oracle(target, len(x0), budget=budget - 1)
    cand = create(attack).run(oracle, x0, goal, th, SampleRng(seed, attack, data.ids))
    oracle.budget = budget
    v = verify(oracle, target, th, cand, x0, goal)
    success, pred, verified = v.success, v.pred, v.candidate
    _check_candidates(stub, th, verified, x0, goal, success, pred)
    assert (oracle.used <= budget).all()

    # and through the harness: every reported distance is inside epsilon, every adv_pred meets the goal
    res = evaluate(target, data, [ThreatModel(th.norm, th.epsilon, th.eps_text, targeted)],
                   Battery("t", 1, [Entry(attack, attack)]), queries=budget, seed=seed).results[0]
    broken = ~res.robust & res.clean_correct
    assert np.all(within_eps(res.distance[broken], eps))
    assert np.all(res.adv_pred[broken] != -1)
    if targeted:
        assert np.all(res.adv_pred[broken] == res.goal[broken])
    else:
        assert np.all(res.adv_pred[broken] != res.labels[broken])
    if norm == "linf" and not targeted:
        exact = exact_min_linf(W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64), data.y)
        assert np.all(res.distance[broken] >= exact[broken] - 1e-5)
    assert res.queries.max() <= budget


# --- 6. the noise check ----------------------------------------------------------------------------------
def _noise_problem():
    W, b, data = random_linear_problem(30, 16, 3, seed=5)
    return W, b, data, [threat("linf", 0.15)]


def test_noise_check_flags_an_attack_that_does_nothing():
    W, b, data, th = _noise_problem()
    battery = Battery("t", 1, [Entry("idle", "test-blackbox-idle"), Entry("noise", "noise", {"draws": 20}, independent=True)])
    ev = evaluate(stub_for(W, b), data, th, battery)
    res = ev.results[0]
    noise = res.attacks[1]
    assert noise.broken > 0 and res.attacks[0].broken == 0
    diags = [d for d in report_of(ev, data, battery)["results"][0]["diagnostics"] if d["check"] == "noise-vs-attack"]
    assert len(diags) == 1
    (diag,) = diags
    assert diag["check"] == "noise-vs-attack" and diag["attack"] == "idle" and diag["baseline"] == "noise"
    assert diag["passed"] is False
    assert "idle" in diag["message"] and "weaker than random noise" in diag["message"]
    assert diags == [d for d in check(res) if d["check"] == "noise-vs-attack"]


def test_noise_check_passes_for_a_working_attack():
    W, b, data, th = _noise_problem()
    battery = Battery("t", 1, [Entry("square", "square"), Entry("noise", "noise", {"draws": 20}, independent=True)])
    ev = evaluate(stub_for(W, b), data, th, battery, queries=300)
    res = ev.results[0]
    assert res.attacks[1].broken > 0  # noise did break something: the check compares real numbers
    (diag,) = [d for d in report_of(ev, data, battery)["results"][0]["diagnostics"] if d["check"] == "noise-vs-attack"]
    assert diag["attack"] == "square" and diag["passed"] is True
    assert "weaker" not in diag["message"]


def test_cli_prints_the_failed_noise_check(tmp_path, run_cli):
    W, b, data, _ = _noise_problem()
    model = _export_linear_onnx(W, b, tmp_path / "lin.onnx")
    np.savez(tmp_path / "d.npz", x=data.x, y=data.y)
    out = tmp_path / "r.json"
    res = run_cli("scan", model, "--data", tmp_path / "d.npz", "--eps", "0.15", "--attacks", "test-blackbox-idle,noise",
                  "-o", out)
    assert res.exit_code == 0, res.output
    assert "check failed" in res.stdout and "test-blackbox-idle" in res.stdout
    (diag,) = [d for d in json.loads(out.read_text())["results"][0]["diagnostics"] if d["check"] == "noise-vs-attack"]
    assert diag["passed"] is False and diag["attack"] == "test-blackbox-idle"


# --- 7. report shape -----------------------------------------------------------------------------------
def _non_decreasing(v):
    return all(a <= b + 1e-12 for a, b in zip(v, v[1:]))


@pytest.mark.parametrize("labels_only", [False, True], ids=["scores", "labels"])
def test_report_curves_are_monotone_and_end_at_the_totals(small3, labels_only):
    W, b, data = small3
    target = LabelOnly(stub_for(W, b)) if labels_only else stub_for(W, b)
    threats = [threat("linf", 0.05), threat("linf", 0.1), threat("l2", 0.3)]
    battery = PRESETS["blackbox"]
    ev = evaluate(target, data, threats, battery, queries=150)
    rep = report_of(ev, data, battery)
    assert len(rep["results"]) == 3
    for r, res in zip(rep["results"], ev.results):
        grid, succ, rob = r["query_grid"], r["success_curve"], r["robust_accuracy_curve"]
        s = r["samples"]
        assert grid == sorted(set(grid)) and grid[-1] >= max(s["queries"])
        assert len(succ) == len(rob) == len(grid)
        assert _non_decreasing(succ) and all(0 <= v <= 1 for v in succ)
        assert _non_decreasing([-v for v in rob])
        correct = int(res.clean_correct.sum())
        assert r["broken"] > 0 and r["robust_accuracy"] < r["clean_accuracy"]  # the curves have something to show
        assert succ[-1] == pytest.approx(r["broken"] / correct)
        assert rob[-1] == pytest.approx(r["robust_accuracy"])
        # each point of the curve is recomputable from the per-sample columns
        broken = np.array([c and not rb for c, rb in zip(res.clean_correct, s["robust"])])
        at_break = np.array(s["queries_at_break"])
        for g, v, ra in zip(grid, succ, rob):
            within = int((broken & (at_break <= g)).sum())
            assert v == pytest.approx(within / correct)
            assert ra == pytest.approx((correct - within) / r["n"])
        assert np.all(at_break[broken] <= np.array(s["queries"])[broken])
        assert np.all(at_break[broken] >= 1)

        ran = [a for a in r["attacks"] if not a["skipped"]]
        assert ran
        for a, outcome in zip(r["attacks"], res.attacks):
            assert a["label"] == outcome.label
            if a["skipped"]:
                assert "success_curve" not in a and a["success_rate"] is None
                continue
            curve = a["success_curve"]
            assert len(curve) == len(grid)
            if not a["attempted"]:  # the cascade left it nothing to attack
                assert curve == [None] * len(grid) and a["success_rate"] is None
                continue
            assert _non_decreasing(curve)
            assert a["success_rate"] == pytest.approx(a["broken"] / a["attempted"])
            assert curve[-1] == pytest.approx(a["success_rate"])
            mine = outcome.queries[outcome.broken_mask]
            if len(mine):
                assert a["queries_mean_success"] == pytest.approx(float(mine.mean()))
                assert a["queries_median_success"] == pytest.approx(float(np.median(mine)))
            else:
                assert a["queries_mean_success"] is None and a["queries_median_success"] is None

    rows = list(csv.DictReader(io.StringIO(to_csv(Report.from_dict(rep)))))
    assert len(rows) == 3
    for row, r in zip(rows, rep["results"]):
        cols = [c for c in row if c.startswith("success@q<=")]
        assert cols, list(row)
        for g, v in zip(r["query_grid"], r["success_curve"]):
            assert float(row[f"success@q<={g}"]) == pytest.approx(v, rel=1e-5)
        assert float(row["robust_accuracy"]) == pytest.approx(r["robust_accuracy"], rel=1e-5)


# --- 8. batch-size independence ---------------------------------------------------------------------------------
# HopSkipJump is left out on purpose: its starting point is the nearest *other sample of the batch* that is
# already adversarial, and its probe count per iteration is shared across the batch, so its results depend on
# the batch by design.
@pytest.mark.parametrize("attack, norm, eps, params, queries", [
    ("square", "linf", 0.06, {"max_queries": 200}, None),
    ("square", "l2", 0.25, {}, 90),
    ("noise", "linf", 0.1, {}, None),
    ("noise", "l2", 0.3, {}, 12),
    ("pgd-nes", "linf", 0.06, {"steps": 8, "samples": 5}, None),
    ("pgd-nes", "l2", 0.25, {"steps": 8, "samples": 5}, 70),
], ids=["square-linf", "square-l2-budget", "noise-linf", "noise-l2-budget", "pgd-nes-linf", "pgd-nes-l2-budget"])
def test_results_do_not_depend_on_the_batch_size(attack, norm, eps, params, queries):
    W, b, data = random_linear_problem(20, 16, 3, seed=4)
    battery = Battery("t", 1, [Entry(attack, attack, params)])
    runs = [evaluate(stub_for(W, b), data, [threat(norm, eps)], battery, seed=7, batch_size=bs, queries=queries).results[0]
            for bs in (7, 64)]
    a, c = runs
    assert a.robust.tolist() == c.robust.tolist()
    assert a.queries.tolist() == c.queries.tolist()
    assert a.queries_at_break.tolist() == c.queries_at_break.tolist()
    assert a.adv_pred.tolist() == c.adv_pred.tolist()
    np.testing.assert_allclose(a.distance, c.distance, rtol=1e-6, atol=1e-7)
    assert (~a.robust).any() and a.robust.any()  # both outcomes occur, so the comparison has teeth


# --- an attack that saw a valid adversarial must return one -------------------------------------------------
class _SpyOracle(Oracle):
    """Records, per row, whether any query the attack made was a valid adversarial: inside the threat model and
    meeting the goal (the model's answer itself, not the attack's reading of it)."""

    def __init__(self, target, x0, goal, threat, **kw):
        super().__init__(target, len(x0), **kw)
        self.x0, self.goal, self.threat = x0, goal, threat
        self.saw_adversarial = torch.zeros(len(x0), dtype=torch.bool)

    def scores(self, x, rows=None, **kw):
        out = super().scores(x, rows, **kw)
        r = self._rows(x, rows)
        ok = torch.isfinite(out).all(dim=1) & self.threat.contains(x, self.x0[r])
        hit = ok & self.goal.subset(r).reached(out.argmax(dim=1))
        self.saw_adversarial[r[hit]] = True
        return out


def _found_but_lost(attack: str, params: dict, th: ThreatModel, seed: int = 0) -> tuple[int, list[int]]:
    W, b, data = random_linear_problem(50, 16, 10, seed=seed, scale=0.5)
    stub = stub_for(W, b)
    x0, goal = torch.as_tensor(data.x), Goal(torch.as_tensor(data.y), False)
    stub.detect_output_kind(stub.scores(x0))
    spy = _SpyOracle(stub, x0, goal, th)
    cand = create(attack, **params).run(spy, x0, goal, th, SampleRng(0, attack, data.ids))
    success = verify(spy, stub, th, cand, x0, goal).success
    return int(spy.saw_adversarial.sum()), (spy.saw_adversarial & ~success).nonzero().squeeze(1).tolist()


@pytest.mark.parametrize("attack, params", [("square", {"max_queries": 100}), ("noise", {})], ids=["square-margin", "noise"])
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.2)])
def test_a_valid_adversarial_seen_by_the_attack_is_returned(attack, params, norm, eps):
    seen, lost = _found_but_lost(attack, params, threat(norm, eps))
    assert seen > 5  # the attack did find adversarials ...
    assert lost == []  # ... and handed every one of them to the harness


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.2)])
def test_square_with_ce_loss_returns_the_adversarial_it_found(norm, eps):
    seen, lost = _found_but_lost("square", {"max_queries": 100, "loss": "ce"}, threat(norm, eps))
    assert seen > 10
    assert lost == []


# --- white-box targets and the blackbox preset ---------------------------------------------------------------
def test_cli_access_scores_hides_gradients(tmp_path, run_cli, small3):
    W, b, data = small3
    path = tmp_path / "lin_scores.py"
    path.write_text(
        "import torch\n\n"
        "def build(num_classes=None):\n"
        f"    lin = torch.nn.Linear({W.shape[1]}, {W.shape[0]})\n"
        "    with torch.no_grad():\n"
        f"        lin.weight.copy_(torch.tensor({W.tolist()}))\n"
        f"        lin.bias.copy_(torch.tensor({b.tolist()}))\n"
        "    return lin\n"
    )
    np.savez(tmp_path / "d.npz", x=data.x, y=data.y)
    out = tmp_path / "r.json"
    res = run_cli("scan", f"{path}:build", "--data", tmp_path / "d.npz", "--eps", "0.08", "--preset", "quick",
                  "--access", "scores", "--queries", 60, "--num-classes", 3, "--device", "cpu", "-o", out)
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["targets"][0]["capabilities"] == ["labels", "scores"]
    attacks = {a["label"]: a for a in rep["results"][0]["attacks"]}
    assert "needs gradients" in attacks["pgd"]["skipped"]
    assert attacks["square"]["skipped"] is None and attacks["pgd-nes"]["skipped"] is None


def test_blackbox_preset_on_a_white_box_target_is_not_left_to_noise(small3):
    from robustbench_cli.targets.pytorch import TorchTarget

    W, b, data = small3
    target = TorchTarget(linear_module(W, b), "white", num_classes=3)
    res = evaluate(target, data, [threat("linf", 0.08)], PRESETS["blackbox"], queries=60).results[0]
    gradient_ran = any(not a.skipped and a.family == "gradient" for a in res.attacks)
    for a in res.attacks:
        if a.skipped == WHEN["no-gradients"]:
            # a skip that claims the gradient attacks cover the target needs a gradient attack that ran
            assert gradient_ran, f"{a.label} skipped: {a.skipped}"
    assert any(not a.skipped and a.family != "baseline" for a in res.attacks)
