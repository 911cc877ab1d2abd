"""A scan, start to finish, as a library call: targets + data + threats + battery -> report.

The CLI turns options into a :class:`ScanConfig`; everything a user can get wrong is checked here before the
first attack runs (paths, shapes, classes, epsilons, output files), so a bad input never costs an hour of work.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from robustbench_cli.evaluation import Progress, check_compatible, evaluate, get_battery, with_eot
from robustbench_cli.core.data import load_eval_set
from robustbench_cli.core.errors import UserError
from robustbench_cli.reports import build_report
from robustbench_cli.evaluation.resume import ScanState, fingerprint
from robustbench_cli.targets import TargetOptions, load_target
from robustbench_cli.core.threat_model import ThreatModel


@dataclass
class ScanConfig:
    models: list[str]
    data: str = "mnist"
    threats: list[str] = field(default_factory=lambda: ["linf:0.3"])
    n: int | None = None
    offset: int = 0
    shuffle: bool = False
    data_layout: str | None = None
    data_scale: float | None = None
    preset: str = "default"
    attacks: list[str] | None = None
    targeted: str | None = None
    queries: int | None = None
    seed: int = 0
    batch_size: int = 256
    eot: int = 1  # --eot: gradient attacks average each gradient over this many draws (randomised models)
    certify: bool | None = None  # --certify/--no-certify; None: the preset's setting
    target_options: list[TargetOptions] = field(default_factory=list)
    # --surrogate SPEC[@WEIGHTS] (transfer attacks) and --generator FILE: entries up front (battery.with_transfer);
    # the surrogates load with surrogate_options (device, batch size, classes, mean/std), their weights from SPEC
    surrogates: list[str] = field(default_factory=list)
    surrogate_options: TargetOptions | None = None
    generators: list[str] = field(default_factory=list)
    # --detector: the one model guarded by this detector, scanned alone, guarded non-adaptively and adaptively
    detector: str | None = None
    detector_weights: str | None = None
    detector_fpr: float | None = None  # default 0.05 when no threshold is given
    detector_threshold: float | None = None
    detector_calibration: str | None = None  # clean data for the threshold; default the evaluated data
    # --resume / --time-budget: the state file keeps per-sample progress (robustbench_cli.evaluation.resume)
    state_path: str | None = None  # None: no state file is kept
    resume: bool = False
    time_budget: float | None = None  # seconds; no new batch starts once it is spent


@dataclass
class ScanOutcome:
    report: dict
    examples: list = field(default_factory=list)  # a handful per target and threat, for the HTML report
    saved: list = field(default_factory=list)  # every checked example, for --save-examples (written by the caller)
    stopped: str | None = None  # why the scan ended early ("interrupted", "time budget spent"), None when complete
    state: object = None  # the ScanState, for the caller to delete once the reports of a complete scan are written


def _name_checkpoints(targets) -> None:
    """Checkpoints of one architecture (``net.py:Net --weights a.pt --weights b.pt``) are told apart by weights."""
    counts = Counter(t.name for t in targets)
    for t in targets:
        weights = t.details.get("weights")
        if counts[t.name] > 1 and weights:
            t.name = f"{t.name}@{Path(weights).name}"


def _transfer_battery(cfg: ScanConfig, battery, targets, data):
    """Load the surrogates and generators and put their entries up front; each must fit the data and the targets'
    classes before the first attack starts."""
    from robustbench_cli.attacks.transfer import load_surrogate
    from robustbench_cli.evaluation import with_transfer

    surrogates = [load_surrogate(s, cfg.surrogate_options) for s in cfg.surrogates]
    for s in surrogates:
        check_compatible(s, data)
        s.detect_output_kind(s.scores(torch.as_tensor(data.x[:64]).to(s.device)))  # log-probabilities if softmax
        for t in targets:
            if t.num_classes != s.num_classes:
                raise UserError(f"the surrogate {s.name} has {s.num_classes} classes but the model {t.name} has "
                                f"{t.num_classes}: a transfer attack needs the same classes")
    battery = with_transfer(battery, surrogates, cfg.generators)
    for e in battery.entries:  # input diversity and generators need images of the right channels
        attack = e.build()
        if hasattr(attack, "check_shape"):
            attack.check_shape(data.sample_shape)
    return battery


def parse_threats(threats: list[str]) -> list[ThreatModel]:
    if not threats:
        raise UserError("give at least one threat model (--eps 0.3 or --threat linf:8/255)")
    parsed = [ThreatModel.parse(t) for t in threats]
    seen: dict[tuple, ThreatModel] = {}
    for t in parsed:  # by value: linf:0.1 and linf:1/10 are one threat model written twice
        key = (t.norm, t.epsilon, t.targeted)
        if key in seen:
            raise UserError(f"threat models repeat: {seen[key].name}, {t.name}")
        seen[key] = t
    return parsed


def run_scan(cfg: ScanConfig, progress: Progress | None = None) -> dict:
    return scan(cfg, progress).report


def scan(cfg: ScanConfig, progress: Progress | None = None, *, save_examples: Path | None = None,
         html_examples: int = 0) -> ScanOutcome:
    """Run a scan. ``save_examples``: the folder every adversarial example will be saved in (the caller writes it
    with :func:`~robustbench_cli.reports.examples.save_folder` once the reports rendered); ``html_examples``: how
    many examples per target and threat to keep for the HTML report. Either way each example is quantised to 8 bits
    and re-checked on its target, and the report records how many still fool it."""
    from robustbench_cli.reports import examples as ex

    threats = parse_threats(cfg.threats)
    if cfg.seed < 0:  # numpy's generators take no negative seeds
        raise UserError(f"--seed must be >= 0, got {cfg.seed}")
    battery = with_eot(get_battery(cfg.preset, cfg.attacks), cfg.eot)
    if cfg.data_layout not in (None, "nchw", "nhwc"):
        raise UserError(f"--data-layout must be nchw or nhwc, got {cfg.data_layout!r}")
    data = load_eval_set(cfg.data, n=cfg.n, offset=cfg.offset, shuffle=cfg.shuffle, seed=cfg.seed,
                         layout=cfg.data_layout, scale=cfg.data_scale)
    opts = cfg.target_options or [TargetOptions() for _ in cfg.models]
    targets = [load_target(m, o) for m, o in zip(cfg.models, opts)]
    _name_checkpoints(targets)
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise UserError(f"the same model is given twice: {', '.join(names)}")
    for t in targets:  # every target must fit the data before the first attack starts
        check_compatible(t, data)
        for threat in threats:
            threat.check_against_dim(int(data.x[0].size))
    battery = _transfer_battery(cfg, battery, targets, data)
    if cfg.detector is not None:
        from robustbench_cli.targets import detector as guarded

        targets = guarded.guard_targets(cfg, targets, data)
    keep = save_examples is not None or html_examples > 0
    deadline = None if cfg.time_budget is None else time.monotonic() + cfg.time_budget
    state = None
    if cfg.state_path is not None or cfg.resume:
        if cfg.state_path is None:
            raise UserError("--resume needs the state file: give a report path (-o), the state is kept next to it")
        fp = fingerprint(targets=[{k: t.describe().get(k) for k in ("name", "kind", "sha256", "mean", "std", "access",
                                                                     "weights", "bpda")} for t in targets],
                         data=data.describe(), threats=[t.name for t in threats], battery=battery.config(),
                         seed=cfg.seed, targeted=cfg.targeted, queries=cfg.queries)
        state = ScanState(Path(cfg.state_path), fp, resume=cfg.resume)
    evaluations, saved, shown, checks = [], [], [], []
    stopped = None
    for t in targets:
        if stopped is not None:
            break
        try:
            ev = evaluate(t, data, threats, battery, seed=cfg.seed, batch_size=cfg.batch_size, targeted=cfg.targeted,
                      queries=cfg.queries, progress=progress, keep_adversarials=keep,
                      refuse_randomised=cfg.eot < 2,  # a randomised model without EOT: one line, exit 2
                      state=state, deadline=deadline, certify=cfg.certify)
        except KeyboardInterrupt:  # outside an attack (the clean pass, the probes): keep what is done
            stopped = "interrupted"
            break
        stopped = ev.stopped
        if cfg.detector is not None:
            guarded.annotate(t, ev)
        evaluations.append(ev)
        for res in ev.results:
            if not keep:
                continue
            idx = ex.broken_indices(res) if save_examples is not None else ex.select(res, html_examples)
            checked, q = ex.check_examples(t, data, res, idx)
            checks.append(ex.summary(checked, q))
            saved += checked if save_examples is not None else []
            pick = set(ex.select(res, html_examples).tolist())
            shown += [e for e in checked if e.index in pick]
            res.adversarial = None  # the candidates are in the examples now; free the memory
    options = {k: v for k, v in asdict(cfg).items() if k not in ("target_options", "models")}
    options["targets"] = [{"model": m, **{k: v for k, v in asdict(o).items() if v is not None}} for m, o in zip(cfg.models, opts)]
    report = build_report(evaluations, data=data.describe(), battery=battery.config(), seed=cfg.seed,
                          device=", ".join(sorted({str(t.device) for t in targets})), options=options)
    if cfg.detector is not None:
        guarded.add_findings(report)
    report["complete"] = stopped is None
    if stopped is not None:
        report["incomplete"] = incomplete_summary(report, stopped, [t.name for t in targets[len(evaluations):]])
    if keep:
        for entry, summary in zip(report["results"], checks):
            if save_examples is not None:
                summary.update(folder=str(save_examples), index=str(Path(save_examples) / ex.INDEX))
            entry["examples_check"] = summary
    return ScanOutcome(report, shown, saved, stopped=stopped, state=state)


def incomplete_summary(report: dict, reason: str, not_started: list[str]) -> dict:
    """Exactly what a stopped scan did: per target and threat, each attack's finished and planned samples."""
    unfinished = []
    for r in report["results"]:
        for a in r["attacks"]:
            if a.get("completed") is not None and a["completed"] < a["attempted"] or (a["skipped"] or "").startswith("not run"):
                unfinished.append({"target": r["target"], "threat": r["threat"], "attack": a["label"],
                                   "completed": a.get("completed") or 0, "attempted": a["attempted"]})
    return {"reason": reason, "unfinished": unfinished, "targets_not_started": not_started}


def parse_duration(text: str) -> float:
    """``--time-budget``: 90, 90s, 10m, 1h, 1h30m -> seconds."""
    import re

    t = text.strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?", t)
    if not t or m is None or not any(m.groups()):
        raise UserError(f"--time-budget takes a duration like 90s, 10m or 1h30m, got {text!r}")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    total = 3600 * h + 60 * mi + se
    if total <= 0:
        raise UserError(f"--time-budget must be > 0, got {text!r}")
    return total
