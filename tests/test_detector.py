"""A classifier guarded by a detector: the harness enforces "misclassified and not flagged", the threshold flags the
requested share of clean inputs, the adaptive view folds the detector into the logits so that attacks aimed at both
win where attacks unaware of the detector lose, and the scan reports all of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_cli.attacks import Attack
from robustbench_cli.attacks.base import Goal
from robustbench_cli.core.data import DataSpec, EvalSet
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.evaluation.guarded import add_findings, annotate
from robustbench_cli.targets.base import Capability, Oracle, ScoresOnly
from robustbench_cli.targets.detector import DetectorTarget, GuardedOracle, calibrate, fold, guard
from robustbench_cli.targets.pytorch import TorchTarget

torch.set_num_threads(1)
LINF = ThreatModel.parse("linf:0.1")


def _linear(weight, bias, name):
    lin = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight))
        lin.bias.copy_(torch.tensor(bias))
    return TorchTarget(lin, name, num_classes=len(weight) if len(weight) > 1 else None)


def classifier():
    """Class 1 when x_a + 2 x_b > 1.65: the clean point (0.5, 0.5) is class 0, and the 0.1 ball reaches class 1."""
    return _linear([[0.0, 0.0], [1.0, 2.0]], [0.0, -1.65], "clf")


def detector():
    """Scores x_a - 0.5: with threshold 0.02 it flags x_a > 0.52, so raising x_a (the naive way) gets caught."""
    return _linear([[1.0, 0.0]], [-0.5], "det")


def points(n=4):
    return EvalSet(x=np.full((n, 2), 0.5, np.float32), y=np.zeros(n, np.int64), ids=np.arange(n), name="points")


def test_fixed_threshold_the_harness_enforces_misclassified_and_not_flagged(temporary_attack):
    @temporary_attack
    class Fixed(Attack):
        """Claims (0.6, 0.6) for even rows (fools the classifier, flagged) and (0.5, 0.6) for odd rows (not flagged)."""

        name, family, requires = "test-fixed", "baseline", Capability.SCORES

        def run(self, oracle, x, goal, threat, rng):
            out = torch.tensor([[0.6, 0.6], [0.5, 0.6]]).repeat(len(x) // 2, 1)
            return out

    battery = Battery("t", 1, [Entry("fixed", "test-fixed")])
    plain = evaluate(classifier(), points(), [LINF], battery).results[0]
    assert plain.robust_accuracy == 0.0  # the classifier alone: every candidate fools it
    guarded = DetectorTarget(classifier(), detector(), 0.02)
    res = evaluate(guarded, points(), [LINF], battery).results[0]
    assert res.clean_accuracy == 1.0
    assert res.robust.tolist() == [True, False, True, False]  # flagged candidates are no success
    assert res.attacks[0].detected == 2 and res.attacks[0].broken == 2
    assert res.attacks[0].queries.tolist() == [1, 1, 1, 1]  # the detector answers within the verification query
    annotate(guarded, type("E", (), {"results": [res]})())
    assert res.detector["detection_rate"] == 0.5 and res.detector["clean_rejection_rate"] == 0.0


def test_a_clean_input_the_detector_rejects_counts_as_wrong():
    guarded = DetectorTarget(classifier(), detector(), -0.1)  # flags everything around 0.5
    res = evaluate(guarded, points(), [LINF], Battery("t", 1, [Entry("fgsm", "fgsm")])).results[0]
    assert res.clean_pred.tolist() == [-1] * 4
    assert res.clean_accuracy == 0.0 and res.robust_accuracy == 0.0
    assert res.attacks[0].attempted == 0


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.1, 0.333])
@pytest.mark.parametrize("n", [1, 7, 100, 1000])
def test_calibrated_threshold_flags_the_requested_share(fpr, n):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n))
    t = calibrate(scores, fpr)
    assert int((scores > t).sum()) == np.floor(fpr * n)


def test_guard_calibrates_on_clean_data_and_reports_the_measured_rate():
    torch.manual_seed(0)
    det = TorchTarget(nn.Linear(2, 2), "det2")
    clean = torch.rand(400, 2)
    na, ad = guard(classifier(), det, clean, fpr=0.05)
    assert na.details["calibration_fpr"] == 0.05 and ad.threshold == na.threshold
    assert int(na.rejects(clean).sum()) == 20  # 5% of 400
    assert not na.adaptive and ad.adaptive and na.name != ad.name
    with pytest.raises(Exception, match="detector-fpr"):
        guard(classifier(), det, clean, fpr=1.0)


@pytest.mark.parametrize("targeted", [False, True])
def test_folded_argmax_meets_the_goal_exactly_when_fooled_and_not_flagged(targeted):
    g = torch.Generator().manual_seed(int(targeted))
    z = torch.randn(2000, 5, generator=g) * 3
    margin = torch.randn(2000, generator=g)
    labels = torch.randint(0, 5, (2000,), generator=g)
    goal = Goal(labels, targeted)
    want = goal.reached(z.argmax(1)) & (margin <= 0)
    got = goal.reached(fold(z, margin, labels, targeted).argmax(1))
    assert torch.equal(got, want)
    assert 0.1 < float(want.float().mean()) < 0.9  # both outcomes occur


def test_adaptive_attack_wins_where_the_non_adaptive_one_is_caught():
    """PGD on the classifier raises x_a too and is flagged; PGD on the folded logits raises x_b and lowers x_a."""
    battery = Battery("t", 1, [Entry("pgd", "pgd", {"steps": 20, "random_start": False})])
    na, ad = (DetectorTarget(classifier(), detector(), 0.02, adaptive=a) for a in (False, True))
    r_na = evaluate(na, points(), [LINF], battery).results[0]
    r_ad = evaluate(ad, points(), [LINF], battery).results[0]
    assert r_na.robust_accuracy == 1.0 and r_na.attacks[0].detected == 4
    assert r_ad.robust_accuracy == 0.0 and r_ad.attacks[0].detected == 0
    assert Capability.GRADIENTS in ad.capabilities


def test_guarded_oracle_charges_once_per_input_and_hides_nothing_from_the_harness():
    ad = DetectorTarget(classifier(), detector(), 0.02, adaptive=True)
    x = torch.tensor([[0.6, 0.6], [0.5, 0.6]])
    oracle = ad.attack_oracle(2, Goal(torch.zeros(2, dtype=torch.long), False), budget=3)
    assert isinstance(oracle, GuardedOracle)
    assert oracle.predict(x).tolist() == [0, 1]  # the attacker sees the rejection as "not fooled"
    assert oracle.predict(x, exact=True).tolist() == [1, 1]  # the harness sees the classifier's own answer
    assert oracle.used.tolist() == [2, 2]
    z = oracle.forward(x)
    assert z.argmax(1).tolist() == [0, 1] and oracle.used.tolist() == [3, 3]
    assert torch.isnan(oracle.scores(x)).all()  # out of budget: no answer, no detector call either
    assert type(DetectorTarget(classifier(), detector(), 0.0).attack_oracle(2, None)) is Oracle


def test_without_detector_gradients_the_adaptive_view_is_a_black_box():
    ad = DetectorTarget(classifier(), ScoresOnly(detector()), 0.02, adaptive=True)
    assert ad.capabilities == Capability.LABELS | Capability.SCORES
    na = DetectorTarget(classifier(), ScoresOnly(detector()), 0.02, adaptive=False)
    assert Capability.GRADIENTS in na.capabilities  # the unaware attacker only needs the classifier
    battery = Battery("t", 1, [Entry("nes", "pgd-nes", {"steps": 20, "samples": 10})])
    res = evaluate(ad, points(2), [LINF], battery).results[0]
    assert res.robust_accuracy == 0.0  # NES, seeing the rejection in the scores, finds the accepted region
    res = evaluate(na, points(2), [LINF], battery).results[0]
    assert res.robust_accuracy == 1.0 and res.attacks[0].detected == 2  # unaware of the detector, it is caught


def _entry(target: str, ra: float, adaptive: bool, detected: int = 5):
    """A guarded result as add_findings reads it: robust accuracy, detector summary, findings."""
    from types import SimpleNamespace

    return SimpleNamespace(target=target, threat=SimpleNamespace(name="linf:0.1"), robust_accuracy=ra, findings=[],
                           detector={"classifier": "c", "detector": "d", "adaptive": adaptive, "detected": detected,
                                     "fooled_classifier": 10})


def _findings(*results) -> list[dict]:
    from types import SimpleNamespace

    add_findings([SimpleNamespace(results=list(results))])
    return results[1].findings


def test_adaptive_attack_that_does_not_lower_robust_accuracy_is_suspect():
    (f,) = _findings(_entry("c+d (non-adaptive)", 0.5, False), _entry("c+d (adaptive)", 0.5, True))
    assert f["check"] == "adaptive-attack" and not f["passed"] and "suspect" in f["message"]
    assert _findings(_entry("c+d (non-adaptive)", 0.5, False), _entry("c+d (adaptive)", 0.3, True))[0]["passed"]
    # nothing was flagged: nothing for an adaptive attack to win back
    assert _findings(_entry("c+d (non-adaptive)", 0.5, False, detected=0), _entry("c+d (adaptive)", 0.5, True))[0]["passed"]


TINY = """
from torch import nn

