"""A scan of a classifier guarded by a detector (``--detector``): the classifier alone, then guarded against
non-adaptive and adaptive attacks (targets/detector.py), each result's detector summary, and the ``adaptive-attack``
check that the adaptive attacks did better than the non-adaptive ones."""

from __future__ import annotations

from dataclasses import replace

import torch

from robustbench_cli.core.data import DataSpec, EvalSet, load_eval_set
from robustbench_cli.core.errors import DataError, UserError
from robustbench_cli.core.results import Evaluation
from robustbench_cli.evaluation.config import DetectorSpec
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.targets.base import Target
from robustbench_cli.targets.detector import DetectorTarget, guard


def guard_targets(spec: DetectorSpec, targets: list[Target], like: TargetSpec, data: EvalSet,
                  data_spec: DataSpec) -> list[Target]:
    """The classifier alone, then guarded (non-adaptive, adaptive). The detector loads on the classifier's device,
    batch size and trust (``like``); the calibration data is read like the scanned data (``data_spec``)."""
    if len(targets) != 1:
        raise UserError(f"--detector guards one model; {len(targets)} were given")
    clf = targets[0]
    name = f"detector:{spec.target.model}" if spec.target.display_name == clf.name else spec.target.name
    det = load_target(replace(spec.target, name=name, batch_size=like.batch_size, device=like.device,
                              trust_checkpoint=like.trust_checkpoint))
    if not det.accepts(data.sample_shape):
        raise DataError(f"the detector {det.name} takes {det.expected_shape_text()}, but the data has inputs of shape "
                        f"{'x'.join(map(str, data.sample_shape))}")
    if spec.calibration:
        cal = load_eval_set(spec.calibration, layout=data_spec.layout, scale=data_spec.scale)
        if cal.sample_shape != data.sample_shape:
            raise DataError(f"--detector-calibration {cal.name} has inputs of shape "
                            f"{'x'.join(map(str, cal.sample_shape))}, the scan's data "
                            f"{'x'.join(map(str, data.sample_shape))}")
        where = f"{cal.name} (sha256 {cal.sha256[:12]})"
    else:
        cal, where = data, "the evaluated data"
    fpr = 0.05 if spec.fpr is None and spec.threshold is None else spec.fpr
    return [clf, *guard(clf, det, torch.as_tensor(cal.x), fpr=fpr, threshold=spec.threshold, calibration=where)]


def annotate(target: Target, evaluation: Evaluation) -> None:
    """Each result of a guarded target gets its ``detector`` summary (the report's ``results[].detector``)."""
    if not isinstance(target, DetectorTarget):
        return
    for r in evaluation.results:
        elig = r.eligible
        cascade = [a for a in r.attacks if not a.independent and not a.skipped]
        detected = sum(a.detected or 0 for a in cascade)
        fooled = detected + sum(a.broken for a in cascade)
        r.detector = {
            "classifier": target.classifier.name, "detector": target.detector.name, "adaptive": target.adaptive,
            "threshold": target.threshold, "detector_fpr": target.details.get("detector_fpr"),
            "calibration": target.details.get("calibration"), "calibration_fpr": target.details.get("calibration_fpr"),
            "clean_rejection_rate": float(((r.clean_pred == -1) & elig).sum() / max(int(elig.sum()), 1)),
            "fooled_classifier": int(fooled), "detected": int(detected),
            "detection_rate": float(detected / fooled) if fooled else None,
        }


def add_findings(evaluations: list[Evaluation]) -> None:
    """The ``adaptive-attack`` check: attacks that target classifier and detector together must do better than
    attacks unaware of the detector, unless there was nothing to beat. Otherwise the adaptive evaluation is suspect."""
    pairs: dict[tuple, dict] = {}
    for e in evaluations:
        for r in e.results:
            d = r.detector
            if d:
                pairs.setdefault((d["classifier"], d["detector"], r.threat.name), {})[d["adaptive"]] = r
    for pair in pairs.values():
        if True not in pair or False not in pair:
            continue
        na, ad = pair[False], pair[True]
        ra_na, ra_ad = na.robust_accuracy, ad.robust_accuracy
        nothing = na.detector["detected"] == 0 or ra_na == 0
        ok = ra_ad < ra_na or nothing
        msg = (f"robust accuracy {100 * ra_na:.1f}% under non-adaptive attacks (the detector flagged "
               f"{na.detector['detected']} of their {na.detector['fooled_classifier']} candidates that fooled the "
               f"classifier), {100 * ra_ad:.1f}% under adaptive attacks on classifier and detector together")
        if not ok:
            msg += (": the adaptive attacks did not lower it, so this evaluation is suspect (raise steps or restarts, "
                    "or the detector masks its gradients: try --access scores)")
        elif nothing:
            msg += ": the non-adaptive attacks left nothing for an adaptive attack to win back"
        ad.findings.append({"check": "adaptive-attack", "passed": ok, "message": msg})
