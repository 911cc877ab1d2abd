"""The fast route for attacks' forward-only queries (an onnxruntime export of a PyTorch target) is equivalent to
the module, switches itself off when it is not, and never decides a success: the harness verifies on the module."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustbench_cli import zoo
from robustbench_cli.core.data import load_eval_set
from robustbench_cli.core.threat_model import Norm, ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.targets.pytorch import TorchTarget

THREAT = ThreatModel(Norm.LINF, 0.2, "0.2")
# 400 queries x 30 samples: over FAST_ROUTE_MIN, so the scans below make the export (cascade.plan_fast_route)
SQUARE = Battery("sq", 1, [Entry("square", "square", {"max_queries": 400})])


def test_export_answers_like_the_module():
    t = TorchTarget(zoo.load(), "cnn", num_classes=10)
    x = torch.rand(37, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    fast, exact = t.scores(x, fast=True), t.scores(x)
    assert t.details["fast_forward"] == "onnxruntime"
    torch.testing.assert_close(fast, exact, atol=1e-4, rtol=1e-4)
    assert fast.argmax(1).tolist() == exact.argmax(1).tolist()


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 3)

    def forward(self, x):
        return self.lin(x.flatten(1) + 0.5 * torch.randn_like(x.flatten(1)))


def test_randomised_model_keeps_the_module_route():
    t = TorchTarget(_Noisy(), "noisy", num_classes=3)
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    assert t.scores(x, fast=True).shape == (8, 3)
    assert t.details["fast_forward"].startswith("off")
    assert t._session is False  # decided once, not re-exported on every call


class _LyingFastRoute(TorchTarget):
    """A fast route that tells the attack every input is already misclassified (its scores are negated)."""

    def _fast_batch(self, x):
        return -self._scores_batch(x)


def test_the_harness_never_trusts_the_fast_route():
    data = load_eval_set("mnist", n=30, offset=2000)
    honest = TorchTarget(zoo.load(), "cnn", num_classes=10)
    liar = _LyingFastRoute(zoo.load(), "cnn", num_classes=10)
    r_liar = evaluate(liar, data, [THREAT], SQUARE, seed=0, keep_adversarials=True).results[0]
    r_true = evaluate(honest, data, [THREAT], SQUARE, seed=0).results[0]
    assert r_liar.clean_accuracy == r_true.clean_accuracy  # the clean pass takes the module's own answers
    # the lie made Square stop at once with its start point: the harness counts only the starts the module itself
    # misclassifies, so the lie costs the attack its strength but never adds a break
    broken = np.flatnonzero(~r_liar.robust & r_liar.clean_correct)
    with torch.no_grad():
        pred = honest.scores(torch.from_numpy(r_liar.adversarial[broken])).argmax(1).numpy() if len(broken) else []
    assert (np.asarray(pred) != data.y[broken]).all()
    assert r_liar.robust_accuracy > r_true.robust_accuracy  # the honest route breaks more


def test_turning_it_off_changes_nothing_but_speed():
    data = load_eval_set("mnist", n=30, offset=2000)
    runs = []
    for fast in (True, False):
        t = TorchTarget(zoo.load(), "cnn", num_classes=10)
        t.fast_forward = fast
        runs.append(evaluate(t, data, [THREAT], SQUARE, seed=0).results[0])
        assert ("fast_forward" in t.details) == fast
    # float rounding differs by ~1e-6 between the routes; the attack's decisions may differ on a knife's edge only
    assert abs(runs[0].robust.sum() - runs[1].robust.sum()) <= 1
    assert runs[0].queries.sum() > 0 and runs[1].queries.sum() > 0


def test_the_export_leaves_batchnorm_and_dropout_in_inference_mode():
    """Regression: the exporter restored its (training-mode) wrapper's mode onto the target, so BatchNorm updated its
    running statistics on every later query (ResNet-20 lost 10 points of attack strength in the AutoAttack bench)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                        nn.Linear(4 * 26 * 26, 10))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    t = TorchTarget(net, "bn", num_classes=10)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    before = t.scores(x)
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    fast = t.scores(x, fast=True)
    assert t.details["fast_forward"] == "onnxruntime"
    assert not any(m.training for m in net.modules())
    torch.testing.assert_close(t.scores(x), before, atol=0, rtol=0)
    assert all(torch.equal(stats[k], v) for k, v in net.state_dict().items())
    torch.testing.assert_close(fast, before, atol=1e-4, rtol=1e-4)


# --- the plan: an export only where it repays ---------------------------------------------------------------------
class _Counting(TorchTarget):
    """Counts the rows its fast route answers."""

    fast_rows = 0

    def _fast_batch(self, x):
        self.fast_rows += len(x)
        return super()._fast_batch(x)


