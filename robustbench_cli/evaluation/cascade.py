"""The cascade: run a battery on a target, threat by threat, each attack on the samples still undecided.

As in AutoAttack, each attack of the cascade sees only the samples no attack before it broke (and no certificate
proved robust). For each entry, in order: the samples still undecided, run the attack on them batch by batch,
verify every candidate on the target (:mod:`~robustbench_cli.evaluation.harness`), record what the harness
confirmed. A robust accuracy is the share of samples no verified candidate broke: an upper bound on the truth.

Around that loop, each concern lives in its own piece: the goals (:mod:`.goals`), Ctrl-C (:mod:`.interrupts`),
resuming (:mod:`.resume`), certificates (:mod:`.certify`), and here the batches that halve when the device runs
out of memory (:class:`_Batches`) and the deadline of ``--time-budget``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from robustbench_cli.attacks import Attack, Goal
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import TargetError, UserError
from robustbench_cli.core.results import AttackOutcome, Evaluation, ThreatResult
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import certify as certificates
from robustbench_cli.evaluation import diagnostics, interrupts
from robustbench_cli.evaluation.checks import check_compatible, check_run
from robustbench_cli.evaluation.goals import choose_goal
from robustbench_cli.evaluation.harness import verify, verify_beyond
from robustbench_cli.evaluation.presets import UPFRONT, Battery, Entry
from robustbench_cli.evaluation.resume import ScanState
from robustbench_cli.evaluation.shards import Barrier, ShardSync
from robustbench_cli.targets.base import Oracle, Target

Progress = Callable[[str, int, int], None]
PROBE_ROWS = max(diagnostics.PROBE_ROWS, 64)  # rows the probes and the certifier's self-check look at
# --precision: the dtype the attacks' own passes autocast to (None: float32, no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Forward-only queries a scan must be able to ask before a PyTorch target's onnxruntime export pays: on the embedded
# MNIST CNN a process's export and its check take about 1.2 s and save 0.11-0.32 ms a query, a break-even of 3,600-
# 11,000 queries by batch size (benchmarks/bench_fast_route.py); the plan counts an upper bound, so the line sits at
# the top of that range
FAST_ROUTE_MIN = 10_000


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
    state: ScanState | None = None,
    deadline: float | None = None,
    certify: bool | None = None,
    sync: ShardSync | None = None,
    precision: str = "fp32",
) -> Evaluation:
    """Run the battery on every threat. ``keep_adversarials`` keeps each broken sample's verified candidate.
    ``refuse_randomised``: stop, before any attack, when the probe finds that the same inputs give different
    scores (the scan sets it unless ``--eot`` is on: single-draw gradients of a randomised model mean nothing).
    ``state`` (a :class:`~robustbench_cli.evaluation.resume.ScanState`): restore the work it holds and record progress
    in it. ``deadline`` (``time.monotonic()``): start no new batch after it. A stop (the deadline, or Ctrl-C during
    an attack) leaves ``Evaluation.stopped`` set and every attack that did not finish marked, never a lost result.
    ``certify``: after the cascade's first attack, certify the samples it left (certify.py) and attack only the
    others; None takes the battery's setting. Results are the same either way; only the work differs.
    ``sync``: ``data`` is one shard of a larger set (shards.py): the probes look at the whole set's first rows, and
    a decision across the whole set not yet taken stops the evaluation at a :class:`~.shards.Barrier`.
    ``precision`` (``bf16``, ``fp16``): the attacks' own passes run under autocast; the harness still verifies
    every candidate in float32 on the model as it is, and counts those that broke only in reduced precision."""
    check_compatible(target, data)
    check_run(seed=seed, batch_size=batch_size, queries=queries)
    for threat in threats:
        threat.check_against_dim(int(np.prod(data.sample_shape)))
    # "auto": the battery's own setting, which stops certifying where the bounds prove too little to pay;
    # "all" (--certify): every sample the first attack leaves; None (--no-certify): none
    mode = ("auto" if battery.certify else None) if certify is None else ("all" if certify else None)
    run = _Run(target, data, battery, seed, batch_size, targeted, queries, progress, keep_adversarials, state,
               deadline, mode, sync, PRECISIONS[precision])
    run.plan_fast_route(threats)
    if refuse_randomised and diagnostics.randomised(run.out.probes):
        raise TargetError(
            f"the model {target.name} gives different scores for the same inputs (max difference "
            f"{run.out.probes['repeat_max_abs_diff']:.2g}): a randomised model needs expectation over transformation; "
            "pass --eot N (e.g. --eot 20) to average each gradient over N draws")
    for threat in threats:
        run.out.results.append(run.threat(threat))
    diagnostics.run(run.out)
    if state is not None:
        state.flush()
    return run.out


@dataclass
class _Entry:
    """One entry of the cascade on one threat: the attack, its outcome so far, and where it stands in the battery."""

    entry: Entry
    attack: Attack
    outcome: AttackOutcome
    index: int  # its place among the runnable entries (the resume state's key)
    finished_before: bool  # a resumed scan had finished it already
    seconds_before: float  # its attack time in the runs before this one
    ended: bool = False  # restored from the state as it ended (finished or skipped): nothing to run or decide


class _Rows:
    """Rows of data kept on disk (core/folders.py's RowFile), read onto the device when indexed: a batch at a time,
    never the whole set."""

    def __init__(self, rows, device: torch.device):
        self.rows, self.device = rows, device

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return torch.as_tensor(self.rows[key]).to(self.device)


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor | _Rows, size: int) -> torch.Tensor:
    """``fn`` over all rows of ``x``: in one call for rows in memory (as before), a batch at a time from disk."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


class _Batches:
    """The samples still to do, in batches of the run's size. A batch that runs out of memory is retried in halves:
    per-sample random streams make the result the same as with the smaller batch size."""

    def __init__(self, todo: np.ndarray, size: int):
        self.todo, self.size, self.pos = todo, size, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        while self.pos < len(self.todo):
            yield self.todo[self.pos : self.pos + self.size]

    def done(self, idx: np.ndarray) -> None:
        self.pos += len(idx)

    def halve(self, idx: np.ndarray) -> bool:
        """Retry ``idx`` in half the batch; False when it is a single sample already."""
        if len(idx) == 1:
            return False
        self.size = max(1, len(idx) // 2)
        return True


class _Run:
    """One target's evaluation: the clean pass, the probes, and what every threat shares."""

    def __init__(self, target: Target, data: EvalSet, battery: Battery, seed: int, batch_size: int,
                 targeted: str | None, queries: int | None, progress: Progress | None, keep_adversarials: bool,
                 state: ScanState | None, deadline: float | None, certify: str | None, sync: ShardSync | None = None,
                 precision: torch.dtype | None = None):
        self.precision = precision
        self.target, self.data, self.battery, self.seed, self.sync = target, data, battery, seed, sync
        self.batch_size, self.targeted, self.queries, self.progress = batch_size, targeted, queries, progress
        self.keep_adversarials, self.state, self.deadline, self.certify = keep_adversarials, state, deadline, certify
        self.device = target.device
        # the data's rows on the device: all at once, or a batch at a time when the data is kept on disk
        self.x_all: torch.Tensor | _Rows = (torch.as_tensor(data.x).to(self.device) if isinstance(data.x, np.ndarray)
                                            else _Rows(data.x, self.device))
        t0 = time.perf_counter()
        self.clean_scores = (_chunked(target.scores, self.x_all, batch_size) if len(self.x_all)
                             else torch.zeros((0, cast(int, target.num_classes))))  # check_compatible set num_classes
        if not bool(torch.isfinite(self.clean_scores).all()):
            raise TargetError(f"the model {target.name} returns NaN or inf on clean inputs")
        # the checks that look at a few rows look at the whole set's first rows, also in a shard
        # (their pixels: the first PROBE_ROWS, all the probes and the certifier's check look at; their scores: the
        # first HEAD_ROWS, for the output kind)
        if sync is None:
            self.head_x, self.head_scores, head_y = self.x_all[:PROBE_ROWS], self.clean_scores, data.y
        else:
            self.head_x = torch.as_tensor(sync.head.x[:PROBE_ROWS]).to(self.device)
            self.head_scores = _chunked(target.scores, _Rows(sync.head.x, self.device), batch_size)
            head_y = sync.head.y
        target.detect_output_kind(self.head_scores[: min(len(self.head_scores), 512)])
        self.clean_pred = self.clean_scores.argmax(dim=1).cpu().numpy().astype(np.int64)
        if len(self.x_all):  # a clean input the detector of a guarded target rejects is answered -1: not correct
            self.clean_pred[_chunked(target.rejects, self.x_all, batch_size).cpu().numpy()] = -1
        self.out = Evaluation(target=target.describe(), results=[], clean_seconds=time.perf_counter() - t0,
                              probes=diagnostics.probe(target, self.head_x, self.head_scores, head_y))
        self._certifier: tuple | None = None  # built on first use, shared by the threats
        self.fast = True  # plan_fast_route decides

    # --- the fast route ------------------------------------------------------------------------------------
    def plan_fast_route(self, threats: list[ThreatModel]) -> None:
        """Whether the attacks' forward-only queries may use the target's faster stand-in (a PyTorch model's
        onnxruntime export, made on first use): only when the battery can ask at least FAST_ROUTE_MIN of them over
        the whole set. Below that the export costs more than it saves. A plan on counts, made before any attack from
        the battery and the whole set's size, so a shard decides as the whole scan does (a clock would not)."""
        n = self.sync.total if self.sync is not None else len(self.data)
        shape = tuple(self.data.sample_shape)
        dim = int(np.prod(shape))
        k = cast(int, self.target.num_classes)
        per_sample = 0
        for threat in threats:
            runnable, _ = self.battery.applicable_to(self.target, threat, dim)
            per_sample += sum(attack.forward_queries(shape, k) for _, attack in runnable)
        planned = n * per_sample
        self.fast = planned >= FAST_ROUTE_MIN
        if not self.fast and getattr(self.target, "fast_forward", False):
            self.out.target["fast_forward"] = (f"off: the battery asks at most {planned:,} forward-only queries, under "
                                               f"the {FAST_ROUTE_MIN:,} that repay an export")

    # --- the deadline ---------------------------------------------------------------------------------------
    def time_is_up(self) -> bool:
        """Whether the scan must start no more work (and record why, once)."""
        if self.out.stopped is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.out.stopped = "time budget spent"
        return self.out.stopped is not None

    # --- one threat -----------------------------------------------------------------------------------------
    def threat(self, threat: ThreatModel) -> ThreatResult:
        t0 = time.perf_counter()
        res, goal = self._start(threat)
        runnable, skipped = self.battery.applicable_to(self.target, threat, int(np.prod(self.data.sample_shape)))
        # transfer and generator entries first, each on every clean-correct sample (one target query a sample, the
        # cheapest, and their rows form the transfer matrix); then the cascade; then the other independent entries
        # (the noise yardstick) on every clean-correct sample
        runnable.sort(key=lambda r: (0 if r[1].family in UPFRONT else 2) if r[0].independent else 1)
        labels = [e.label for e, _ in runnable]
        unit = f"{self.target.name}|{threat.name}"
        saved = self.state.restore(unit, res, labels) if self.state is not None else None
        if saved is not None:
            self._reverify(res, goal)
        done_before = int(saved["entries_done"]) if saved is not None else 0
        # the certificates run right after the first attack of the cascade, on what it left
        first = next((k for k, (e, _) in enumerate(runnable) if not e.independent), None)
        for j, (entry, attack) in enumerate(runnable):
            step = self._new_entry(res, entry, attack, j, saved, j < done_before)
            self._run_entry(res, goal, step, unit, labels)
            res.attacks.append(step.outcome)
            if j == first and self.certify and res.certificate is None and self.out.stopped is None:
                self._certificates(res, unit, labels, j + 1)
        for entry, attack, reason in skipped:
            res.attacks.append(AttackOutcome(entry.label, attack.name, attack.family, attack.config(), skipped=reason))
        order = {e.label: i for i, e in enumerate(self.battery.entries)}
        res.attacks.sort(key=lambda a: order.get(a.label, len(order)))  # battery order: same columns for every target
        # a resumed scan counts the attack time of the runs before it too
        res.seconds = max(time.perf_counter() - t0, sum(a.seconds for a in res.attacks))
        return res

    def _start(self, threat: ThreatModel) -> tuple[ThreatResult, Goal]:
        """The threat's goals and eligible samples, and its per-sample result arrays before any attack."""
        labels, n = self.data.y, len(self.data.y)
        is_targeted = threat.targeted or self.targeted is not None
        spec = (self.targeted or "random") if is_targeted else None
        goal, eligible = choose_goal(spec, labels, self.clean_scores, cast(int, self.target.num_classes), self.seed,
                                     self.data.ids)
        correct = (self.clean_pred == labels) & eligible
        if is_targeted:  # a sample already predicted as its target class has nothing to reach
            correct &= self.clean_pred != goal
        res = ThreatResult(
            target=self.target.name, threat=threat, ids=self.data.ids.copy(), labels=labels.copy(),
            clean_pred=self.clean_pred, goal=goal, eligible=eligible, robust=correct.copy(),
            adv_pred=np.full(n, -1, dtype=np.int64), distance=np.full(n, np.nan), queries=np.zeros(n, dtype=np.int64),
            broken_by=[None] * n, queries_at_break=np.zeros(n, dtype=np.int64), min_distance=np.full(n, np.nan),
            certified=np.zeros(n, dtype=bool), best_margin=np.full(n, -np.inf), nonfinite=np.zeros(n, dtype=np.int64),
        )
        if self.precision is not None:
            res.precision = str(self.precision).removeprefix("torch.")
            res.lowprec = np.zeros(n, dtype=np.int64)
        if self.state is not None:  # each break's candidate goes to the state, to be verified again on resume
            res.cand_row = np.full(n, -1, dtype=np.int64)
        if self.keep_adversarials:
            res.adversarial = np.full(self.data.x.shape, np.nan, dtype=np.float32)
        return res, Goal(torch.as_tensor(goal, device=self.device), is_targeted)

    # --- one entry ------------------------------------------------------------------------------------------
    def _new_entry(self, res: ThreatResult, entry: Entry, attack: Attack, j: int, saved: dict | None,
                   finished_before: bool) -> _Entry:
        """The entry's outcome, with the samples it is given: the ones the cascade left undecided (every
        clean-correct sample for an independent entry), or what a resumed state says it was given."""
        n = len(res.ids)
        outcome = AttackOutcome(entry.label, attack.name, attack.family, attack.config(),
                                queries=np.zeros(n, dtype=np.int64), independent=entry.independent,
                                attempted_mask=np.zeros(n, dtype=bool), broken_mask=np.zeros(n, dtype=bool),
                                minimum_norm=attack.minimum_norm, done_mask=np.zeros(n, dtype=bool))
        assert outcome.attempted_mask is not None and res.certified is not None  # both just made (_start, above)
        before = self.state.resume_outcome(saved, j, outcome) if self.state is not None else None
        if before is None:
            given = res.clean_correct if entry.independent else res.robust & ~res.certified
            if entry.closest and self.sync is not None:  # the top share of the whole set, chosen by the driver
                unit = f"{self.target.name}|{res.threat.name}"
                chosen = self.sync.get(unit, "closest", entry.label)
                if chosen is None:
                    raise self._barrier(Barrier(unit, "closest", entry.label, entry.closest))
                outcome.attempted_mask[self.sync.own(res.ids, chosen) & given] = True
            else:
                outcome.attempted_mask[closest_rows(res, given, entry.closest) if entry.closest
                                       else np.flatnonzero(given)] = True
        outcome.attempted = int(outcome.attempted_mask.sum())
        seconds, ended = before if before is not None else (0.0, False)
        return _Entry(entry, attack, outcome, j, finished_before, seconds, ended and finished_before)

    def _run_entry(self, res: ThreatResult, goal: Goal, step: _Entry, unit: str, labels: list[str]) -> None:
        outcome = step.outcome
        assert outcome.attempted_mask is not None and outcome.done_mask is not None  # set by _new_entry
        if step.ended:  # a resumed scan had finished or skipped it: as it ended, not decided again on later results
            outcome.seconds = step.seconds_before
            return
        why = self._undecided(res, step.entry) if step.entry.undecided and not outcome.done_mask.any() else None
        if why:
            outcome.skipped, outcome.attempted = why, 0
            outcome.attempted_mask[:] = False
            if self.state is not None and not step.finished_before:
                self.state.record(unit, res, labels, step.index, outcome, 0.0, final=True)
            return
        todo = np.flatnonzero(outcome.attempted_mask & ~outcome.done_mask)
        if len(todo):
            self.time_is_up()
        if self.out.stopped is not None and not step.finished_before and not outcome.done_mask.any():
            outcome.skipped = f"not run: {self.out.stopped}"
            return
        t0 = time.perf_counter()
        self._attack(res, goal, step, todo, unit, labels, t0)
        outcome.seconds = step.seconds_before + time.perf_counter() - t0
        if not step.finished_before:
            res.queries += outcome.queries
        outcome.robust_after = res.robust_accuracy
        if self.state is not None and not step.finished_before and bool((outcome.done_mask == outcome.attempted_mask).all()):
            self.state.record(unit, res, labels, step.index, outcome, outcome.seconds,
                              force=self.out.stopped is not None, final=True)
        if self.progress and not len(todo):
            self.progress(f"{self.target.name} {res.threat.name} {step.entry.label}", 0, 0)

    def _attack(self, res: ThreatResult, goal: Goal, step: _Entry, todo: np.ndarray, unit: str, labels: list[str],
                t0: float) -> None:
        """Attack ``todo`` batch by batch; each batch is verified by the harness and recorded whole."""
        assert step.outcome.done_mask is not None  # set by _new_entry
        done = int(step.outcome.done_mask.sum())
        batches = _Batches(todo, self.batch_size)
        try:
            for idx in batches:
                if self.time_is_up():
                    break
                try:
                    interrupts.hold(False)  # a Ctrl-C held during the last batch's bookkeeping lands here
                    raw, verdict, oracle = self._attack_batch(res, goal, step, idx)
                    interrupts.hold(True)  # the batch's results are recorded whole; a Ctrl-C now waits its turn
                except KeyboardInterrupt:  # Ctrl-C: this batch is lost, everything before it is kept
                    self.out.stopped = "interrupted"
                    break
                except torch.OutOfMemoryError:
                    # the failed attempt produced nothing and its model calls are not in the ledger
                    if not batches.halve(idx):
                        raise TargetError(f"{self.target.name}: out of memory attacking a single sample with "
                                          f"{step.entry.label}; use a smaller model or another device") from None
                    self.out.oom_retries += 1
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    continue
                batches.done(idx)
                self._record(res, goal, step, idx, raw, verdict, oracle)
                done += len(idx)
                if self.state is not None:
                    self.state.record(unit, res, labels, step.index, step.outcome,
                                      step.seconds_before + time.perf_counter() - t0)
                if self.progress:
                    self.progress(f"{self.target.name} {res.threat.name} {step.entry.label}", done,
                                  step.outcome.attempted)
        finally:  # never leave Ctrl-C held; one that was held stops the scan here
            if interrupts.release():
                self.out.stopped = self.out.stopped or "interrupted"

    def _attack_batch(self, res: ThreatResult, goal_all: Goal, step: _Entry, idx: np.ndarray):
        """Run the attack on one batch and have the harness verify its candidates: (raw candidates, verdict, oracle)."""
        idx_t = torch.as_tensor(idx, device=self.device)
        x0 = self.x_all[idx_t]
        goal = goal_all.subset(idx_t)
        # one query of each sample's budget is kept back for the harness's verification (two for a minimum-norm
        # attack, whose candidate beyond epsilon is verified as it is, too)
        held = 2 if step.attack.minimum_norm else 1
        budget = None if self.queries is None else max(self.queries - held, 0)
        oracle = self.target.attack_oracle(len(idx), goal, budget=budget)
        oracle.precision = self.precision
        oracle.fast = self.fast
        rng = SampleRng(self.seed, f"{res.threat.name}/{step.entry.label}", self.data.ids[idx], self.device)
        raw = step.attack.run(oracle, x0, goal, res.threat, rng)
        if self.queries is not None:
            oracle.budget = self.queries
        return raw, verify(oracle, self.target, res.threat, raw, x0, goal), oracle

    def _record(self, res: ThreatResult, goal_all: Goal, step: _Entry, idx: np.ndarray, raw: torch.Tensor,
                verdict, oracle) -> None:
        """Book one verified batch: first breaks, distances, queries, margins, the adversarial candidates."""
        outcome, threat = step.outcome, res.threat
        # the per-sample arrays _start and _new_entry made
        assert res.min_distance is not None and res.best_margin is not None and res.queries_at_break is not None
        assert outcome.broken_mask is not None and outcome.queries is not None and outcome.done_mask is not None
        x0 = self.x_all[torch.as_tensor(idx, device=self.device)]
        hit = verdict.success.cpu().numpy()
        if res.nonfinite is not None:
            res.nonfinite[idx] += (~verdict.finite).cpu().numpy()
        if res.lowprec is not None and verdict.low_only is not None:
            res.lowprec[idx] += verdict.low_only.cpu().numpy()
        dist = threat.exact_distance(verdict.candidate, x0).cpu().numpy()  # float64: <= epsilon exactly
        found = np.where(hit, dist, np.nan)
        if step.attack.minimum_norm:
            goal = goal_all.subset(torch.as_tensor(idx, device=self.device))
            found = np.fmin(found, verify_beyond(oracle, self.target, threat, raw, x0, goal, hit))
        res.min_distance[idx] = np.fmin(res.min_distance[idx], found)
        res.best_margin[idx] = np.maximum(res.best_margin[idx], verdict.margin.cpu().numpy())
        used = oracle.used.numpy()
        outcome.broken_mask[idx[hit]] = True
        new = hit & res.robust[idx]  # first verified break of the sample
        broke = idx[new]
        pred = verdict.pred.cpu().numpy()
        res.robust[broke] = False
        res.adv_pred[broke] = pred[new]
        res.distance[broke] = dist[new]
        res.queries_at_break[broke] = res.queries[broke] + used[new]
        for i in broke:
            res.broken_by[i] = step.entry.label
        if len(broke) and (res.adversarial is not None or res.cand_row is not None):
            found = verdict.candidate[torch.as_tensor(new, device=verdict.candidate.device)].detach().cpu().numpy()
            if res.adversarial is not None:
                res.adversarial[broke] = found
            if res.cand_row is not None and self.state is not None:
                res.cand_row[broke] = self.state.add_candidates(found)
        outcome.broken += int(hit.sum())
        if self.target.has_detector:  # candidates that fooled the classifier but were flagged
            reached = goal_all.subset(torch.as_tensor(idx, device=self.device)).reached(verdict.pred)
            outcome.detected = (outcome.detected or 0) + int((reached & ~verdict.success).sum())
        outcome.queries[idx] = used
        outcome.done_mask[idx] = True

    # --- a resumed state is evidence to check, not to trust -------------------------------------------------------
    def _reverify(self, res: ThreatResult, goal: Goal) -> None:
        """Every break a state restores is verified again on the model, as the harness verified it the first time:
        its candidate, inside the threat and the box, reaching the goal with the recorded prediction. One query each,
        counted in ``Evaluation.reverified`` (not in the per-sample columns, which stay those of an uninterrupted
        scan). A break that does not hold, or has no candidate, refuses the state."""
        assert self.state is not None
        broken = np.flatnonzero(res.clean_correct & ~res.robust)
        if not len(broken):
            return
        rows = res.cand_row[broken] if res.cand_row is not None else np.full(len(broken), -1)
        where = f"--resume: the state file {self.state.path}"
        if (rows < 0).any():
            raise UserError(f"{where} lists {int((rows < 0).sum())} break(s) without the candidate that broke them "
                            f"(sample id {int(res.ids[broken[rows < 0][0]])}); delete it to start over")
        for start in range(0, len(broken), self.batch_size):
            idx = broken[start : start + self.batch_size]
            idx_t = torch.as_tensor(idx, device=self.device)
            x0 = self.x_all[idx_t]
            cand = torch.as_tensor(self.state.read_candidates(rows[start : start + len(idx)])).to(self.device)
            oracle = Oracle(self.target, len(idx))
            v = verify(oracle, self.target, res.threat, cand, x0, goal.subset(idx_t))
            ok = v.success.cpu().numpy() & (v.pred.cpu().numpy() == res.adv_pred[idx])
            if not ok.all():
                bad = int(res.ids[idx[~ok][0]])
                raise UserError(f"{where} records {int((~ok).sum())} break(s) that do not hold on the model (sample id "
                                f"{bad} first); it was edited or written for another model; delete it to start over")
            self.out.reverified += len(idx)

    # --- decisions across the whole set (shards.py) ------------------------------------------------------------
    def _barrier(self, barrier: Barrier) -> Barrier:
        """A shard stops here until the driver has taken the decision: its state is saved first."""
        if self.state is not None:
            self.state.flush()
        return barrier

    def _undecided(self, res: ThreatResult, entry: Entry) -> str | None:
        restarts = int(entry.params.get("restarts", 1))
        if self.sync is None or not res.certificate or not res.certificate.get("method"):
            return undecided_skip(res, restarts)
        unit = f"{self.target.name}|{res.threat.name}"
        d = self.sync.get(unit, "undecided", entry.label)
        if d is None:
            raise self._barrier(Barrier(unit, "undecided", entry.label, restarts))
        return d["skip"]

    # --- certificates ---------------------------------------------------------------------------------------
    def certifier(self) -> tuple:
        """The target's certifier (certify.for_target), checked on the whole set's first rows; built once."""
        if self._certifier is None:
            k = min(len(self.head_x), 64)
            self._certifier = certificates.for_target(self.target, tuple(self.data.sample_shape), self.head_x[:k],
                                                      self.head_scores[:k])
        return self._certifier

    def _certificates(self, res: ThreatResult, unit: str, labels: list[str], entries_done: int) -> None:
        """Prove robust what the bounds can among the samples the first attack left (certify.py)."""
        if self.sync is not None and certificates.would_run(res.threat, self.certifier()):
            d = self.sync.get(unit, "certify")  # the driver ran them over the whole set, in its order
            if d is None:
                raise self._barrier(Barrier(unit, "certify"))
            assert res.certified is not None  # made by _start
            res.certified[self.sync.own(res.ids, d["certified_ids"])] = True
            res.certificate = self.sync.certificate(d, res.ids)
            if self.state is not None:
                self.state.record(unit, res, labels, entries_done, None, 0.0)
            return
        targeted = res.threat.targeted or self.targeted is not None
        halt = certificates.certify_remaining(res, self.certifier(), self.x_all, self.clean_scores, targeted,
                                              auto=self.certify == "auto", deadline=self.deadline,
                                              progress=self.progress)
        if halt is not None:
            self.out.stopped = halt
        if self.state is not None:
            self.state.record(unit, res, labels, entries_done, None, 0.0)


def undecided_skip(res: ThreatResult, restarts: int) -> str | None:
    """Why an ``undecided`` entry with ``restarts`` does not run, or None. It only spends what the certificates spared: it needs
    certificates, and its samples times its restarts must not exceed the samples they certified (a count, not a
    time, so that the same scan gives the same numbers on any machine)."""
    if not res.certificate or not res.certificate.get("method"):
        return "runs only where certificates ran, on the samples they leave undecided"
    assert res.certified is not None  # made by _Run._start
    undecided = int((res.robust & ~res.certified).sum())
    certified = int(res.certified.sum())
    k = restarts
    if undecided * k > certified:
        return (f"{undecided} undecided samples x {k} restarts is more work than the certificates spared "
                f"({certified} certified)")
    return None


def closest_rows(res: ThreatResult, given: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` (rounded up) of the ``given`` samples whose verified candidates came closest to the goal
    (highest ``best_margin``; ties go to the earlier sample), in sample order. A count, not a timing, and margins the
    harness measured itself, so the same scan picks the same samples."""
    assert res.best_margin is not None  # made by _Run._start
    rows = np.flatnonzero(given)
    k = math.ceil(share * len(rows) - 1e-9)
    order = np.argsort(-res.best_margin[rows], kind="stable")
    return np.sort(rows[order[:k]])
