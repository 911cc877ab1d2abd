"""Target-level diagnostics: randomised outputs, masked gradients, probability outputs, robust accuracy that
rises with epsilon, an unbounded attack that cannot reach chance, and a black-box attack beating the white-box ones
are each flagged with their id; a sound model passes every check. (tests/test_eot_bpda.py has the end-to-end case of
an input quantiser: the checks fire, and --bpda quiets them.)"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from linear_truth import linear_module, random_linear_problem
from torch import nn

from robustbench_cli.core.results import AttackOutcome, ThreatResult
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.evaluation.diagnostics import check, check_cascade, check_target
from robustbench_cli.targets.base import LabelOnly, ScoresOnly
from robustbench_cli.targets.pytorch import TorchTarget


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


class Constant(nn.Module):
    """Ignores its input: the same scores for every image (a broken export, say)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner.bias.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]


def _findings(module, threats=("linf:0.05",), view=None):
    W, b, data = random_linear_problem(40, 12, 3, seed=0)
    target = TorchTarget(module(linear_module(W, b)), "m")
    if view is not None:
        target = view(target)
    battery = Battery("t", 1, [Entry("fgsm", "fgsm")])
    ev = evaluate(target, data, [ThreatModel.parse(t) for t in threats], battery)
    return {f["check"]: f for f in check_target(ev)}, ev


def test_a_sound_model_passes_every_check():
    found, _ = _findings(lambda m: m, ("linf:0.02", "linf:0.1"))
    assert {"deterministic-outputs", "batch-independent-outputs", "gradients", "epsilon-monotone",
            "unbounded-epsilon"} <= set(found)
    assert all(f["passed"] for f in found.values()), found
    assert "logit-outputs" not in found


class BatchStats(torch.nn.Module):
    """Normalises by its batch's statistics, as BatchNorm left in training mode does."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x - x.mean(dim=0, keepdim=True))


def test_outputs_that_depend_on_the_batch_are_flagged():
    found, _ = _findings(BatchStats)
    assert found["deterministic-outputs"]["passed"] is True  # the same batch twice agrees: the old probe was blind
    assert found["batch-independent-outputs"]["passed"] is False
    assert "--batch-size" in found["batch-independent-outputs"]["message"]


def test_randomised_outputs_are_flagged():
    found, _ = _findings(Noisy)
    assert found["deterministic-outputs"]["passed"] is False
    assert "EOT" in found["deterministic-outputs"]["message"]


def test_masked_gradients_are_flagged():
    found, ev = _findings(Rounded)
    assert found["gradients"]["passed"] is False
    assert "zero at 40" in found["gradients"]["message"] and "--bpda" in found["gradients"]["message"]
    # PGD at Linf 1 from the clean inputs cannot move either: nothing breaks even with the whole box allowed
    assert found["unbounded-epsilon"]["passed"] is False
    assert ev.probes["unbounded"]["still_correct"] == ev.probes["unbounded"]["rows"] == 40


def test_unbounded_epsilon_is_quiet_on_sound_black_boxes():
    for view, attack in ((ScoresOnly, "square"), (LabelOnly, "swap")):
        found, ev = _findings(lambda m: m, view=view)
        assert "gradients" not in found
        assert ev.probes["unbounded"]["attack"] == attack
        assert found["unbounded-epsilon"]["passed"] is True, found["unbounded-epsilon"]
        # Square stops each sample at its first success; the swap is one verification query per sample
        assert 0 < ev.probes["unbounded"]["model_rows"] <= 40 * (101 if attack == "square" else 1)


def test_the_label_only_probe_breaks_a_healthy_cnn_and_not_a_constant_model():
    """Issue 22: with --access labels, noise at Linf 1 left 8 of 20 inputs of the healthy embedded CNN correct and the
    check cried wolf; the swap probe breaks every one of them, and still fails on a model that ignores its input."""
    from robustbench_cli import zoo
    from robustbench_cli.core.data import load_eval_set
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate
    from robustbench_cli.evaluation.diagnostics import check_target
    from robustbench_cli.targets import TargetSpec, load_target

    target = load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), access="labels", device="cpu"))
    data = load_eval_set("mnist:test", n=40)
    ev = evaluate(target, data, [ThreatModel.parse("linf:0.1")], Battery("b", 1, [Entry("noise", "noise", {})]))
    found = {f["check"]: f for f in check_target(ev)}
    assert ev.probes["unbounded"]["attack"] == "swap" and ev.probes["unbounded"]["still_correct"] == 0
    assert found["unbounded-epsilon"]["passed"] is True
    found, ev = _findings(Constant, view=LabelOnly)
    assert found["unbounded-epsilon"]["passed"] is False  # one class for everything: nothing to swap, noise fails


def test_a_model_that_ignores_its_input_fails_unbounded_epsilon():
    found, ev = _findings(Constant, view=ScoresOnly)
    u = ev.probes["unbounded"]
    assert u["attack"] == "square" and u["rows"] > 5 and u["still_correct"] == u["rows"]
    assert found["unbounded-epsilon"]["passed"] is False
    assert "chance is 33.3%" in found["unbounded-epsilon"]["message"]


def _cascade(n: int, broken_by_query: int, gradients: bool = True) -> list[dict]:
    """A white-box cascade pgd -> square on n clean-correct samples; pgd broke half, square ``broken_by_query``."""
    robust = np.ones(n, dtype=bool)
    r = ThreatResult(target="m", threat=ThreatModel.parse("linf:0.1"), ids=np.arange(n), labels=np.zeros(n, int),
                     clean_pred=np.zeros(n, int), goal=np.zeros(n, int), eligible=np.ones(n, bool), robust=robust,
                     adv_pred=np.full(n, -1), distance=np.full(n, np.nan), queries=np.zeros(n, int), broken_by=[None] * n)
    pgd_broke = np.arange(n) < n // 2
    sq_broke = (np.arange(n) >= n // 2) & (np.arange(n) < n // 2 + broken_by_query)
    r.attacks = [
        AttackOutcome("pgd", "pgd", "gradient", {}, attempted=n, broken=int(pgd_broke.sum()),
                      attempted_mask=np.ones(n, bool), broken_mask=pgd_broke),
        AttackOutcome("square", "square", "query", {}, attempted=n - n // 2, broken=broken_by_query,
                      attempted_mask=~pgd_broke, broken_mask=sq_broke),
        AttackOutcome("noise", "noise", "baseline", {}, attempted=n, independent=True,
                      attempted_mask=np.ones(n, bool), broken_mask=np.zeros(n, bool)),
    ]
    caps = ["labels", "scores"] + (["gradients"] if gradients else [])
    return check_cascade(r, {"capabilities": caps})


def test_blackbox_beating_whitebox_is_flagged_beyond_two_samples_and_one_percent():
    assert _cascade(100, 1)[0]["passed"] is True  # one lucky sample is no pattern
    found = _cascade(100, 2)
    assert len(found) == 1 and found[0]["check"] == "blackbox-vs-whitebox" and found[0]["passed"] is False
    assert "square broke 2 of the 50 samples the gradient attacks (pgd) left robust" in found[0]["message"]
    assert _cascade(1000, 9)[0]["passed"] is True  # under 1% of n
    assert _cascade(1000, 10)[0]["passed"] is False
    assert _cascade(100, 30, gradients=False) == []  # a black box: query attacks are all it has


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


class NaNOffGrid(torch.nn.Module):
    """Finite scores on 8-bit images, NaN anywhere else: every perturbed candidate gets NaN scores."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        z = self.inner(x)
        off = ((x * 255 - torch.round(x * 255)).abs() > 1e-3).flatten(1).any(dim=1)
        return torch.where(off[:, None], torch.full_like(z, float("nan")), z)


