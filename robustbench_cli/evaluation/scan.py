"""A scan, start to finish, on loaded targets and data: the battery on every target, the state that lets an
interrupted scan resume, the detector's guarded views, and the adversarial examples re-checked after 8-bit rounding.

Everything a user can get wrong is checked before the first attack runs (shapes, classes, surrogates, generators),
so a bad input never costs an hour of work. The report is built one floor up (``robustbench_cli.reports``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustbench_cli.attacks.transfer import load_surrogate
from robustbench_cli.core.data import DataSpec, EvalSet
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.results import Evaluation
from robustbench_cli.evaluation import examples as ex
from robustbench_cli.evaluation import guarded
from robustbench_cli.evaluation.cascade import Progress, evaluate
from robustbench_cli.evaluation.checks import check_compatible
from robustbench_cli.evaluation.config import DetectorSpec, RunSpec
from robustbench_cli.evaluation.presets import Battery, with_transfer
from robustbench_cli.evaluation.resume import ScanState, fingerprint
from robustbench_cli.evaluation.shards import Barrier, ShardSync
from robustbench_cli.targets import TargetSpec
from robustbench_cli.targets.base import Target


@dataclass
class ScanRun:
    """What a scan produced, before it is a report."""

    evaluations: list[Evaluation]
    battery: Battery
    targets: list[Target]
    examples: list = field(default_factory=list)  # a handful per target and threat, for the HTML report
    saved: list = field(default_factory=list)  # every checked example, for --save-examples
    checks: list[dict] = field(default_factory=list)  # per result: how many examples still fool after rounding
    stopped: str | None = None  # why the scan ended early ("interrupted", "time budget spent"), None when complete
    state: ScanState | None = None  # for the caller to delete once the reports of a complete scan are written
    barrier: Barrier | None = None  # a shard stopped at a decision across the whole set (shards.py), state saved

    @property
    def not_started(self) -> list[str]:
        return [t.name for t in self.targets[len(self.evaluations):]]


def transfer_battery(battery: Battery, run: RunSpec, targets: list[Target], data: EvalSet,
                     head: EvalSet | None = None) -> Battery:
    """Load the surrogates and generators and put their entries up front; each must fit the data and the targets'
    classes before the first attack starts. ``head``: the whole set's first rows, when ``data`` is a shard."""

    surrogates = [load_surrogate(s) for s in run.surrogates]
    rows = (head if head is not None else data).x[:64]
    for s in surrogates:
        check_compatible(s, data)
        s.detect_output_kind(s.scores(torch.as_tensor(rows).to(s.device)))  # log-probabilities if softmax
        for t in targets:
            if t.num_classes != s.num_classes:
                raise UserError(f"the surrogate {s.name} has {s.num_classes} classes but the model {t.name} has "
                                f"{t.num_classes}: a transfer attack needs the same classes")
    battery = with_transfer(battery, surrogates, list(run.generators))
    for e in battery.entries:  # input diversity and generators need images of the right channels
        e.build().check_shape(data.sample_shape)
    return battery


def scan(targets: list[Target], data: EvalSet, run: RunSpec, *, detector: DetectorSpec | None = None,
         like: TargetSpec | None = None, data_spec: DataSpec | None = None, state_path: Path | None = None,
         resume: bool = False, html_examples: int = 0, save_examples: bool = False,
         progress: Progress | None = None, sync: ShardSync | None = None) -> ScanRun:
    """Run ``run``'s battery on every target. ``detector``: guard the (one) target, loading the detector like
    ``like`` (the target's spec) and calibration data like ``data_spec``. ``state_path``: keep per-sample progress
    there (``resume``: continue from it). ``html_examples``: examples per target and threat kept for an HTML report;
    ``save_examples``: keep every one. Either way each example is quantised to 8 bits and re-checked on its target.
    ``sync``: ``data`` is one shard of the set (shards.py); the scan may stop at a barrier (``ScanRun.barrier``)."""
    threats = run.threat_models()
    for t in targets:  # every target must fit the data before the first attack starts
        check_compatible(t, data)
        for threat in threats:
            threat.check_against_dim(int(data.x[0].size))
    battery = transfer_battery(run.battery(), run, targets, data, sync.head if sync is not None else None)
    if detector is not None:
        targets = guarded.guard_targets(detector, targets, like or TargetSpec(targets[0].name), data,
                                        data_spec or DataSpec())
    keep = save_examples or html_examples > 0
    deadline = None if run.time_budget is None else time.monotonic() + run.time_budget
    state = None
    if state_path is not None or resume:
        if state_path is None:
            raise UserError("--resume needs the state file: give a report path (-o), the state is kept next to it")
        keys = ("name", "kind", "sha256", "mean", "std", "access", "weights", "bpda")
        fp = fingerprint(targets=[{k: t.describe().get(k) for k in keys} for t in targets], data=data.describe(),
                         threats=[t.name for t in threats], battery=battery.config(), seed=run.seed,
                         targeted=run.targeted, queries=run.queries,
                         **({"shard": sync.shard.name} if sync is not None else {}),
                         **({"precision": run.precision} if run.precision != "fp32" else {}))
        state = ScanState(Path(state_path), fp, resume=resume)
    out = ScanRun([], battery, targets, state=state)
    for t in targets:
        try:
            ev = evaluate(t, data, threats, battery, seed=run.seed, batch_size=run.batch_size, targeted=run.targeted,
                          queries=run.queries, progress=progress, keep_adversarials=keep,
                          refuse_randomised=run.eot < 2,  # a randomised model without EOT: one line, exit 2
                          state=state, deadline=deadline, certify=run.certify, sync=sync, precision=run.precision)
        except Barrier as b:  # a shard waits for a decision across the whole set; its state is saved
            out.barrier = b
            break
        except KeyboardInterrupt:  # outside an attack (the clean pass, the probes): keep what is done
            out.stopped = "interrupted"
            break
        except Exception:  # the scan cannot go on: a state with nothing in it is no progress to keep
            if state is not None and not resume:
                state.discard_if_empty()
            raise
        guarded.annotate(t, ev)
        out.evaluations.append(ev)
        if keep:
            _examples(out, t, data, ev, html_examples, save_examples)
        if ev.stopped is not None:
            out.stopped = ev.stopped
            break
    guarded.add_findings(out.evaluations)
    return out


def _examples(out: ScanRun, target: Target, data: EvalSet, ev: Evaluation, html_examples: int,
              save_examples: bool) -> None:
    for res in ev.results:
        idx = ex.broken_indices(res) if save_examples else ex.select(res, html_examples)
        checked, q = ex.check_examples(target, data, res, idx)
        out.checks.append(ex.summary(checked, q))
        out.saved += checked if save_examples else []
        pick = set(ex.select(res, html_examples).tolist())
        out.examples += [e for e in checked if e.index in pick]
        res.adversarial = None  # the candidates are in the examples now; free the memory
