"""A scan's whole configuration as one value: :class:`ScanConfig`, made of the specs of each floor.

Each spec is frozen and checks itself when made (data: :class:`~robustbench_cli.core.data.DataSpec`; each target:
:class:`~robustbench_cli.targets.TargetSpec`; what to run: :class:`~robustbench_cli.evaluation.config.RunSpec`;
the detector: :class:`~robustbench_cli.evaluation.config.DetectorSpec`; the reports:
:class:`~robustbench_cli.reports.writers.OutputSpec`; the gate: :class:`~robustbench_cli.gate.GateSpec`), so a
config that exists is one that can run. It reads and writes JSON and TOML (a worker receives it as is), and
``[tool.robust.scan]`` in pyproject.toml gives defaults that command-line options override (:data:`OPTIONS` maps
each option to its place in the config).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from robustbench_cli.core.data import DataSpec
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.records import from_data, to_data
from robustbench_cli.evaluation.config import DetectorSpec, RunSpec
from robustbench_cli.evaluation.shards import Shard
from robustbench_cli.gate.plan import GateSpec
from robustbench_cli.gate.rules import check_rules_against_threats, collect_rules
from robustbench_cli.reports.writers import OutputSpec
from robustbench_cli.targets import TargetSpec, name_targets

MAX_WORKERS = 4096  # Ray tasks at once
MAX_SHARDS = 100_000

# option name (as on the command line, without --) -> (section of the config, field); "targets" applies to every
# target. The options [tool.robust.scan] may set: safety opt-ins (--trust-checkpoint) stay on the command line.
OPTIONS: dict[str, tuple[str, str]] = {
    "data": ("data", "source"), "n": ("data", "n"), "offset": ("data", "offset"), "shuffle": ("data", "shuffle"),
    "data-layout": ("data", "layout"), "data-scale": ("data", "scale"), "resize": ("data", "resize"),
    "crop": ("data", "crop"),
    "threat": ("run", "threats"), "preset": ("run", "preset"), "attacks": ("run", "attacks"),
    "targeted": ("run", "targeted"), "queries": ("run", "queries"), "seed": ("run", "seed"),
    "batch-size": ("run", "batch_size"), "eot": ("run", "eot"), "certify": ("run", "certify"),
    "time-budget": ("run", "time_budget"), "threads": ("run", "threads"), "precision": ("run", "precision"),
    "weights-key": ("targets", "weights_key"), "num-classes": ("targets", "num_classes"),
    "mean": ("targets", "mean"), "std": ("targets", "std"), "layout": ("targets", "layout"),
    "output": ("targets", "output"), "access": ("targets", "access"), "device": ("targets", "device"),
    "fast-forward": ("targets", "fast_forward"),
    "report": ("outputs", "reports"), "html-examples": ("outputs", "html_examples"),
}


@dataclass(frozen=True)
class ScanConfig:
    """Everything a scan needs, checked: the targets, the data, what to run, the detector, the outputs, the gate."""

    targets: tuple[TargetSpec, ...]
    data: DataSpec = field(default_factory=DataSpec)
    run: RunSpec = field(default_factory=RunSpec)
    detector: DetectorSpec | None = None
    outputs: OutputSpec = field(default_factory=OutputSpec)
    gate: GateSpec | None = None
    resume: bool = False  # continue an interrupted scan from its state file
    # scale-out (evaluation/shards.py): this run is shard I/N of the scan; or the scan runs as `shards` shards on
    # `workers` Ray workers (on the cluster at `ray_address`, else on this machine) and ends with the merged report
    shard: str | None = None
    workers: int | None = None
    shards: int | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not self.targets:
            raise UserError("give at least one model to scan")
        self._check_scale()
        object.__setattr__(self, "targets", tuple(name_targets(list(self.targets))))  # names settle before loading
        if self.detector is not None and len(self.targets) != 1:
            raise UserError(f"--detector guards one model; {len(self.targets)} were given")
        if self.gate is not None:
            rules = collect_rules(list(self.gate.fail_under), list(self.gate.max_drop))
            check_rules_against_threats(rules, self.run.threat_models())

    def _check_scale(self) -> None:
        if self.shard is not None:
            Shard.parse(self.shard)
            if self.workers is not None:
                raise UserError("give --shard I/N (run one shard here) or --workers N (run every shard on Ray), not both")
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            raise UserError(f"--workers must be in 1..{MAX_WORKERS}, got {self.workers}")
        if self.shards is not None:
            if self.workers is None:
                raise UserError("--shards sets how many parts --workers splits the scan into; give --workers N too")
            if not 1 <= self.shards <= MAX_SHARDS:
                raise UserError(f"--shards must be in 1..{MAX_SHARDS}, got {self.shards}")
        if self.ray_address is not None and self.workers is None:
            raise UserError("--ray-address needs --workers N (the number of Ray tasks run at once)")
        if (self.shard is not None or self.workers is not None) and self.detector is not None:
            raise UserError("--detector is not sharded yet (the detector's calibration and the adaptive attacks "
                            "span the whole set): scan it without --shard/--workers")

    @property
    def sharded(self) -> bool:
        return self.shard is not None or self.workers is not None

    @property
    def state_path(self) -> Path:
        """Where the scan keeps its per-sample progress: next to the first report."""
        first = Path(self.outputs.reports[0]).expanduser()
        return first.with_name(first.name + ".state.npz")

    # --- plain data -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return to_data(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> ScanConfig:
        return from_data(cls, data, strict=True, where=where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "config") -> ScanConfig:
        return cls.from_dict(_parse(text, json.loads, json.JSONDecodeError, "JSON", where), where)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(_without_none(self.to_dict()))

    @classmethod
    def from_toml(cls, text: str, where: str = "config") -> ScanConfig:
        return cls.from_dict(_parse(text, tomllib.loads, tomllib.TOMLDecodeError, "TOML", where), where)

    # --- options, as the command line and [tool.robust.scan] give them ------------------------------------------------
    def with_options(self, options: dict[str, Any], where: str = "options") -> ScanConfig:
        """This config with ``options`` (names as in :data:`OPTIONS`) set; each part is checked again."""
        parts: dict[str, dict[str, Any]] = {}
        for name, value in options.items():
            if name not in OPTIONS:
                raise UserError(f"{where}: unknown option {name!r} (known: {', '.join(OPTIONS)})")
            section, key = OPTIONS[name]
            parts.setdefault(section, {})[key] = _tuples(value)
        cfg = self
        for section, values in parts.items():
            if section == "targets":
                cfg = replace(cfg, targets=tuple(_replace(t, values, where) for t in cfg.targets))
            else:
                cfg = replace(cfg, **{section: _replace(getattr(cfg, section), values, where)})
        return cfg


def _parse(text: str, loads: Callable[[str], Any], error: type[Exception], kind: str, where: str) -> Any:
    """A config's text as data, or one line saying where and why it does not parse."""
    try:
        return loads(text)
    except error as e:
        raise UserError(f"{where}: not valid {kind} ({e})") from None


def _tuples(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _replace(spec: Any, values: dict[str, Any], where: str) -> Any:
    """``spec`` with ``values``, type-checked as when read from a file."""
    data = {**to_data(spec), **to_data(values)}
    return from_data(type(spec), data, strict=True, where=where)


def _without_none(value: Any) -> Any:
    """TOML has no null: leave unset values out (reading them back gives the defaults, which are those None)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def pyproject_defaults(path: str | Path | None = None) -> dict[str, Any]:
    """``[tool.robust.scan]`` of a pyproject.toml (``./pyproject.toml`` when no path is given): option -> value."""
    p = Path(path) if path is not None else Path("pyproject.toml")
    if not p.is_file():
        if path is not None:
            raise UserError(f"config {str(p)!r} not found")
        return {}
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not valid TOML ({e})") from None
    table = doc.get("tool", {}).get("robust", {}).get("scan", {})
    if not isinstance(table, dict):
        raise UserError(f"{p}: [tool.robust.scan] must be a table")
    unknown = [k for k in table if k not in OPTIONS]
    if unknown:
        raise UserError(f"{p}: unknown key {unknown[0]!r} in [tool.robust.scan] (known: {', '.join(OPTIONS)})")
    return dict(table)
