"""Named, versioned batteries of attacks, and the harness that runs them in cascade and verifies every success.

The cascade (as in AutoAttack): each attack sees only the samples still robust after the attacks before it.
The harness, not the attack, decides success: it projects each candidate onto the epsilon ball and the input
box, asks the target again (a counted query), and records a success only when the target's answer meets the
goal. A robust accuracy is the fraction of samples no attack could break this way: an upper bound on the truth.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from robustbench_cli import diagnostics
from robustbench_cli.attacks import Attack, Goal, create
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.data import EvalSet
from robustbench_cli.errors import DataError, TargetError, UserError
from robustbench_cli.results import AttackOutcome, Evaluation, ThreatResult
from robustbench_cli.targets.base import Capability, Oracle, Target
from robustbench_cli.threat_model import ThreatModel


# When an entry runs: always, only on targets without gradients (a query attack adds nothing where exact gradients
# are available), or only on label-only targets (a decision-based attack adds nothing where scores are available).
WHEN = {
    None: None,
    "no-gradients": "white-box target: the gradient attacks cover it (name it in --attacks to run it anyway)",
    "labels-only": "the target returns scores: the score-based attacks cover it (name it in --attacks to run it anyway)",
}


@dataclass
class Entry:
    label: str
    attack: str
    params: dict = field(default_factory=dict)
    when: str | None = None  # a key of WHEN
    independent: bool = False  # runs on every clean-correct sample after the cascade (the noise yardstick)

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise ValueError(f"entry {self.label}: when must be one of {list(WHEN)}")

    def build(self) -> Attack:
        return create(self.attack, **self.params)

    def condition_fails(self, capabilities: Capability) -> str | None:
        if self.when == "no-gradients" and Capability.GRADIENTS in capabilities:
            return WHEN[self.when]
        if self.when == "labels-only" and Capability.SCORES in capabilities:
            return WHEN[self.when]
        return None


@dataclass
class Battery:
    name: str
    version: int
    entries: list[Entry]

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def config(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "attacks": [{"label": e.label, "attack": e.attack, "when": e.when, "independent": e.independent,
                         **e.build().config()} for e in self.entries],
        }

    def applicable_to(self, target: Target, threat: ThreatModel, dim: int | None = None
                      ) -> tuple[list[tuple[Entry, Attack]], list[tuple[Entry, Attack, str]]]:
        """Split the battery into attacks that can run on ``target`` and attacks skipped, with the reason."""
        runnable, skipped = [], []
        for e in self.entries:
            attack = e.build()
            reason = attack.unsupported_reason(target.capabilities, threat, dim) or e.condition_fails(target.capabilities)
            (skipped.append((e, attack, reason)) if reason else runnable.append((e, attack)))
        return runnable, skipped


# The black-box cascade: Square's random search first (on the embedded CNN at Linf 0.2 it alone reached the same
# robust accuracy as NES-PGD followed by Square, with 196 instead of 541 queries per sample), then NES-PGD for what
# it left (a gradient estimate searches differently), then HopSkipJump when the target gives labels only; then the
# noise yardstick. In `default` the query attacks run only where gradients are missing; the `blackbox` preset runs
# them on any target (a white-box model measured as a black box).
_BLACKBOX = [
    Entry("square", "square", {"max_queries": 5000}),
    Entry("pgd-nes", "pgd-nes", {"steps": 20, "samples": 10}),
    Entry("hopskipjump", "hopskipjump", {"max_queries": 5000}, when="labels-only"),
]
_NOISE = Entry("noise", "noise", {"draws": 20}, independent=True)

# Presets: change an entry and you must bump the version, so that numbers stay comparable by name.
PRESETS: dict[str, Battery] = {
    b.name: b
    for b in [
        Battery("quick", 2, [
            Entry("fgsm", "fgsm"),
            Entry("pgd", "pgd", {"steps": 10}),
            Entry("square", "square", {"max_queries": 500}, when="no-gradients"),
            Entry("pgd-nes", "pgd-nes", {"steps": 10, "samples": 10}, when="no-gradients"),
            Entry("hopskipjump", "hopskipjump", {"max_queries": 500}, when="labels-only"),
            Entry("noise", "noise", {"draws": 10}, independent=True),
        ]),
        Battery("default", 2, [
            Entry("fgsm", "fgsm"),
            Entry("pgd", "pgd", {"steps": 40}),
            Entry("pgd-margin", "pgd", {"steps": 40, "loss": "margin"}),
            *[dataclasses.replace(e, when=e.when or "no-gradients") for e in _BLACKBOX],
            _NOISE,
        ]),
        Battery("blackbox", 1, [*_BLACKBOX, _NOISE]),
    ]
}


def get_battery(preset: str, attacks: list[str] | None = None) -> Battery:
    """A preset, or an ad-hoc battery from attack names (``--attacks fgsm,pgd``) with their defaults."""
    if attacks:
        from robustbench_cli.attacks import REGISTRY

        # a baseline named in --attacks still runs as the yardstick: on every clean-correct sample, after the cascade
        entries = [Entry(a, a, independent=a in REGISTRY and REGISTRY[a].family == "baseline") for a in attacks]
        for e in entries:
            e.build()  # unknown names fail here, before any work
        return Battery("custom", 1, entries)
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    return PRESETS[preset]


# ------------------------------------------------------------------------------------------------
def check_compatible(target: Target, data: EvalSet) -> None:
    """Refuse before any attack runs when the data cannot be fed to the target or its labels do not fit."""
    if not target.accepts(data.sample_shape):
        raise DataError(
            f"data {data.name} has inputs of shape {'x'.join(map(str, data.sample_shape))} "
            f"but the model {target.name} takes {target.expected_shape_text()}"
        )
    preprocess = getattr(getattr(target, "inner", target), "preprocess", None)  # --mean/--std of a PyTorch target
    if preprocess is not None and len(data.sample_shape) == 3:
        preprocess.check_channels(data.sample_shape[0])
    if target.num_classes is None:
        probe = torch.as_tensor(data.x[:1]).to(target.device)
        try:
            target.num_classes = int(target.scores(probe).shape[1])
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[0]
            raise DataError(f"the model {target.name} rejects inputs of shape {tuple(data.x.shape[1:])}: {msg}") from None
    if len(data) and int(data.y.max()) >= target.num_classes:
        raise DataError(
            f"data {data.name} has label {int(data.y.max())} but the model has {target.num_classes} classes (0..{target.num_classes - 1})"
        )


def choose_goal(spec: str | None, labels: np.ndarray, clean_scores: torch.Tensor, k: int, seed: int, ids) -> tuple[np.ndarray, np.ndarray]:
    """Goal classes and eligibility: untargeted leaves the label; targeted reaches random / least-likely / class k."""
    if spec is None:
        return labels.copy(), np.ones(len(labels), dtype=bool)
    if spec == "random":
        offs = SampleRng(seed, "target-class", ids).integers(k - 1).numpy()
        return (labels + 1 + offs) % k, np.ones(len(labels), dtype=bool)
    if spec in ("least-likely", "ll"):
        return clean_scores.argmin(dim=1).cpu().numpy().astype(np.int64), np.ones(len(labels), dtype=bool)
    try:
        cls = int(spec)
    except ValueError:
        raise UserError(f"--targeted must be random, least-likely or a class index, got {spec!r}") from None
    if not 0 <= cls < k:
        raise UserError(f"--targeted class {cls} is outside the model's classes 0..{k - 1}")
    # samples of the target class itself have nothing to reach: they are left out of n
    return np.full(len(labels), cls, dtype=np.int64), labels != cls


Progress = Callable[[str, int, int], None]


def _verify(oracle: Oracle, target: Target, threat: ThreatModel, cand: torch.Tensor, x0: torch.Tensor,
            goal: Goal, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project candidates into the threat model, re-query the target, and judge them. Never trust the attack."""
    cand = cand.detach()
    cand = torch.where(torch.isfinite(cand), cand, x0)
    cand = threat.project(cand.to(x0.dtype), x0, target.bounds)
    inside = threat.contains(cand, x0, target.bounds)
    pred = oracle.predict(cand, rows, exact=True).to(x0.device)  # the model itself, never a faster stand-in
    success = goal.reached(pred) & inside
    return success, pred, cand


