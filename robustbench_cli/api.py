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
from robustbench_cli.reports import frames, html, model, writers
from robustbench_cli.reports.build import build_report
from robustbench_cli.reports.images import check_folder
from robustbench_cli.reports.model import Report
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


def scan(model: Any, data: Any, *, threats: list[str] | tuple[str, ...], preset: str | None = None,
         attacks: list[str] | None = None, targeted: str | None = None, queries: int | None = None, seed: int = 0,
         batch_size: int = 256, n: int | None = None, offset: int = 0, shuffle: bool = False, device: str = "auto",
         mean: list[float] | None = None, std: list[float] | None = None, access: str = "auto", eot: int = 1,
         certify: bool | None = None, progress: Progress | None = None) -> ScanReport:
    """Scan ``model`` (or a list of models) on ``data`` under ``threats`` with a preset or named attacks.

    ``mean``/``std`` normalise inside the model (epsilon stays in [0,1] pixel space); ``access`` hides gradients
    (``scores``) or scores (``labels``); the other options are those of ``robust scan``."""
    run = RunSpec(threats=tuple(threats), preset=preset, attacks=tuple(attacks) if attacks else None,
                  targeted=targeted, queries=queries, seed=seed, batch_size=batch_size, eot=eot, certify=certify)
    options = dict(device=device, batch_size=batch_size, access=access,
                   mean=tuple(mean) if mean is not None else None, std=tuple(std) if std is not None else None)
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    targets = [_target(m, options) for m in models]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise UserError(f"the same model is given twice: {', '.join(names)}")
    evalset = _data(data, n=n, offset=offset, shuffle=shuffle, seed=seed)
    result = run_targets(targets, evalset, run, progress=progress)
    return _report(result, evalset, run, {"run": _plain(run), "api": True})


def run(cfg: ScanConfig, progress: Progress | None = None, *, state: bool = True) -> ScanOutcome:
    """Run a scan as configured: load the data and every target, run the battery, build the report. ``state``: keep
    per-sample progress next to the first report so an interrupted scan can resume (``cfg.resume``)."""
    cfg.outputs.paths()  # report folders created and writable before any work
    examples_dir = None
    if cfg.outputs.save_examples is not None:

        examples_dir = check_folder(cfg.outputs.save_examples)
    data = cfg.data.load(cfg.run.seed)
    targets = [load_target(spec) for spec in cfg.targets]
    result = run_targets(targets, data, cfg.run, detector=cfg.detector, like=cfg.targets[0], data_spec=cfg.data,
                         state_path=cfg.state_path if state else None, resume=cfg.resume,
                         html_examples=cfg.outputs.html_examples if cfg.outputs.wants_html else 0,
                         save_examples=examples_dir is not None, progress=progress)
    report = _report(result, data, cfg.run, cfg.to_dict(), examples_dir)
    return ScanOutcome(report, result.examples, result.saved, result.stopped, result.state)


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
