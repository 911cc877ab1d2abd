"""Per-sample results: of one attack within a cascade, and of a whole evaluation of one target."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robustbench_cli.core.threat_model import ThreatModel


@dataclass
class AttackOutcome:
    label: str  # unique within the battery, e.g. "pgd-margin"
    name: str  # registry name, e.g. "pgd"
    family: str
    config: dict
    skipped: str | None = None  # the reason, when the attack could not run on this target/threat
    attempted: int = 0  # samples still robust when the attack started
    broken: int = 0  # of those, how many it broke (verified by the harness)
    seconds: float = 0.0
    queries: np.ndarray | None = None  # per sample of the evaluation, 0 where not attempted
    robust_after: float | None = None  # robust accuracy after this attack in the cascade
    independent: bool = False  # ran on every clean-correct sample, not only on those the cascade left robust
    attempted_mask: np.ndarray | None = None  # bool per sample of the evaluation
    broken_mask: np.ndarray | None = None  # bool: samples this attack broke (verified), whether or not already broken
    minimum_norm: bool = False  # a minimum-norm attack: its candidates beyond epsilon were verified too
    done_mask: np.ndarray | None = None  # bool: samples whose batch this attack finished (all attempted, unless stopped)
    detected: int | None = None  # guarded targets: candidates that fooled the classifier but the detector flagged


@dataclass
class ThreatResult:
    target: str
    threat: ThreatModel
    ids: np.ndarray
    labels: np.ndarray
    clean_pred: np.ndarray
    goal: np.ndarray  # the class to leave (untargeted) or to reach (targeted)
    eligible: np.ndarray  # samples the threat applies to (targeted at a fixed class excludes that class)
    robust: np.ndarray  # bool: correct and never verified broken
    adv_pred: np.ndarray  # int, -1 where not broken
    distance: np.ndarray  # float, NaN where not broken
    queries: np.ndarray  # int: queries spent on the sample by all attacks, verification included
    broken_by: list  # attack label or None
    queries_at_break: np.ndarray | None = None  # int: queries spent on the sample up to its first verified break
    attacks: list[AttackOutcome] = field(default_factory=list)
    seconds: float = 0.0
    # float32 like the data, the verified candidate of each sample's first break, NaN elsewhere; only kept when
    # evaluate(..., keep_adversarials=True) is asked (saved examples, the HTML report's example grid)
    adversarial: np.ndarray | None = None
    # float: the smallest verified adversarial distance per sample, NaN where none was found. Breaks inside epsilon
    # count, and so do the candidates of minimum-norm attacks beyond it (each re-checked on the model like any
    # other): robust accuracy at any epsilon' is at most the share of samples with a larger distance.
    min_distance: np.ndarray | None = None
    detector: dict | None = None  # guarded targets (targets/detector.py): threshold, clean rejection, detection rate
    # bool per sample: proven robust by a sound certificate (certify.py), so no later attack of the cascade tried it;
    # None when no certificate ran. ``certificate``: how it ran (method, attempted, certified, seconds, or why not)
    certified: np.ndarray | None = None
    certificate: dict | None = None
    # float per sample: the highest margin among the candidates the harness verified (best other class minus the
    # goal class on the model's own scores, reversed when targeted; > 0 reached the goal), -inf before any attack.
    # Entries with ``closest`` spend their restarts on the undecided samples where it is highest
    best_margin: np.ndarray | None = None
    # int per sample: candidates the model answered with NaN or infinite scores (never counted as a break)
    nonfinite: np.ndarray | None = None
    # --precision bf16/fp16: the attacks ran in reduced precision; int per sample: candidates that reached the goal
    # in reduced precision but not on the model in float32 (never counted as a break: the harness checks in fp32)
    precision: str | None = None
    lowprec: np.ndarray | None = None
    # int per sample: the row of its first break's candidate in the resume state's candidate file (-1: none); kept
    # only while a state is, so that a resumed scan re-verifies every break it restores
    cand_row: np.ndarray | None = None
    # the diagnostic checks of this result (evaluation/diagnostics.py), each {"check", "passed", "message", ...}
    findings: list[dict] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.eligible.sum())

    @property
    def clean_correct(self) -> np.ndarray:
        return (self.clean_pred == self.labels) & self.eligible

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.sum() / max(self.n, 1))

    @property
    def robust_accuracy(self) -> float:
        return float((self.robust & self.eligible).sum() / max(self.n, 1))

    @property
    def certified_accuracy(self) -> float | None:
        """Share of the samples a certificate proved robust: a lower bound on the true robust accuracy."""
        if self.certified is None or self.certificate is None or not self.certificate.get("method"):
            return None
        return float((self.certified & self.robust & self.eligible).sum() / max(self.n, 1))


@dataclass
class Evaluation:
    target: dict  # the target's describe()
    results: list[ThreatResult]
    clean_seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)
    probes: dict = field(default_factory=dict)  # sanity probes of the target on clean inputs (diagnostics.probe)
    stopped: str | None = None  # why the evaluation stopped before its end ("interrupted", "time budget ..."), or None
    oom_retries: int = 0  # batches retried at half size after running out of memory
    reverified: int = 0  # breaks restored from a resume state and verified again on the model (one query each)
