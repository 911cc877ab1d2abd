"""Named, versioned batteries of attacks, and the harness that runs them in cascade and verifies every success.

The cascade (as in AutoAttack): each attack sees only the samples still robust after the attacks before it.
The harness, not the attack, decides success: it projects each candidate onto the epsilon ball and the input
box, asks the target again (a counted query), and records a success only when the target's answer meets the
goal. A robust accuracy is the fraction of samples no attack could break this way: an upper bound on the truth.
The same answer gives each candidate's margin (how close it came to the goal); the harness keeps each sample's
highest, and entries marked ``closest`` spend their extra restarts on the undecided samples where it is highest.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robustbench_cli.evaluation import certify as certify_mod
from robustbench_cli.evaluation import diagnostics
from robustbench_cli.attacks import Attack, Goal, create
from robustbench_cli.attacks.losses import margin
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import DataError, TargetError, UserError
from robustbench_cli.core.results import AttackOutcome, Evaluation, ThreatResult
from robustbench_cli.targets.base import Capability, Oracle, Target
from robustbench_cli.core.threat_model import ThreatModel


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
    # runs only where certificates ran, on the samples left undecided (neither broken nor certified), and only when
    # its work there (undecided x restarts) is at most the work the certificates spared (certified samples)
    undecided: bool = False
    # > 0: runs only on this share (rounded up) of the samples still undecided, those whose verified candidates came
    # closest to the goal (ThreatResult.best_margin), where more random restarts are most likely to pay
    closest: float = 0.0

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise ValueError(f"entry {self.label}: when must be one of {list(WHEN)}")
        if not 0.0 <= self.closest <= 1.0:
            raise ValueError(f"entry {self.label}: closest must be a share in [0, 1]")

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
    # after the first attack of the cascade, prove what can be proved (certify.py) and attack only the rest; the
    # numbers do not change (a certified sample cannot be broken), the time does. --certify/--no-certify override it
    certify: bool = False

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def config(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "attacks": [{"label": e.label, "attack": e.attack, "when": e.when, "independent": e.independent,
                         **({"closest": e.closest} if e.closest else {}), **e.build().config()} for e in self.entries],
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
        # AutoAttack's standard version in strength (APGD-CE, APGD-T over 9 targets, FAB-T, Square 5,000), with FMN
        # as the minimum-norm attack, stopping once inside epsilon: in a cascade only breaks inside the ball count.
        # Square runs on every target with AutoAttack's p_init 0.8 (version 2; version 1 used 0.3, the Linf default
        # tuned for queries per success); black boxes also get NES-PGD, label-only ones HopSkipJump. Version 2 adds
        # certificates after APGD-CE, which spare the attacks the samples they prove, and spends part of that
        # saving on the samples left undecided: three more Square restarts, each from its own random stream.
        # Version 3 ends the cascade with more random restarts where they are likeliest to pay: APGD-CE x10 on the
        # 3% of undecided samples whose verified candidates came closest to breaking, Square x3 on the closest 1%
        # (on the PGD-trained LeNet5 at 0.3 the images only AutoAttack broke were among them; README).
        Battery("standard", 3, [
            Entry("apgd-ce", "apgd-ce", {"steps": 100}),
            Entry("apgd-t", "apgd-t", {"steps": 100, "targets": 9}),
            Entry("fmn", "fmn", {"steps": 100, "stop_at_epsilon": True}),
            Entry("square", "square", {"max_queries": 5000, "p_init": 0.8}),
            Entry("square-undecided", "square", {"max_queries": 5000, "p_init": 0.8, "restarts": 3}, undecided=True),
            Entry("apgd-ce-closest", "apgd-ce", {"steps": 100, "restarts": 10}, closest=0.03),
            Entry("square-closest", "square", {"max_queries": 5000, "p_init": 0.8, "restarts": 3}, closest=0.01),
            *[dataclasses.replace(e, when=e.when or "no-gradients") for e in _BLACKBOX[1:]],
            _NOISE,
        ], certify=True),
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


def takes_eot(attack: str) -> bool:
    """Whether an attack averages its gradients over draws of a randomised model (an ``eot`` parameter)."""
    from robustbench_cli.attacks import REGISTRY

    return attack in REGISTRY and "eot" in inspect.signature(REGISTRY[attack].__init__).parameters


def with_eot(battery: Battery, eot: int) -> Battery:
    """``--eot N``: the battery with ``eot=N`` on every entry whose attack takes it (the gradient attacks).

    The name and version stay; each changed attack's config records its ``eot``, so reports with and without EOT
    are not comparable. An error when no entry takes it: the option would silently do nothing."""
    if eot < 1:
        raise UserError(f"--eot must be >= 1, got {eot}")
    if eot == 1:
        return battery
    if not any(takes_eot(e.attack) for e in battery.entries):
        from robustbench_cli.attacks import REGISTRY

        able = sorted(a for a in REGISTRY if takes_eot(a))
        raise UserError(f"--eot {eot}: none of the battery's attacks ({', '.join(e.label for e in battery.entries)}) "
                        f"averages gradients over draws; EOT applies to {', '.join(able)}")
    entries = [dataclasses.replace(e, params={**e.params, "eot": eot}) if takes_eot(e.attack) else e
               for e in battery.entries]
    return dataclasses.replace(battery, entries=entries)


# Families whose independent entries run before the cascade: they need no target query but the verification.
UPFRONT = ("transfer", "generative")
DEFAULT_TRANSFER = "mi-di-fgsm"  # the transfer attack --surrogate adds when the battery names none


def with_transfer(battery: Battery, surrogates: list | None = None, generators: list[str] | None = None) -> Battery:
    """``--surrogate`` / ``--generator``: the battery with its transfer and generator entries up front.

    Each transfer attack the battery names (``mi-di-fgsm`` when it names none) becomes one entry per surrogate and,
    with several surrogates, one more for their ensemble; each generator file one ``generator`` entry. They are
    independent (each attacks every clean-correct sample, so their success rates form the transfer matrix) and run
    before the cascade. The name and version stay; the attacks' configs name the surrogates and files."""
    from robustbench_cli.attacks import REGISTRY
    from robustbench_cli.attacks.transfer import surrogate_name

    surrogates, generators = list(surrogates or []), list(generators or [])
    family = {e.label: REGISTRY[e.attack].family if e.attack in REGISTRY else None for e in battery.entries}
    named = [e for e in battery.entries if family[e.label] == "transfer"]
    named_gen = [e for e in battery.entries if family[e.label] == "generative"]
    if named and not surrogates:
        raise UserError(f"{', '.join(e.label for e in named)}: transfer attacks need a surrogate model; pass --surrogate SPEC "
                        "(repeatable; SPEC@WEIGHTS for a PyTorch architecture with its state dict)")
    if named_gen and not generators:
        raise UserError("the generator attack needs a trained generator: pass --generator FILE "
                        "(from `robust generator train`)")
    if not surrogates and not generators:
        return battery
    kinds = named or ([Entry(DEFAULT_TRANSFER, DEFAULT_TRANSFER)] if surrogates else [])
    names = [surrogate_name(s, s.details.get("weights")) for s in surrogates]
    taken: set[str] = set()

    def unique(label: str) -> str:
        out, k = label, 2
        while out in taken:
            out, k = f"{label}-{k}", k + 1
        taken.add(out)
        return out

    upfront = []
    for e in kinds:
        groups = [([s], n) for s, n in zip(surrogates, names)] + ([(surrogates, "ensemble")] if len(surrogates) > 1 else [])
        for group, name in groups:
            upfront.append(Entry(unique(f"{e.label}:{name}"), e.attack, {**e.params, "surrogates": group},
                                 independent=True))
    for g in generators:
        upfront.append(Entry(unique(f"generator:{Path(g).stem}"), "generator", {"generator": str(g)}, independent=True))
    rest = [e for e in battery.entries if family[e.label] not in ("transfer", "generative")]
    return dataclasses.replace(battery, entries=[*upfront, *rest])


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


