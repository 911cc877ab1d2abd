"""The harness decides success, never the attack; queries are counted in one place and budgets are exact."""

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_cli import zoo
from robustbench_cli.attacks import Attack
from robustbench_cli.core.data import EvalSet, load_eval_set
from robustbench_cli.core.errors import TargetError
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.targets.base import Capability, Oracle
from robustbench_cli.targets.pytorch import TorchTarget


def threshold_model():
    """Two classes; class 1 only when the mean pixel exceeds 0.8: far from any 0.1-ball around 0.5."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
        lin.bias.copy_(torch.tensor([0.0, -3.2]))
    return TorchTarget(lin, "threshold", num_classes=2)


def half_data(n=6):
    return EvalSet(x=np.full((n, 4), 0.5, np.float32), y=np.zeros(n, np.int64), ids=np.arange(n), name="half")


def test_out_of_ball_candidates_are_projected_before_judging(temporary_attack):
    @temporary_attack
    class Cheat(Attack):
        name, family, requires = "test-cheat", "baseline", Capability.SCORES

        def run(self, oracle, x, goal, threat, rng):
            return torch.ones_like(x)  # misclassified, but far outside the 0.1 ball

    ev = evaluate(threshold_model(), half_data(), [ThreatModel.parse("linf:0.1")], Battery("t", 1, [Entry("cheat", "test-cheat")]))
    res = ev.results[0]
    assert res.clean_accuracy == 1.0
    assert res.robust_accuracy == 1.0  # the projected point (0.6) is still class 0


def test_nan_candidates_and_unchanged_inputs_do_not_count(temporary_attack):
    @temporary_attack
    class Broken(Attack):
        name, family, requires = "test-nan", "baseline", Capability.SCORES

        def run(self, oracle, x, goal, threat, rng):
            out = x.clone()
            out[::2] = float("nan")
            return out

    ev = evaluate(threshold_model(), half_data(), [ThreatModel.parse("linf:0.1")], Battery("t", 1, [Entry("nan", "test-nan")]))
    assert ev.results[0].robust_accuracy == 1.0
    assert ev.results[0].attacks[0].broken == 0


def test_success_is_recorded_only_after_reverification(temporary_attack):
    @temporary_attack
    class Edge(Attack):
        name, family, requires = "test-edge", "baseline", Capability.SCORES

        def run(self, oracle, x, goal, threat, rng):
            return x + threat.epsilon  # with eps 0.35 the mean becomes 0.85 > 0.8: a real success

    ev = evaluate(threshold_model(), half_data(), [ThreatModel.parse("linf:0.35")], Battery("t", 1, [Entry("edge", "test-edge")]))
    res = ev.results[0]
    assert res.robust_accuracy == 0.0
    assert res.adv_pred.tolist() == [1] * 6
    assert np.allclose(res.distance, 0.35, atol=1e-6)
    assert res.broken_by == ["edge"] * 6
    assert res.queries.tolist() == [1] * 6  # the harness's verification query is counted


def test_oracle_counts_per_sample_and_enforces_the_budget_exactly():
    target = load_target(str(zoo.ONNX))
    target.num_classes = 10
    oracle = Oracle(target, 3, budget=5)
    x = torch.zeros((4, 1, 28, 28))
    out = oracle.scores(x, torch.tensor([0, 0, 1, 2]))
    assert oracle.used.tolist() == [2, 1, 1]
    x8 = torch.zeros((8, 1, 28, 28))
    out = oracle.scores(x8, torch.tensor([0] * 8))  # row 0 has 3 left: 3 answered, 5 refused
    assert oracle.used.tolist() == [5, 1, 1]
    assert torch.isfinite(out[:3]).all() and torch.isnan(out[3:]).all()
    assert oracle.exhausted.tolist() == [True, False, False]


def test_query_budget_is_honoured_and_reported():
    data = load_eval_set("mnist:test", n=12, shuffle=True)
    target = load_target(str(zoo.ONNX))
    ev = evaluate(target, data, [ThreatModel.parse("linf:0.2")], Battery("t", 1, [Entry("nes", "pgd-nes")]), queries=150)
    res = ev.results[0]
    assert res.queries.max() <= 150
    attempted = res.clean_correct
    assert (res.queries[attempted] > 0).all()
    assert (res.queries[~attempted] == 0).all()


def test_same_seed_same_results_and_independent_of_batch_size():
    data = load_eval_set("mnist:test", n=24, shuffle=True)
    target = load_target(str(zoo.ONNX))
    battery = Battery("t", 1, [Entry("nes", "pgd-nes", {"steps": 10, "samples": 5})])
    runs = [evaluate(target, data, [ThreatModel.parse("linf:0.15")], battery, seed=3, batch_size=bs).results[0]
            for bs in (24, 24, 5)]
    for r in runs[1:]:
        assert r.robust.tolist() == runs[0].robust.tolist()
        assert r.adv_pred.tolist() == runs[0].adv_pred.tolist()
        assert r.queries.tolist() == runs[0].queries.tolist()
    other = evaluate(target, data, [ThreatModel.parse("linf:0.15")], battery, seed=4).results[0]
    assert other.queries.tolist() != runs[0].queries.tolist()  # the seed matters


def test_targeted_goals():
    data = load_eval_set("mnist:test", n=40, shuffle=True)
    target = load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS)))
    battery = Battery("t", 1, [Entry("pgd", "pgd", {"steps": 20})])
    ev = evaluate(target, data, [ThreatModel.parse("linf:0.3")], battery, targeted="random")
    res = ev.results[0]
    assert (res.goal != res.labels).all()
    broken = ~res.robust & res.clean_correct
    assert broken.any()
    assert (res.adv_pred[broken] == res.goal[broken]).all()  # a targeted success reaches its class
    fixed = evaluate(target, data, [ThreatModel.parse("linf:0.3")], battery, targeted="3").results[0]
    assert fixed.n == int((data.y != 3).sum())  # samples of class 3 have nothing to reach


def test_skipped_attacks_carry_a_reason():
    data = load_eval_set("mnist:test", n=4)
    target = load_target(str(zoo.ONNX))
    ev = evaluate(target, data, [ThreatModel.parse("linf:0.1")], Battery("t", 1, [Entry("pgd", "pgd"), Entry("fgsm", "fgsm")]))
    reasons = [a.skipped for a in ev.results[0].attacks]
    assert all(r and "gradients" in r for r in reasons)
    assert ev.results[0].robust_accuracy == ev.results[0].clean_accuracy


def test_out_of_memory_halves_the_batch_and_gives_the_same_results():
    """A target that runs out of memory above 8 rows: the scan retries in halves instead of failing, and the
    per-sample results equal those of --batch-size 8 (per-sample random streams)."""
    import torch as _torch
    from linear_truth import linear_module, random_linear_problem

    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate
    from robustbench_cli.targets.pytorch import TorchTarget

    W, b, data = random_linear_problem(40, 12, 3, seed=5)

    class Small(TorchTarget):
        # runs out of memory on attack batches above 8 rows; the 40-row clean pass and probes (before any attack,
        # not retried by the harness) still fit
        def forward(self, x):
            if 8 < len(x) < 40:
                raise _torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(x)

    battery = Battery("b", 1, [Entry("pgd", "pgd", {"steps": 10})])
    threat = ThreatModel.parse("linf:0.05")
    small = Small(linear_module(W, b), "lin", num_classes=3, batch_size=8)
    ev = evaluate(small, data, [threat], battery, seed=3, batch_size=32)
    ref = evaluate(TorchTarget(linear_module(W, b), "lin", num_classes=3), data, [threat], battery, seed=3,
                   batch_size=8)
    assert ev.oom_retries >= 2  # 32 -> 16 -> 8
    r, q = ev.results[0], ref.results[0]
    assert r.robust.tolist() == q.robust.tolist() and r.queries.tolist() == q.queries.tolist()
    assert 0 < r.robust_accuracy < r.clean_accuracy
    never = Small(linear_module(W, b), "lin", num_classes=3, batch_size=64)
    never.forward = lambda x: (_ for _ in ()).throw(_torch.OutOfMemoryError("always")) if len(x) < 40 else \
        TorchTarget.forward(never, x)
    with pytest.raises(TargetError, match="single sample"):
        evaluate(never, data, [threat], battery, seed=3, batch_size=4)
