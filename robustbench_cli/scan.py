"""A scan, start to finish, as a library call: targets + data + threats + battery -> report.

The CLI turns options into a :class:`ScanConfig`; everything a user can get wrong is checked here before the
first attack runs (paths, shapes, classes, epsilons, output files), so a bad input never costs an hour of work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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


def parse_threats(threats: list[str]) -> list[ThreatModel]:
    if not threats:
        raise UserError("give at least one threat model (--eps 0.3 or --threat linf:8/255)")
    parsed = [ThreatModel.parse(t) for t in threats]
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise UserError(f"threat models repeat: {', '.join(names)}")
    return parsed


def run_scan(cfg: ScanConfig, progress: Progress | None = None) -> dict:
    threats = parse_threats(cfg.threats)
    battery = get_battery(cfg.preset, cfg.attacks)
    if cfg.data_layout not in (None, "nchw", "nhwc"):
        raise UserError(f"--data-layout must be nchw or nhwc, got {cfg.data_layout!r}")
    data = load_eval_set(cfg.data, n=cfg.n, offset=cfg.offset, shuffle=cfg.shuffle, seed=cfg.seed,
                         layout=cfg.data_layout, scale=cfg.data_scale)
    opts = cfg.target_options or [TargetOptions() for _ in cfg.models]
    targets = [load_target(m, o) for m, o in zip(cfg.models, opts)]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise UserError(f"the same model is given twice: {', '.join(names)}")
    for t in targets:  # every target must fit the data before the first attack starts
        check_compatible(t, data)
        for threat in threats:
            threat.check_against_dim(int(data.x[0].size))
    evaluations = [
        evaluate(t, data, threats, battery, seed=cfg.seed, batch_size=cfg.batch_size, targeted=cfg.targeted,
                 queries=cfg.queries, progress=progress)
        for t in targets
    ]
    options = {k: v for k, v in asdict(cfg).items() if k not in ("target_options", "models")}
    options["targets"] = [{"model": m, **{k: v for k, v in asdict(o).items() if v is not None}} for m, o in zip(cfg.models, opts)]
    return build_report(evaluations, data=data.describe(), battery=battery.config(), seed=cfg.seed,
                        device=", ".join(sorted({str(t.device) for t in targets})), options=options)
