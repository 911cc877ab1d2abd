"""A scan, start to finish, as a library call: targets + data + threats + battery -> report.

The CLI turns options into a :class:`ScanConfig`; everything a user can get wrong is checked here before the
first attack runs (paths, shapes, classes, epsilons, output files), so a bad input never costs an hour of work.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from robustbench_cli.battery import Progress, check_compatible, evaluate, get_battery
from robustbench_cli.data import load_eval_set
from robustbench_cli.errors import UserError
from robustbench_cli.reports import build_report
from robustbench_cli.targets import TargetOptions, load_target
from robustbench_cli.threat_model import ThreatModel


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
    target_options: list[TargetOptions] = field(default_factory=list)


@dataclass
class ScanOutcome:
    report: dict
    examples: list = field(default_factory=list)  # a handful per target and threat, for the HTML report
    saved: list = field(default_factory=list)  # every checked example, for --save-examples (written by the caller)


def _name_checkpoints(targets) -> None:
    """Checkpoints of one architecture (``net.py:Net --weights a.pt --weights b.pt``) are told apart by weights."""
    counts = Counter(t.name for t in targets)
    for t in targets:
        weights = t.details.get("weights")
        if counts[t.name] > 1 and weights:
            t.name = f"{t.name}@{Path(weights).name}"


def parse_threats(threats: list[str]) -> list[ThreatModel]:
    if not threats:
        raise UserError("give at least one threat model (--eps 0.3 or --threat linf:8/255)")
    parsed = [ThreatModel.parse(t) for t in threats]
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise UserError(f"threat models repeat: {', '.join(names)}")
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
    battery = get_battery(cfg.preset, cfg.attacks)
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
    keep = save_examples is not None or html_examples > 0
    evaluations, saved, shown, checks = [], [], [], []
    for t in targets:
        ev = evaluate(t, data, threats, battery, seed=cfg.seed, batch_size=cfg.batch_size, targeted=cfg.targeted,
                      queries=cfg.queries, progress=progress, keep_adversarials=keep)
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
    if keep:
        for entry, summary in zip(report["results"], checks):
            if save_examples is not None:
                summary.update(folder=str(save_examples), index=str(Path(save_examples) / ex.INDEX))
            entry["examples_check"] = summary
    return ScanOutcome(report, shown, saved)