def Net(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))

def Det():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny digits classifier and a detector trained for it by `robust train --detector` (a few seconds)."""
    from robustbench_cli.training import train as lib

    d = tmp_path_factory.mktemp("det")
    (d / "tiny.py").write_text(TINY)
    net, det = f"{d / 'tiny.py'}:Net", f"{d / 'tiny.py'}:Det"
    common = {"data": DataSpec("digits", n=600), "threat": "linf:0.1", "steps": 5, "batch_size": 32, "lr": 1e-2,
              "check_steps": 5, "check_n": 100}
    lib.save(lib.train(lib.TrainConfig(model=net, out=str(d / "clf.pt"), mode="standard", epochs=6, **common)),
             d / "clf.pt")
    lib.save(lib.train(lib.TrainConfig(model=det, out=str(d / "det.pt"), detector_for=net,
                                       classifier_weights=str(d / "clf.pt"), epochs=4, **common)), d / "det.pt")
    return d, net, det


def test_scan_with_detector_reports_rejection_detection_and_adaptive_accuracy(run_cli, trained, tmp_path):
    from jsonschema import validate

    from robustbench_cli.reports.model import report_schema

    d, net, det = trained
    out = tmp_path / "r.json"
    res = run_cli("scan", net, "--weights", d / "clf.pt", "--data", "digits", "--offset", "1600", "--n", "100",
                  "--eps", "0.1", "--preset", "quick", "--detector", det, "--detector-weights", d / "det.pt",
                  "--detector-fpr", "0.05", "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(out.read_text())
    validate(rep, report_schema())
    plain, na, ad = rep["results"]
    assert "detector" not in plain and na["detector"]["adaptive"] is False and ad["detector"]["adaptive"] is True
    assert na["detector"]["clean_rejection_rate"] == 0.05 == na["detector"]["calibration_fpr"]  # calibrated here
    assert na["detector"]["fooled_classifier"] >= na["detector"]["detected"] > 0
    assert sum(s == -1 for s in na["samples"]["clean_pred"]) == 5
    assert any(a.get("detected") is not None for a in na["attacks"])
    assert [f["check"] for f in ad["diagnostics"]].count("adaptive-attack") == 1
    assert na["robust_accuracy"] >= plain["robust_accuracy"] - 0.05  # at most the rejected clean inputs lost
    assert "rejects 5.0% of clean inputs" in res.stdout


@pytest.mark.parametrize("args,words", [
    (["--detector-fpr", "0.1"], ["--detector"]),
    (["--detector", "DET", "--detector-fpr", "1.5"], ["--detector-fpr"]),
    (["--detector", "DET", "--detector-fpr", "0.1", "--detector-threshold", "0"], ["--detector-threshold"]),
    (["--detector", "NET"], ["detector"]),  # a 10-class classifier is no detector
])
def test_detector_options_bad_input_is_one_clear_line(run_cli, trained, tmp_path, args, words):
    d, net, det = trained
    args = [{"DET": det, "NET": net}.get(a, a) for a in args]
    res = run_cli("scan", net, "--weights", d / "clf.pt", "--data", "digits", "--n", "20", "--eps", "0.1",
                  "--preset", "quick", "-o", tmp_path / "r.json", *args)
    assert "Traceback" not in (res.stdout or "") + (res.stderr or "")
    assert res.exit_code == 2, res.stderr
    msg = res.stderr.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith("error:"), msg
    for w in words:
        assert w.lower() in msg[0].lower()
