"""A classifier guarded by a detector that rejects inputs it scores as adversarial (SafetyNet, Lu et al. 2017), and
how to attack both at once (Carlini & Wagner 2017, "Adversarial Examples Are Not Easily Detected: Bypassing Ten
Detection Methods").

The detector is any target (white-box or ONNX) whose outputs score "adversarial": one column (a logit or a
probability) or two (clean, adversarial), read as ``s = z_adv - z_clean``. An input is flagged when ``s > threshold``;
:func:`calibrate` picks the threshold that flags a given fraction of clean inputs (``--detector-fpr``).

An attack succeeds only if the input is misclassified *and* not flagged. The harness enforces it
(``battery._verify`` asks :meth:`DetectorTarget.rejects` for every candidate, as part of the same verification
query), and a clean input the detector rejects counts as answered wrongly (``clean_pred`` -1).

Two views for the attacker:

- non-adaptive (``adaptive=False``): the attacks see the classifier alone, as an attacker unaware of the detector;
  the candidates that fool the classifier but are flagged are counted per attack (``detected``).
- adaptive (``adaptive=True``): the attacks see both. Their oracle (:class:`GuardedOracle`) folds the detector into
  the classifier's logits, per sample and goal: with ``r = max_j z_j + (s - threshold)``, which beats every logit
  exactly when the input is flagged, the untargeted goal's own logit becomes ``max(z_y, r)`` and, for a targeted
  goal, every other logit ``max(z_j, r)``. The argmax of the folded logits meets the goal exactly when the
  classifier does and the detector does not flag, so every attack's loss (cross-entropy, margin, DLR) becomes a
  combined loss on both models, gradients flow through both for white-box targets, and black-box attacks see the
  rejection in the scores or labels they get (C&W's construction, with an additive instead of a multiplicative
  reject logit). Without gradients of both models, the adaptive view offers scores only (black-box attacks).
"""

from __future__ import annotations

import hashlib
import math
from typing import cast

import numpy as np
import torch

from robustbench_cli.core.errors import TargetError, UserError
from robustbench_cli.targets.base import Capability, Oracle, Target


def detector_margin(s: torch.Tensor) -> torch.Tensor:
    """The detector's "adversarial" score per row: the single output, or adversarial minus clean of two."""
    if s.dim() != 2 or s.shape[1] not in (1, 2):
        raise TargetError(f"a detector must return 1 score (adversarial) or 2 (clean, adversarial) per input, "
                          f"got shape {tuple(s.shape)}")
    return s[:, 0] if s.shape[1] == 1 else s[:, 1] - s[:, 0]


def calibrate(scores: torch.Tensor | np.ndarray, fpr: float) -> float:
    """The threshold that flags ``floor(fpr * n)`` of these clean scores (``score > threshold``), ties aside."""
    if not 0 <= fpr < 1:
        raise UserError(f"--detector-fpr must be in [0, 1), got {fpr}")
    s = np.sort(np.asarray(torch.as_tensor(scores).detach().cpu().double()))[::-1]
    if not len(s):
        raise UserError("no clean inputs to calibrate the detector threshold on")
    if not np.isfinite(s).all():
        raise TargetError("the detector returns NaN or inf on clean inputs")
    return float(s[min(math.floor(fpr * len(s)), len(s) - 1)])


