"""The Python API: scan a model you hold, or run a :class:`~robustbench_cli.config.ScanConfig`::

    import robustbench_cli as robust
    report = robust.scan(model, (x, y), threats=["linf:8/255"], preset="quick")
    report.robust_accuracy()          # one target, one threat
    report.samples_frame()            # per sample, as pandas
    report.write("report.html")       # or .json, .csv, .md, .xml

``model`` is an ``nn.Module`` (a white box, with gradients), an ``onnxruntime.InferenceSession`` or a path to an
``.onnx`` file (a black box), a spec string as on the command line (``file.py:Net``, ``timm:resnet18``), a
:class:`~robustbench_cli.targets.TargetSpec`, or a list of these (side by side). ``data`` is ``(x, y)`` (arrays or
tensors, images in [0,1] or uint8, NCHW or NHWC), a built-in name (``mnist:test``, ``digits``) or a path. The
command line is a thin layer over :func:`run`, which takes a config and returns the same report.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from robustbench_cli.config import ScanConfig
from robustbench_cli.core.data import DataSpec, EvalSet, from_arrays
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.records import to_data
from robustbench_cli.evaluation.cascade import Progress
from robustbench_cli.evaluation.config import RunSpec
from robustbench_cli.evaluation.scan import ScanRun
from robustbench_cli.evaluation.scan import scan as run_targets
from robustbench_cli.evaluation.shards import Barrier, Shard, ShardSync, head
from robustbench_cli.reports import frames, html, model, writers
from robustbench_cli.reports.build import build_report
from robustbench_cli.reports.images import check_folder
from robustbench_cli.reports.model import Report
from robustbench_cli.reports.shards import block as shard_block
from robustbench_cli.reports.shards import scan_id
from robustbench_cli.targets import TargetSpec, load_target, name_targets, resolve_device
from robustbench_cli.targets.base import Target
from robustbench_cli.targets.onnxrt import OnnxTarget
from robustbench_cli.targets.pytorch import TorchTarget


@dataclass
class ScanOutcome:
    """A finished (or stopped) scan: its report, and what the caller writes besides it."""

    report: ScanReport
    examples: list = field(default_factory=list)  # checked examples shown in an HTML report
    saved: list = field(default_factory=list)  # every checked example, for --save-examples
    stopped: str | None = None  # why the scan ended early ("interrupted", "time budget spent"), None when complete
    state: Any = None  # the ScanState: delete it once the reports of a complete scan are written
    barrier: Barrier | None = None  # a shard stopped for a decision across the whole set (no report then)


def scan(model: Any, data: Any, *, threats: list[str] | tuple[str, ...], preset: str | None = None,
         attacks: list[str] | None = None, targeted: str | None = None, queries: int | None = None, seed: int = 0,
         batch_size: int = 256, n: int | None = None, offset: int = 0, shuffle: bool = False, device: str = "auto",
         mean: list[float] | None = None, std: list[float] | None = None, access: str = "auto", eot: int = 1,
         certify: bool | None = None, precision: str = "fp32", threads: int | None = None,
         progress: Progress | None = None) -> ScanReport:
    """Scan ``model`` (or a list of models) on ``data`` under ``threats`` with a preset or named attacks.

    ``mean``/``std`` normalise inside the model (epsilon stays in [0,1] pixel space); ``access`` hides gradients
    (``scores``) or scores (``labels``); ``precision`` (``bf16``, ``fp16``) runs the attacks' passes under autocast
    and still verifies every candidate in float32; the other options are those of ``robust scan``."""
    run = RunSpec(threats=tuple(threats), preset=preset, attacks=tuple(attacks) if attacks else None, threads=threads,
                  targeted=targeted, queries=queries, seed=seed, batch_size=batch_size, eot=eot, certify=certify,
                  precision=precision)
    options = dict(device=device, batch_size=batch_size, access=access,
                   mean=tuple(mean) if mean is not None else None, std=tuple(std) if std is not None else None)
    run.apply_threads()
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    targets = [_target(m, options) for m in models]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise UserError(f"the same model is given twice: {', '.join(names)}")
    evalset = _data(data, n=n, offset=offset, shuffle=shuffle, seed=seed)
    result = run_targets(targets, evalset, run, progress=progress)
    return _report(result, evalset, run, {"run": _plain(run), "api": True})


def run(cfg: ScanConfig, progress: Progress | None = None, *, state: bool = True,
        decisions: dict | None = None) -> ScanOutcome:
    """Run a scan as configured: load the data and every target, run the battery, build the report. ``state``: keep
    per-sample progress next to the first report so an interrupted scan can resume (``cfg.resume``).

    With ``cfg.shard`` (``I/N``) only that shard's samples are scanned and the report is a shard's, for ``robust
    merge``. ``decisions``: the decisions across the whole set taken so far by the driver of a sharded scan
    (evaluation/shards.py); without it, a battery that needs such decisions is refused before any work."""
    cfg.outputs.paths()  # report folders created and writable before any work
    if cfg.workers is not None:
        raise UserError("--workers runs through robustbench_cli.distributed.run_workers, not api.run")
    examples_dir = None
    if cfg.outputs.save_examples is not None:

        examples_dir = check_folder(cfg.outputs.save_examples)
    cfg.run.apply_threads()
    data = cfg.data.load(cfg.run.seed)
    sync = None
    part = data
    if cfg.shard is not None:
        shard = Shard.parse(cfg.shard)
        if decisions is None:
            check_alone(cfg.run)
        sync, part = ShardSync(shard, head(data), len(data), dict(decisions or {})), shard.take(data)
    targets = [load_target(spec) for spec in cfg.targets]
    if sync is not None:
        check_batch_independent(cfg.run, targets, data)
    result = run_targets(targets, part, cfg.run, detector=cfg.detector, like=cfg.targets[0], data_spec=cfg.data,
                         state_path=cfg.state_path if state else None, resume=cfg.resume,
                         html_examples=cfg.outputs.html_examples if cfg.outputs.wants_html else 0,
                         save_examples=examples_dir is not None, progress=progress, sync=sync)
    if result.barrier is not None:
        if decisions is None:  # check_alone() let through a battery that needs a decision: a bug, not a user error
            raise RuntimeError(f"a shard run alone stopped for a decision across the whole set ({result.barrier})")
        return ScanOutcome(ScanReport.of(_empty_report(cfg)), stopped=None, state=result.state,
                           barrier=result.barrier)
    report = _report(result, data, cfg.run, cfg.to_dict(), examples_dir)
    if sync is not None:
        report.shard = shard_block(result.evaluations, sync.shard, scan_id(scan_fingerprint(result, data, cfg.run)))
    return ScanOutcome(report, result.examples, result.saved, result.stopped, result.state)


def scan_fingerprint(result: ScanRun, data: EvalSet, run: RunSpec) -> dict:
    """What every shard of one scan shares: the models, the whole selected data, threats, battery, seed, goal and
    budget (the report of each shard carries its hash, and ``robust merge`` refuses shards whose hashes differ)."""
    keys = ("name", "kind", "sha256", "mean", "std", "access", "weights", "bpda")
    return {"targets": [{k: t.describe().get(k) for k in keys} for t in result.targets],
            "data": {k: v for k, v in data.describe().items()}, "threats": [t.name for t in run.threat_models()],
            "battery": result.battery.config(), "seed": run.seed, "targeted": run.targeted, "queries": run.queries,
            "certify": run.certify, "precision": run.precision}


def check_alone(run: RunSpec) -> None:
    """A shard run on its own (``--shard I/N``) must not need a decision across the whole set (shards.py)."""
    battery = run.battery()
    needs = [e.label for e in battery.entries if e.closest or e.undecided]
    certifies = battery.certify if run.certify is None else run.certify
    if needs or certifies:
        why = ", ".join([*(["certificates after the first attack"] if certifies else []), *needs])
        raise UserError(f"--shard: the battery {battery.id} decides across the whole set ({why}), which one shard "
                        "cannot do alone; run the shards with --workers N (Ray; it takes those decisions between "
                        "rounds, also on a cluster with --ray-address), or use a battery without them")


def check_batch_independent(run: RunSpec, targets: list[Target], data: EvalSet) -> None:
    """Refuse, before any work, an attack whose results depend on the rest of its batch: a shard's batches are not
    the whole scan's, so it could not give the same per-sample results."""
    dim = int(data.x[0].size) if len(data) else None
    battery = run.battery()
    for t in targets:
        for threat in run.threat_models():
            runnable, _ = battery.applicable_to(t, threat, dim)
            for entry, attack in runnable:
                if attack.batch_dependent:
                    raise UserError(f"{entry.label} starts from other samples of its batch, so its results depend on "
                                    f"the batch and a shard cannot reproduce them (target {t.name}); scan it "
                                    "without --shard/--workers, or leave it out with --attacks")