_CTRL_C = {"held": False, "pending": False}


def _on_ctrl_c(signum, frame) -> None:
    """SIGINT: Python's own behaviour (KeyboardInterrupt) unless the harness is recording a batch; then it is noted
    and raised when the recording is done. Python runs signal handlers in the main thread whichever thread the
    signal reached, so this holds where a signal mask would not (another thread may take a masked signal)."""
    if _CTRL_C["held"]:
        _CTRL_C["pending"] = True
        return
    raise KeyboardInterrupt


def _hold_ctrl_c(hold: bool) -> None:
    """Hold Ctrl-C while the harness records a batch, so that it stops the scan between batches or inside an attack,
    never half-way through the books (which would lose the target's evaluation). Letting go raises a held one."""
    if hold and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_ctrl_c)  # the same as the default whenever nothing is held
    _CTRL_C["held"] = hold
    if not hold and _CTRL_C["pending"]:
        _CTRL_C["pending"] = False
        raise KeyboardInterrupt


def _release_ctrl_c() -> bool:
    """Let Ctrl-C through again; True when one was held (taken as the stop)."""
    try:
        _hold_ctrl_c(False)
        return False
    except KeyboardInterrupt:
        return True


def _verify(oracle: Oracle, target: Target, threat: ThreatModel, cand: torch.Tensor, x0: torch.Tensor,
            goal: Goal, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project candidates into the threat model, re-query the target, and judge them. Never trust the attack.
    Also returns each candidate's margin on those scores (best other class minus the goal class, reversed when
    targeted; > 0 where the goal is reached, NaN scores give -inf): how close the attack came."""
    cand = cand.detach()
    cand = torch.where(torch.isfinite(cand), cand, x0)
    cand = threat.project(cand.to(x0.dtype), x0, target.bounds)
    inside = threat.contains(cand, x0, target.bounds)
    scores = oracle.scores(cand, rows, exact=True).to(x0.device)  # the model itself, never a faster stand-in
    pred = scores.argmax(dim=1)
    success = goal.reached(pred) & inside & _accepted(target, cand)
    closeness = margin(scores.float(), goal)
    closeness = torch.where(torch.isnan(closeness), torch.full_like(closeness, -math.inf), closeness)
    return success, pred, cand, closeness


def _accepted(target: Target, x: torch.Tensor) -> torch.Tensor:
    """False where a classifier guarded by a detector (targets/detector.py) rejects the input: no success there.
    The detector answers within the verification query already counted; plain targets accept everything."""
    rejects = getattr(target, "rejects", None)
    return torch.ones(len(x), dtype=torch.bool, device=x.device) if rejects is None else ~rejects(x).to(x.device)


def _attack_oracle(target: Target, n: int, goal: Goal, budget: int | None) -> Oracle:
    """The attacks' oracle; a guarded target's adaptive view folds its detector in, per sample and goal."""
    make = getattr(target, "attack_oracle", None)
    return Oracle(target, n, budget=budget) if make is None else make(n, goal, budget=budget)


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
        ok = goal.subset(rows).reached(pred) & _accepted(target, raw[rows])
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
    refuse_randomised: bool = False,
    state=None,
    deadline: float | None = None,
    certify: bool | None = None,
) -> Evaluation:
    """Run the battery on every threat. ``keep_adversarials`` keeps each broken sample's verified candidate.
    ``refuse_randomised``: stop, before any attack, when the probe finds that the same inputs give different
    scores (the scan sets it unless ``--eot`` is on: single-draw gradients of a randomised model mean nothing).
    ``state`` (a :class:`~robustbench_cli.evaluation.resume.ScanState`): restore the work it holds and record progress in it.
    ``deadline`` (``time.monotonic()``): start no new batch after it. A stop (the deadline, or Ctrl-C during an
    attack) leaves ``Evaluation.stopped`` set and every attack that did not finish marked, never a lost result.
    ``certify``: after the cascade's first attack, certify the samples it left (certify.py) and attack only the
    others; None takes the battery's setting. Results are the same either way; only the work differs."""
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
    if len(x_all):  # a clean input the detector of a guarded target rejects is answered -1: not correct
        clean_pred[~_accepted(target, x_all).cpu().numpy()] = -1
    clean_seconds = time.perf_counter() - t0

    out = Evaluation(target=target.describe(), results=[], clean_seconds=clean_seconds,
                     probes=diagnostics.probe(target, x_all, clean_scores, labels))
    if refuse_randomised and diagnostics.randomised(out.probes):
        raise TargetError(
            f"the model {target.name} gives different scores for the same inputs (max difference "
            f"{out.probes['repeat_max_abs_diff']:.2g}): a randomised model needs expectation over transformation; "
            "pass --eot N (e.g. --eot 20) to average each gradient over N draws")
    # "auto": the battery's own setting, which stops certifying where the bounds prove too little to pay;
    # True (--certify): every sample the first attack leaves; False (--no-certify): none
    mode = ("auto" if battery.certify else None) if certify is None else ("all" if certify else None)
    certifier: list = []  # built on first use: (Certifier or None, reason)
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
            certified=np.zeros(n, dtype=bool), best_margin=np.full(n, -np.inf),
        )
        if keep_adversarials:
            res.adversarial = np.full(data.x.shape, np.nan, dtype=np.float32)
        goal_all = Goal(torch.as_tensor(goal_np, device=device), is_targeted)
        runnable, skipped = battery.applicable_to(target, threat, int(np.prod(data.sample_shape)))
        # transfer and generator entries first, each on every clean-correct sample (one target query a sample, the
        # cheapest, and their rows form the transfer matrix); then the cascade; then the other independent entries
        # (the noise yardstick) on every clean-correct sample
        runnable.sort(key=lambda r: (0 if r[1].family in UPFRONT else 2) if r[0].independent else 1)
        tt0 = time.perf_counter()
        unit = f"{target.name}|{threat.name}"
        saved = _restore(state, unit, res, [e.label for e, _ in runnable])
        # the certificates run right after the first attack of the cascade, on what it left
        first = next((k for k, (e, _) in enumerate(runnable) if not e.independent), None)
        for j, (entry, attack) in enumerate(runnable):
            outcome = AttackOutcome(entry.label, attack.name, attack.family, attack.config(),
                                    queries=np.zeros(n, dtype=np.int64), independent=entry.independent,
                                    attempted_mask=np.zeros(n, dtype=bool), broken_mask=np.zeros(n, dtype=bool),
                                    minimum_norm=attack.minimum_norm, done_mask=np.zeros(n, dtype=bool))
            finished_before = saved is not None and j < int(saved["entries_done"])
            if saved is not None and f"e{j}/attempted" in saved:  # resumed: the samples it was given, and its progress
                for name in ("attempted_mask", "done_mask", "broken_mask", "queries"):
                    getattr(outcome, name)[:] = saved[f"e{j}/{name.replace('_mask', '')}"]
                outcome.broken, prev_seconds = int(saved[f"e{j}/meta"][0]), float(saved[f"e{j}/meta"][1])
            else:
                given = correct if entry.independent else res.robust & ~res.certified
                outcome.attempted_mask[_closest(res, given, entry.closest) if entry.closest else np.flatnonzero(given)] = True
                prev_seconds = 0.0
            outcome.attempted = int(outcome.attempted_mask.sum())
            why = _undecided_skip(res, entry) if entry.undecided and not outcome.done_mask.any() else None
            if why:
                outcome.skipped, outcome.attempted = why, 0
                outcome.attempted_mask[:] = False
                res.attacks.append(outcome)
                continue
            todo = np.flatnonzero(outcome.attempted_mask & ~outcome.done_mask)
            if out.stopped is None and deadline is not None and time.monotonic() > deadline and len(todo):
                out.stopped = "time budget spent"
            if out.stopped is not None and not finished_before and not outcome.done_mask.any():
                outcome.skipped = f"not run: {out.stopped}"
                res.attacks.append(outcome)
                continue
            a0 = time.perf_counter()
            done = int(outcome.done_mask.sum())
            b, bs = 0, batch_size
            try:
                while b < len(todo):
                    if out.stopped is None and deadline is not None and time.monotonic() > deadline:
                        out.stopped = "time budget spent"
                    if out.stopped is not None:
                        break
                    idx = todo[b : b + bs]
                    idx_t = torch.as_tensor(idx, device=device)
                    x0 = x_all[idx_t]
                    goal = goal_all.subset(idx_t)
                    # one query of each sample's budget is kept back for the harness's verification (two for a
                    # minimum-norm attack, whose candidate beyond epsilon is verified as it is, too)
                    held = 2 if attack.minimum_norm else 1
                    oracle = _attack_oracle(target, len(idx), goal, None if queries is None else max(queries - held, 0))
                    rng = SampleRng(seed, f"{threat.name}/{entry.label}", data.ids[idx], device)
                    try:
                        _hold_ctrl_c(False)  # a Ctrl-C held during the last batch's bookkeeping lands here
                        cand = attack.run(oracle, x0, goal, threat, rng)
                        if queries is not None:
                            oracle.budget = queries
                        raw = cand
                        success, pred, cand, closeness = _verify(oracle, target, threat, cand, x0, goal,
                                                                 torch.arange(len(idx)))
                        _hold_ctrl_c(True)  # the batch's results are recorded whole; a Ctrl-C now waits its turn
                    except KeyboardInterrupt:  # Ctrl-C: this batch is lost, everything before it is kept
                        out.stopped = "interrupted"
                        break
                    except torch.OutOfMemoryError:
                        # Out of (GPU) memory: retry the same samples in half the batch. Per-sample random streams make
                        # the result the same as with the smaller --batch-size; the failed attempt produced nothing and
                        # its model calls are not in the ledger.
                        if len(idx) == 1:
                            raise TargetError(f"{target.name}: out of memory attacking a single sample with {entry.label}; "
                                              "use a smaller model or another device") from None
                        bs = max(1, len(idx) // 2)
                        out.oom_retries += 1
                        if torch.cuda.is_available():
                            torch.cuda.empty_cache()
                        continue
                    b += len(idx)
                    hit = success.cpu().numpy()
                    dist = threat.distance(cand, x0).cpu().numpy()
                    found = np.where(hit, dist, np.nan)
                    if attack.minimum_norm:
                        found = np.fmin(found, _verify_beyond(oracle, target, threat, raw, x0, goal, hit))
                    res.min_distance[idx] = np.fmin(res.min_distance[idx], found)
                    res.best_margin[idx] = np.maximum(res.best_margin[idx], closeness.cpu().numpy())
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
                    if getattr(target, "rejects", None) is not None:  # candidates that fooled the classifier but were flagged
                        outcome.detected = (outcome.detected or 0) + int((goal.reached(pred) & ~success).sum())
                    outcome.queries[idx] = used
                    outcome.done_mask[idx] = True
                    done += len(idx)
                    if state is not None:
                        _record(state, unit, res, runnable, j, outcome, prev_seconds + time.perf_counter() - a0)
                    if progress:
                        progress(f"{target.name} {threat.name} {entry.label}", done, outcome.attempted)
            finally:  # never leave Ctrl-C held; one that was held stops the scan here
                if _release_ctrl_c():
                    out.stopped = out.stopped or "interrupted"
            outcome.seconds = prev_seconds + time.perf_counter() - a0
            if not finished_before:
                res.queries += outcome.queries
            outcome.robust_after = res.robust_accuracy
            res.attacks.append(outcome)
            if state is not None and not finished_before and bool((outcome.done_mask == outcome.attempted_mask).all()):
                _record(state, unit, res, runnable, j + 1, None, 0.0, force=out.stopped is not None)
            if progress and not len(todo):
                progress(f"{target.name} {threat.name} {entry.label}", 0, 0)
            if mode and j == first and res.certificate is None and out.stopped is None:
                if not certifier:
                    k = min(len(x_all), 64)
                    certifier.append(certify_mod.for_target(target, tuple(data.sample_shape), x_all[:k],
                                                            clean_scores[:k]))
                _certify(res, certifier[0], threat, x_all, clean_scores, is_targeted, out, deadline, progress,
                         mode == "auto")
                if state is not None:
                    _record(state, unit, res, runnable, j + 1, None, 0.0)
        for entry, attack, reason in skipped:
            res.attacks.append(AttackOutcome(entry.label, attack.name, attack.family, attack.config(), skipped=reason))
        order = {e.label: i for i, e in enumerate(battery.entries)}
        res.attacks.sort(key=lambda a: order.get(a.label, len(order)))  # battery order: same columns for every target
        # a resumed scan counts the attack time of the runs before it too
        res.seconds = max(time.perf_counter() - tt0, sum(a.seconds for a in res.attacks))
        out.results.append(res)
    if state is not None:
        state.flush()
    return out


def _undecided_skip(res: ThreatResult, entry: Entry) -> str | None:
    """Why an ``undecided`` entry does not run, or None. It only spends what the certificates spared: it needs
    certificates, and its samples times its restarts must not exceed the samples they certified (a count, not a
    time, so that the same scan gives the same numbers on any machine)."""
    if not res.certificate or not res.certificate.get("method"):
        return "runs only where certificates ran, on the samples they leave undecided"
    undecided = int((res.robust & ~res.certified).sum())
    certified = int(res.certified.sum())
    k = int(entry.params.get("restarts", 1))
    if undecided * k > certified:
        return (f"{undecided} undecided samples x {k} restarts is more work than the certificates spared "
                f"({certified} certified)")
    return None


def _closest(res: ThreatResult, given: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` (rounded up) of the ``given`` samples whose verified candidates came closest to the goal
    (highest ``best_margin``; ties go to the earlier sample), in sample order. A count, not a timing, and margins the
    harness measured itself, so the same scan picks the same samples."""
    rows = np.flatnonzero(given)
    k = math.ceil(share * len(rows) - 1e-9)
    order = np.argsort(-res.best_margin[rows], kind="stable")
    return np.sort(rows[order[:k]])


_RESULT_ARRAYS = ("robust", "adv_pred", "distance", "queries", "queries_at_break", "min_distance", "adversarial",
                  "certified", "best_margin")
CERT_FIRST, CERT_CHUNK = 4, 8
# The share of samples the bounds must keep proving for "auto" certification to go on. A certified sample spares the
# rest of `standard` 27-37x the first attack's time per sample (wk-mnist-0.1, eran-cifar-pgd at 2/255, wk-cifar-8px
# at 8/255: benchmarks/results/bench_autoattack_*_n{500,1000}.json) while CROWN costs 1-25x it, so a quarter pays.
# A count, not a timing: which samples are certified must not depend on the machine (the undecided entry reads it).
CERT_MIN_SHARE = 0.25


def _certify(res: ThreatResult, built: tuple, threat: ThreatModel, x_all: torch.Tensor, clean_scores: torch.Tensor,
             targeted: bool, out: Evaluation, deadline: float | None, progress: Progress | None, auto: bool) -> None:
    """Certify the samples still robust (certify.py), a few at a time. ``auto``: stop as soon as fewer than
    CERT_MIN_SHARE of the samples tried so far are certified: a model the bounds cannot prove gets a few samples'
    worth of bounds, then the attacks. A sample certified here is robust; the rest are attacked as usual."""
    from robustbench_cli.core.threat_model import Norm

    certifier, reason = built
    if threat.norm is not Norm.LINF:
        res.certificate = {"method": None, "skipped": f"certificates cover Linf threats only, not {threat.norm.value}"}
        return
    if certifier is None:
        res.certificate = {"method": None, "skipped": reason}
        return
    rows = np.flatnonzero(res.robust & ~res.certified)
    t0, done, stopped = time.perf_counter(), 0, None
    k = clean_scores.shape[1]
    label = f"{res.target} {threat.name} certificate ({certifier.method})"
    starts = [0, *range(min(CERT_FIRST, len(rows)), len(rows), CERT_CHUNK)] if len(rows) else []
    for b, e in zip(starts, [*starts[1:], len(rows)]):
        if deadline is not None and time.monotonic() > deadline:
            stopped = out.stopped = "time budget spent"
            break
        got = int(res.certified.sum())
        if auto and done and got < CERT_MIN_SHARE * done:
            stopped = (f"stopped after {done} samples, {got} certified (under {CERT_MIN_SHARE:.0%}): the bounds "
                       "prove too little here to pay; the rest were attacked (--certify certifies them all)")
            break
        idx = rows[b:e]
        reach = None
        if targeted:
            reach = torch.zeros(len(idx), k, dtype=torch.bool)
            reach[torch.arange(len(idx)), torch.as_tensor(res.goal[idx])] = True
        try:
            flags, _ = certifier.certify(x_all[torch.as_tensor(idx, device=x_all.device)], torch.as_tensor(res.labels[idx]),
                                         threat.epsilon, reach, clean_scores[torch.as_tensor(idx, device=clean_scores.device)])
        except KeyboardInterrupt:
            stopped = out.stopped = "interrupted"
            break
        res.certified[idx[flags.numpy()]] = True
        done += len(idx)
        if progress:
            progress(label, done, len(rows))
    res.certificate = {"method": certifier.method, "attempted": done, "certified": int(res.certified.sum()),
                       "seconds": round(time.perf_counter() - t0, 4), "stopped": stopped}
    if getattr(certifier, "crown_skipped", None):
        res.certificate["crown_skipped"] = certifier.crown_skipped


def _restore(state, unit: str, res: ThreatResult, labels: list[str]) -> dict | None:
    """Put a saved (target, threat) back into ``res``; the saved arrays, or None when there is nothing saved."""
    saved = state.get(unit) if state is not None else None
    if saved is None:
        return None
    if [str(v) for v in saved["labels"]] != labels:
        raise UserError(f"--resume: the state's attacks for {unit} ({', '.join(map(str, saved['labels']))}) are not "
                        f"this battery's ({', '.join(labels)})")
    for name in _RESULT_ARRAYS:
        if name in saved and getattr(res, name) is not None:
            getattr(res, name)[...] = saved[name]
    res.broken_by = [labels[c] if c >= 0 else None for c in saved["broken_by"].tolist()]
    if "certificate" in saved:
        res.certificate = json.loads(str(saved["certificate"]))
    return saved


def _record(state, unit: str, res: ThreatResult, runnable, j: int, outcome: AttackOutcome | None, seconds: float,
            *, force: bool = False) -> None:
    """Save the (target, threat)'s progress: ``j`` attacks finished, and ``outcome``'s partial work if given."""
    labels = [e.label for e, _ in runnable]
    old = state.get(unit) or {}
    arrays = {k: v for k, v in old.items() if k.startswith("e")}  # earlier attacks' records stay
    arrays.update({name: getattr(res, name).copy() for name in _RESULT_ARRAYS if getattr(res, name) is not None})
    arrays["broken_by"] = np.array([labels.index(b) if b is not None else -1 for b in res.broken_by], dtype=np.int64)
    arrays["labels"] = np.array(labels)
    arrays["entries_done"] = np.array(j if outcome is None else int(old.get("entries_done", 0)))
    if res.certificate is not None:
        arrays["certificate"] = np.array(json.dumps(res.certificate))
    if outcome is not None:
        arrays[f"e{j}/attempted"] = outcome.attempted_mask.copy()
        arrays[f"e{j}/done"] = outcome.done_mask.copy()
        arrays[f"e{j}/broken"] = outcome.broken_mask.copy()
        arrays[f"e{j}/queries"] = outcome.queries.copy()
        arrays[f"e{j}/meta"] = np.array([outcome.broken, seconds], dtype=np.float64)
    state.put(unit, arrays, force=force)
