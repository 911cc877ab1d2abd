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
SQUARE = Battery("sq", 1, [Entry("square", "square", {"max_queries": 200})])


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