def _empty_report(cfg: ScanConfig) -> Report:
    """A placeholder for a shard that stopped at a barrier: it writes no report, only its state."""
    return Report(format=model.FORMAT, tool={}, created="", provenance={}, seed=cfg.run.seed, data={}, battery={},
                  options={}, targets=[], results=[])


@dataclass(kw_only=True)
class ScanReport(Report):
    """The report a Python caller gets: the plain report model, with the views a notebook wants on it. The views
    live here, above the formats they call, so that the model itself never imports a format."""

    @classmethod
    def of(cls, report: Report) -> ScanReport:
        return report if isinstance(report, ScanReport) else cls(**{f.name: getattr(report, f.name)
                                                                       for f in fields(report)})

    def summary_frame(self):
        """One row per (target, threat), as pandas."""
        return frames.summary_frame(self)

    def samples_frame(self):
        """One row per (target, threat, sample), as pandas."""
        return frames.samples_frame(self)

    def to_html(self, examples=None) -> str:
        return html.to_html(self, examples)

    def write(self, *paths: str | Path, examples=None) -> list[Path]:
        """Write the report in the formats its file names say (.json, .csv, .md, .html, .xml), all or none."""
        return writers.write_reports(self, writers.check_outputs([str(p) for p in paths]), examples=examples)