def fold(z: torch.Tensor, margin: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Logits whose argmax meets the goal exactly when ``z``'s does and ``margin`` (score - threshold) is not > 0."""
    r = z.max(dim=1).values + margin
    if not targeted:
        own = z.gather(1, labels[:, None]).squeeze(1)
        return z.scatter(1, labels[:, None], torch.maximum(own, r)[:, None])
    mine = torch.nn.functional.one_hot(labels, z.shape[1]).bool()
    return torch.where(mine, z, torch.maximum(z, r[:, None]))


class DetectorTarget(Target):
    """``classifier`` guarded by ``detector`` at ``threshold``; the harness-facing scores are the classifier's."""

    kind = "detector"
    has_detector = True

    def __init__(self, classifier: Target, detector: Target, threshold: float, *, adaptive: bool = False,
                 details: dict | None = None):
        suffix = "adaptive" if adaptive else "non-adaptive"
        super().__init__(f"{classifier.name}+{detector.name} ({suffix})", batch_size=classifier.batch_size,
                         device=classifier.device)
        self.classifier, self.detector = classifier, detector
        self.threshold = float(threshold)
        self.adaptive = adaptive
        caps = classifier.capabilities
        if adaptive:
            # both models' gradients, or neither: the folded logits need the detector's too
            caps = caps & detector.capabilities
            if Capability.GRADIENTS not in caps:
                caps = caps & (Capability.LABELS | Capability.SCORES)
        self.capabilities = caps
        self.bounds = classifier.bounds
        self.input_shape, self.flat_dim = classifier.input_shape, classifier.flat_dim
        self.num_classes = classifier.num_classes
        self.sha256 = hashlib.sha256(f"{classifier.sha256}|{detector.sha256}|{self.threshold!r}".encode()).hexdigest()
        self.details = {**classifier.details, "classifier": classifier.name, "detector": detector.name,
                        "detector_sha256": detector.sha256, "threshold": self.threshold, "adaptive": adaptive,
                        **(details or {})}

    def bind(self, sample_shape, probe, data_name: str = "") -> None:
        self.classifier.bind(sample_shape, probe, data_name)
        self.num_classes = self.classifier.num_classes

    # the harness's view and the non-adaptive attacker's: the classifier
    def _scores_batch(self, x):
        return self.classifier.scores(x)

    def _fast_batch(self, x):
        return self.classifier.scores(x, fast=True)

    def forward(self, x):
        return self.classifier.forward(x)

    def as_logits(self, s):
        return self.classifier.as_logits(s)

    def detect_output_kind(self, s):
        self.output_kind = self.classifier.detect_output_kind(s)
        return self.output_kind

    # the detector
    def detector_scores(self, x: torch.Tensor) -> torch.Tensor:
        return detector_margin(self.detector.scores(x.to(self.detector.device))).to(x.device)

    def rejects(self, x: torch.Tensor) -> torch.Tensor:
        """Flagged as adversarial: the guarded model answers nothing (the attack failed)."""
        return self.detector_scores(x) > self.threshold

    def attack_oracle(self, n: int, goal, *, budget: int | None = None) -> Oracle:
        """The oracle the attacks get: the classifier alone, or (adaptive) the folded view of both models."""
        return GuardedOracle(self, n, goal, budget=budget) if self.adaptive else Oracle(self, n, budget=budget)


class GuardedOracle(Oracle):
    """Queries of the guarded model, folded with each row's goal (see the module docstring); counted as one each."""

    def __init__(self, target: DetectorTarget, n: int, goal, *, budget: int | None = None):
        super().__init__(target, n, budget=budget)
        self._labels, self._targeted = goal.labels, goal.targeted

    def _goal_labels(self, x: torch.Tensor, rows) -> torch.Tensor:
        r = torch.as_tensor(self._rows(x, rows), device=self._labels.device)
        return self._labels[r].to(x.device)

    def scores(self, x, rows=None, *, exact: bool = False):
        z = super().scores(x, rows, exact=exact)  # charged here, once; NaN rows are out of budget
        if exact:  # the harness: the classifier's own answer (it asks the detector itself)
            return z
        t = cast(DetectorTarget, self.target)
        z = t.as_logits(z)
        ok = torch.isfinite(z).all(dim=1)
        if bool(ok.any()):
            margin = t.detector_scores(x[ok.to(x.device)]).to(z.device) - t.threshold
            z[ok] = fold(z[ok], margin, self._goal_labels(x, rows)[ok.to(x.device)].to(z.device), self._targeted)
        return z

    def logits(self, x, rows=None):
        return self.scores(x, rows)  # already logit-like

    def forward(self, x, rows=None):
        if self.count_gradients:
            self._charge(self._rows(x, rows))
        t: DetectorTarget = self.target
        z = t.as_logits(t.classifier.forward(x))
        margin = detector_margin(t.detector.forward(x)) - t.threshold
        return fold(z, margin.to(z.device), self._goal_labels(x, rows).to(z.device), self._targeted)


def guard(classifier: Target, detector: Target, clean: torch.Tensor, *, fpr: float | None = 0.05,
          threshold: float | None = None, calibration: str = "the evaluated data") -> list[DetectorTarget]:
    """The non-adaptive and adaptive views of ``classifier`` guarded by ``detector``, with the threshold given or
    calibrated on the ``clean`` inputs for ``fpr``."""
    if threshold is None:
        assert fpr is not None, "calibrating a threshold needs an fpr"
        s = detector_margin(detector.scores(clean.to(detector.device)))
        threshold = calibrate(s, fpr)
        measured = int((s > threshold).sum()) / len(s)
        info = {"detector_fpr": fpr, "calibration": calibration, "calibration_n": len(clean),
                "calibration_fpr": measured}
    else:
        if not math.isfinite(threshold):
            raise UserError(f"--detector-threshold must be a finite number, got {threshold}")
        info = {"detector_fpr": None, "calibration": None}
    return [DetectorTarget(classifier, detector, threshold, adaptive=a, details=info) for a in (False, True)]