def test_nan_scores_are_never_breaks_and_are_counted():
    """Issue 22: NaN answers used to be argmax'ed into a 'misclassification' and counted as breaks."""
    W, b, data = random_linear_problem(40, 12, 3, seed=0)
    data.x = np.round(data.x * 255).astype(np.float32) / 255
    module = linear_module(W, b)
    with torch.no_grad():
        data.y = module(torch.from_numpy(data.x)).argmax(1).numpy()
    target = TorchTarget(NaNOffGrid(module), "m")
    ev = evaluate(target, data, [ThreatModel.parse("linf:0.2")], Battery("t", 1, [Entry("pgd", "pgd", {"steps": 5})]))
    r = ev.results[0]
    assert r.robust_accuracy == r.clean_accuracy == 1.0  # nothing broke: every candidate was NaN
    assert r.nonfinite.sum() >= len(data)
    found = {f["check"]: f for f in check(r)}
    assert found["finite-scores"]["passed"] is False and "NaN" in found["finite-scores"]["message"]


@given(m=st.integers(0, 3000), p=st.floats(0.0, 1.0), share=st.floats(0.0, 1.0))
def test_the_binomial_tail_is_a_probability_for_any_sample_count(m, p, share):
    """The chance-level checks run on scans of thousands of samples: the tail never overflows, and it is the exact
    sum where that is computable."""
    from robustbench_cli.evaluation.diagnostics import binomial_tail

    c = round(share * m)
    got = binomial_tail(c, m, p)
    assert 0.0 <= got <= 1.0
    if m <= 60:
        exact = sum(math.comb(m, i) * p**i * (1 - p) ** (m - i) for i in range(c, m + 1))
        assert got == pytest.approx(min(1.0, exact), rel=1e-9, abs=1e-12)