def _verify_beyond(oracle: Oracle, target: Target, threat: ThreatModel, raw: torch.Tensor, x0: torch.Tensor,
                   goal: Goal, hit: np.ndarray) -> np.ndarray:
    """A minimum-norm attack's candidates, kept in the input box but not pulled into the epsilon ball, re-queried
    on the model: their distance where they reach the goal (NaN elsewhere). Rows already broken inside epsilon, or
    whose candidate lies inside the ball (checked by :func:`_verify` already), cost nothing."""
    out = np.full(len(x0), np.nan)
    raw = raw.detach()
    raw = torch.where(torch.isfinite(raw), raw, x0).to(x0.dtype).clamp(*target.bounds)
    dist = threat.distance(raw, x0)
    todo = (~torch.as_tensor(hit, device=x0.device)) & (dist > threat.epsilon)
    todo &= (oracle.remaining() >= 1).to(x0.device)  # a row out of budget gets no answer, and so no verdict
    rows = todo.nonzero().squeeze(1)
    if len(rows):
        pred = oracle.predict(raw[rows], rows.cpu(), exact=True).to(x0.device)
        ok = goal.subset(rows).reached(pred)
        out[rows[ok].cpu().numpy()] = dist[rows[ok]].cpu().numpy()
    return out


def evaluate(
    target: Target,
    data: EvalSet,
    threats: list[ThreatModel],
    battery: Battery,
    *,
    seed: int = 0,
    batch_size: int = 256,
    targeted: str | None = None,
    queries: int | None = None,
    progress: Progress | None = None,
    keep_adversarials: bool = False,
) -> Evaluation:
    """Run the battery on every threat. ``keep_adversarials`` keeps each broken sample's verified candidate."""
    check_compatible(target, data)
    if batch_size <= 0:
        raise UserError(f"--batch-size must be > 0, got {batch_size}")
    if queries is not None and queries <= 0:
        raise UserError(f"--queries must be > 0, got {queries}")
    for threat in threats:
        threat.check_against_dim(int(np.prod(data.sample_shape)))
    device = target.device
    x_all = torch.as_tensor(data.x).to(device)
    labels = data.y
    t0 = time.perf_counter()
    clean_scores = target.scores(x_all) if len(x_all) else torch.zeros((0, target.num_classes))
    if not bool(torch.isfinite(clean_scores).all()):
        raise TargetError(f"the model {target.name} returns NaN or inf on clean inputs")
    target.detect_output_kind(clean_scores[: min(len(clean_scores), 512)])
    clean_pred = clean_scores.argmax(dim=1).cpu().numpy().astype(np.int64)
    clean_seconds = time.perf_counter() - t0

    out = Evaluation(target=target.describe(), results=[], clean_seconds=clean_seconds,
                     probes=diagnostics.probe(target, x_all, clean_scores, labels))
    for ti, threat in enumerate(threats):
        is_targeted = threat.targeted or targeted is not None
        spec = (targeted or "random") if is_targeted else None
        goal_np, eligible = choose_goal(spec, labels, clean_scores, target.num_classes, seed, data.ids)
        correct = (clean_pred == labels) & eligible
        if is_targeted:  # a sample already predicted as its target class has nothing to reach
            correct &= clean_pred != goal_np
        n = len(labels)
        res = ThreatResult(
            target=target.name, threat=threat, ids=data.ids.copy(), labels=labels.copy(), clean_pred=clean_pred,
            goal=goal_np, eligible=eligible, robust=correct.copy(), adv_pred=np.full(n, -1, dtype=np.int64),
            distance=np.full(n, np.nan), queries=np.zeros(n, dtype=np.int64), broken_by=[None] * n,
            queries_at_break=np.zeros(n, dtype=np.int64), min_distance=np.full(n, np.nan),
        )
        if keep_adversarials:
            res.adversarial = np.full(data.x.shape, np.nan, dtype=np.float32)
        goal_all = Goal(torch.as_tensor(goal_np, device=device), is_targeted)
        runnable, skipped = battery.applicable_to(target, threat, int(np.prod(data.sample_shape)))
        # the cascade first; independent entries (the noise yardstick) then see every clean-correct sample
        runnable = [r for r in runnable if not r[0].independent] + [r for r in runnable if r[0].independent]
        tt0 = time.perf_counter()
        for entry, attack in runnable:
            todo = np.flatnonzero(correct if entry.independent else res.robust)
            outcome = AttackOutcome(entry.label, attack.name, attack.family, attack.config(), attempted=len(todo),
                                    queries=np.zeros(n, dtype=np.int64), independent=entry.independent,
                                    attempted_mask=np.zeros(n, dtype=bool), broken_mask=np.zeros(n, dtype=bool),
                                    minimum_norm=attack.minimum_norm)
            outcome.attempted_mask[todo] = True
            a0 = time.perf_counter()
            done = 0
            for b in range(0, len(todo), batch_size):
                idx = todo[b : b + batch_size]
                idx_t = torch.as_tensor(idx, device=device)
                x0 = x_all[idx_t]
                goal = goal_all.subset(idx_t)
                # one query of each sample's budget is kept back for the harness's verification (two for a
                # minimum-norm attack, whose candidate beyond epsilon is verified as it is, too)
                held = 2 if attack.minimum_norm else 1
                oracle = Oracle(target, len(idx), budget=None if queries is None else max(queries - held, 0))
                rng = SampleRng(seed, f"{threat.name}/{entry.label}", data.ids[idx], device)
                cand = attack.run(oracle, x0, goal, threat, rng)
                if queries is not None:
                    oracle.budget = queries
                raw = cand
                success, pred, cand = _verify(oracle, target, threat, cand, x0, goal, torch.arange(len(idx)))
                hit = success.cpu().numpy()
                dist = threat.distance(cand, x0).cpu().numpy()
                found = np.where(hit, dist, np.nan)
                if attack.minimum_norm:
                    found = np.fmin(found, _verify_beyond(oracle, target, threat, raw, x0, goal, hit))
                res.min_distance[idx] = np.fmin(res.min_distance[idx], found)
                used = oracle.used.numpy()
                outcome.broken_mask[idx[hit]] = True
                new = hit & res.robust[idx]  # first verified break of the sample
                broke = idx[new]
                res.robust[broke] = False
                res.adv_pred[broke] = pred.cpu().numpy()[new]
                res.distance[broke] = dist[new]
                res.queries_at_break[broke] = res.queries[broke] + used[new]
                for i in broke:
                    res.broken_by[i] = entry.label
                if res.adversarial is not None:
                    res.adversarial[broke] = cand.detach().cpu().numpy()[new]
                outcome.broken += int(hit.sum())
                outcome.queries[idx] = used
                done += len(idx)
                if progress:
                    progress(f"{target.name} {threat.name} {entry.label}", done, len(todo))
            outcome.seconds = time.perf_counter() - a0
            res.queries += outcome.queries
            outcome.robust_after = res.robust_accuracy
            res.attacks.append(outcome)
            if progress and not len(todo):
                progress(f"{target.name} {threat.name} {entry.label}", 0, 0)
        for entry, attack, reason in skipped:
            res.attacks.append(AttackOutcome(entry.label, attack.name, attack.family, attack.config(), skipped=reason))
        order = {e.label: i for i, e in enumerate(battery.entries)}
        res.attacks.sort(key=lambda a: order.get(a.label, len(order)))  # battery order: same columns for every target
        res.seconds = time.perf_counter() - tt0
        out.results.append(res)
    return out