def _attacks_that_run_on_a_white_box():
    from robustbench_cli.attacks import REGISTRY

    # transfer and generative attacks need surrogates or a trained generator; their bound is 0 by construction (the
    # target only answers the harness's verification), which test_a_surrogate_only_attack_asks_the_target_nothing checks
    return sorted(k for k, c in REGISTRY.items() if c.family in ("gradient", "query", "baseline")
                  and not k.startswith("probe-"))


SMALL = {"square": {"max_queries": 60}, "hopskipjump": {"max_queries": 60}, "pgd-nes": {"steps": 3},
         "pgd-spsa": {"steps": 3}, "pgd-fd": {"steps": 1}, "noise": {"draws": 7}, "apgd-ce": {"steps": 5},
         "apgd-dlr": {"steps": 5}, "apgd-t": {"steps": 5, "targets": 3}, "fgsm-targets": {}, "pgd": {"steps": 5, "restarts": 2},
         "fmn": {"steps": 5}, "cw-l2": {"steps": 5}, "lecture": {"steps": 3}}


def test_every_attack_asks_at_most_its_planned_forward_queries():
    """The plan's count is an upper bound: for every attack that runs on a white box, the rows its fast route
    answered on a batch are at most ``forward_queries`` per sample (an attack asking more would make the plan skip an
    export that pays)."""
    from robustbench_cli.attacks import create
    from robustbench_cli.attacks.base import Goal
    from robustbench_cli.attacks.rng import SampleRng
    from robustbench_cli.targets.base import Oracle

    data = load_eval_set("mnist", n=6, offset=2000)
    x0, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    names = _attacks_that_run_on_a_white_box()
    assert {"square", "noise", "apgd-t", "pgd-nes", "hopskipjump"} <= set(names)
    for name in names:
        attack = create(name, **SMALL.get(name, {}))
        threat = ThreatModel(Norm.LINF, 0.05, "0.05") if Norm.LINF in attack.norms else ThreatModel(Norm.L2, 1.0, "1")
        t = _Counting(zoo.load(), "cnn", num_classes=10)
        t.detect_output_kind(t.scores(x0))
        attack.run(Oracle(t, len(x0)), x0, Goal(y, False), threat, SampleRng(0, name, data.ids))
        bound = attack.forward_queries(tuple(data.sample_shape), 10)
        assert t.fast_rows <= bound * len(x0), (name, t.fast_rows, bound)


def test_a_surrogate_only_attack_asks_the_target_nothing():
    from robustbench_cli.attacks import create

    for name in ("mi-fgsm", "di-fgsm", "mi-di-fgsm", "generator"):
        assert create(name).forward_queries((1, 28, 28), 10) == 0


def test_a_scan_that_cannot_repay_the_export_does_not_make_it():
    """A white-box quick check (FGSM, 5 noise draws, 30 samples: 240 forward-only queries at most) never exports; the
    report says why, and the numbers are exactly those of the module route."""
    data = load_eval_set("mnist", n=30, offset=2000)
    battery = Battery("q", 1, [Entry("fgsm", "fgsm"), Entry("noise", "noise", {"draws": 5}, independent=True)])
    runs, reports = [], []
    for fast in (True, False):
        t = _Counting(zoo.load(), "cnn", num_classes=10)
        t.fast_forward = fast
        out = evaluate(t, data, [THREAT], battery, seed=0)
        runs.append(out.results[0])
        reports.append(out.target)
        assert t.fast_rows == 0 and t._session is None and "fast_forward" not in t.details
    assert reports[0]["fast_forward"].startswith("off: the battery asks at most 240 forward-only queries")
    assert "fast_forward" not in reports[1]  # the user turned it off: nothing to explain
    assert np.array_equal(runs[0].robust, runs[1].robust) and np.array_equal(runs[0].queries, runs[1].queries)
    np.testing.assert_array_equal(runs[0].best_margin, runs[1].best_margin)


def test_a_shard_plans_with_the_whole_set():
    """Square (400 queries) on 30 samples repays the export, 10 samples alone would not: each of 3 shards exports
    as the whole scan does, because the plan counts the whole set (ShardSync.total), not the shard's rows."""
    from robustbench_cli.evaluation.shards import Shard, ShardSync, head

    data = load_eval_set("mnist", n=30, offset=2000)
    for i in (1, 2, 3):
        shard = Shard(i, 3)
        t = _Counting(zoo.load(), "cnn", num_classes=10)
        evaluate(t, shard.take(data), [THREAT], SQUARE, seed=0, sync=ShardSync(shard, head(data), len(data)))
        assert t.fast_rows > 0 and t.details["fast_forward"] == "onnxruntime"
    alone = _Counting(zoo.load(), "cnn", num_classes=10)
    evaluate(alone, Shard(1, 3).take(data), [THREAT], SQUARE, seed=0)
    assert alone.fast_rows == 0  # the same 10 samples as a scan of their own: 4,000 queries do not repay it