def load_report(path: str | Path) -> ScanReport:
    """A report file read back (checked against its own per-sample columns), with the views."""
    return ScanReport.of(model.load_report(path))


def _report(result: ScanRun, data: EvalSet, run: RunSpec, options: dict,
            examples_dir: Path | None = None) -> ScanReport:
    report = build_report(result.evaluations, data=data.describe(), battery=result.battery.config(), seed=run.seed,
                          device=", ".join(sorted({str(t.device) for t in result.targets})), options=options,
                          stopped=result.stopped, not_started=result.not_started)
    report.provenance["threads"] = torch.get_num_threads()  # what the times were measured with
    reverified = sum(e.reverified for e in result.evaluations)
    if reverified:  # a resumed scan: the breaks it restored were verified again on the model, one query each
        report.provenance["resume"] = {"breaks_verified_again": reverified}
    for entry, summary in zip(report.results, result.checks):
        if examples_dir is not None:
            summary.update(folder=str(examples_dir), index=str(Path(examples_dir) / "index.csv"))
        entry.examples_check = summary
    return ScanReport.of(report)


def _plain(spec: Any) -> dict:

    return to_data(spec)


def _target(model: Any, options: dict) -> Target:
    """A model object or spec as a target: modules are white boxes, sessions and .onnx files black boxes."""
    if isinstance(model, Target):
        return model
    if isinstance(model, TargetSpec):
        return load_target(model)
    if isinstance(model, (str, Path)):
        spec = TargetSpec(str(model), **options)
        return load_target(name_targets([spec])[0])
    if isinstance(model, torch.nn.Module):
        return TorchTarget(model, f"module:{type(model).__name__}", mean=options["mean"], std=options["std"],
                           batch_size=options["batch_size"], device=resolve_device(options["device"]))
    if type(model).__name__ == "InferenceSession":

        return OnnxTarget.from_session(model, batch_size=options["batch_size"], mean=options["mean"], std=options["std"])
    raise UserError(f"cannot scan a {type(model).__name__}: give an nn.Module, an onnxruntime.InferenceSession, a "
                    "path to an .onnx file or a model spec (file.py:Net, timm:NAME)")


def _data(data: Any, *, n: int | None, offset: int, shuffle: bool, seed: int) -> EvalSet:
    """Data as an :class:`EvalSet`: ``(x, y)`` arrays or tensors, a built-in name or a path, or a DataSpec."""
    if isinstance(data, EvalSet):
        return data
    if isinstance(data, DataSpec):
        return data.load(seed)
    if isinstance(data, (str, Path)):
        return DataSpec(str(data), n=n, offset=offset, shuffle=shuffle).load(seed)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return from_arrays(data[0], data[1], n=n, offset=offset, shuffle=shuffle, seed=seed)
    raise UserError(f"cannot read data from a {type(data).__name__}: give (x, y) arrays or tensors, a built-in name "
                    "(mnist:test, digits) or a path")
