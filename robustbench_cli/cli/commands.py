"""The commands: ``scan`` (the main job), ``demo`` (the embedded default), ``attacks`` (what can run).

``scan`` maps its options onto a :class:`~robustbench_cli.config.ScanConfig` (``[tool.robust.scan]`` in
pyproject.toml gives defaults for the options not on the command line) and hands it to the Python API
(:func:`robustbench_cli.api.run`); what is left here is showing progress, writing files and the exit code.
``compare`` and ``gate`` live in :mod:`robustbench_cli.cli.judge`; ``scan`` shares their gate options (``cli.ci``).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from robustbench_cli.cli import ci
from robustbench_cli.cli.app import ScanProgress, app, floats, make_progress, user_errors
from robustbench_cli.cli.ci import Alpha, Annotate, Config, FailUnder, Junit, MaxDrop, Paired, Summary
from robustbench_cli.core.errors import ExitCode, UserError

if TYPE_CHECKING:
    from robustbench_cli.config import ScanConfig
    from robustbench_cli.reports.model import Report

# logs and pipes get the whole table, unless COLUMNS says how wide
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 150)
err = Console(stderr=True)

DEFAULT_REPORT_DIR = Path("robust-report")
SCALE = "Scale out"
TARGET, DATA, THREAT, RUN, OUTPUTS, GATE, DETECTOR = ("Target", "Data", "Threat and battery", "Budget and run",
                                                     "Outputs", "Gate", "Detector")

Models = Annotated[list[str], typer.Argument(
    help="Models: model.onnx (black box), file.py:factory or package.module:attr (with --weights), a TorchScript file, "
         "or timm:NAME. file.py:factory imports and runs that Python file: only point it at code you trust.",
    show_default=False)]


def _finish(report: Report, outputs: list[Path], examples=None, save: tuple[Path, list] | None = None) -> None:
    """Show the table, render every report, save the examples folder, then write the reports."""
    from robustbench_cli.reports.console import render_summary
    from robustbench_cli.reports.images import save_folder
    from robustbench_cli.reports.writers import render_reports, write_reports

    render_summary(report, out)
    texts = render_reports(report, outputs, examples=examples)
    if save is not None:
        save_folder(save[1], save[0])
    written = write_reports(report, outputs, texts=texts)
    out.print("reports: " + ", ".join(str(p) for p in written))


@app.command()
def scan(
    ctx: typer.Context,
    models: Models,
    weights: Annotated[list[str] | None, typer.Option(help="Checkpoint (state dict) per PyTorch model, in model order; loaded with weights_only=True.", rich_help_panel=TARGET)] = None,
    weights_key: Annotated[str | None, typer.Option(help="Where the state dict sits in the checkpoint, e.g. state_dict.0.", rich_help_panel=TARGET)] = None,
    trust_checkpoint: Annotated[bool, typer.Option(help="Allow full unpickling of checkpoints that need it (runs any code inside them; a warning names each such file).", rich_help_panel=TARGET)] = False,
    num_classes: Annotated[int | None, typer.Option(help="Number of classes (timm models and factories that take it).", rich_help_panel=TARGET)] = None,
    pretrained: Annotated[bool, typer.Option("--pretrained", help="timm:NAME or torchvision:NAME with its published weights, read from the local hub cache (HF_HUB_CACHE, TORCH_HOME).", rich_help_panel=TARGET)] = False,
    mean: Annotated[str | None, typer.Option(help="Per-channel mean subtracted before the model (PyTorch or ONNX), so epsilon stays in [0,1] pixels, e.g. 0.485,0.456,0.406.", rich_help_panel=TARGET)] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel std the (x - mean) is divided by before the model (PyTorch or ONNX).", rich_help_panel=TARGET)] = None,
    layout: Annotated[str | None, typer.Option(help="ONNX input layout: nchw, nhwc or flat (detected by default).", rich_help_panel=TARGET)] = None,
    output: Annotated[str | None, typer.Option(help="ONNX output to read when the model has several.", rich_help_panel=TARGET)] = None,
    access: Annotated[str, typer.Option(help="What the attacker sees: auto, gradients (open an ONNX file as a white box: converted for gradients, every answer from the file), scores, or labels (decision-based).", rich_help_panel=TARGET)] = "auto",
    bpda: Annotated[str | None, typer.Option(help="Comma-separated submodules of a PyTorch model (names as in model.named_modules()) differentiated as the identity (BPDA, straight-through), e.g. quant.", rich_help_panel=TARGET)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N] for PyTorch targets.", rich_help_panel=TARGET)] = "auto",
    fast_forward: Annotated[bool, typer.Option(help="Answer attacks' forward-only queries on a PyTorch model from an onnxruntime export of it (CPU; checked against the model first, and every success is verified on the model itself).", rich_help_panel=TARGET)] = True,
    data: Annotated[str, typer.Option(help="Data: mnist, mnist:test, mnist:train, digits, an .npz (x, y), an image folder "
                                           "(one sub-folder per class), an MNIST IDX images file, or a CIFAR-10 batch.", rich_help_panel=DATA)] = "mnist",
    n: Annotated[int | None, typer.Option("--n", help="Number of samples (after --offset).", rich_help_panel=DATA)] = None,
    offset: Annotated[int, typer.Option(help="First sample to use.", rich_help_panel=DATA)] = 0,
    shuffle: Annotated[bool, typer.Option(help="Shuffle the data with the seed before selecting.", rich_help_panel=DATA)] = False,
    data_layout: Annotated[str | None, typer.Option(help="Layout of the data arrays: nchw or nhwc (detected by default).", rich_help_panel=DATA)] = None,
    data_scale: Annotated[float | None, typer.Option(help="Divide pixel values by this (e.g. 255 for float data in 0..255).", rich_help_panel=DATA)] = None,
    resize: Annotated[str | None, typer.Option(help="Resize the selected images to HEIGHTxWIDTH (or one size) before the scan, bilinear and antialiased; recorded in the report.", rich_help_panel=DATA)] = None,
    crop: Annotated[str | None, typer.Option(help="Centre-crop the (resized) images to HEIGHTxWIDTH (or one size); recorded in the report.", rich_help_panel=DATA)] = None,
    eps: Annotated[list[str] | None, typer.Option("--eps", help="Linf epsilon (repeatable), e.g. 0.3 or 8/255.", rich_help_panel=THREAT)] = None,
    threat: Annotated[list[str] | None, typer.Option("--threat", help="Threat model NORM:EPS[:targeted] (repeatable), e.g. linf:8/255, l2:1.5.", rich_help_panel=THREAT)] = None,
    targeted: Annotated[str | None, typer.Option(help="Targeted attacks towards: random, least-likely, or a class index.", rich_help_panel=THREAT)] = None,
    preset: Annotated[str | None, typer.Option(help="Battery preset: quick, default, blackbox or standard (see `robust attacks`); default: default.", show_default=False, rich_help_panel=THREAT)] = None,
    attacks: Annotated[str | None, typer.Option(help="Comma-separated attacks instead of a preset (see `robust attacks`).", rich_help_panel=THREAT)] = None,
    eot: Annotated[int, typer.Option(help="Average every gradient attack's gradients over N draws of a randomised model (EOT); needed when the model is randomised.", rich_help_panel=THREAT)] = 1,
    surrogate: Annotated[list[str] | None, typer.Option(help="Surrogate model for transfer attacks, SPEC or SPEC@WEIGHTS (repeatable; several also form an ensemble), e.g. examples/architectures.py:LeNet5@lenet5.pt; loaded like a PyTorch model.", rich_help_panel=THREAT)] = None,
    generator: Annotated[list[str] | None, typer.Option(help="Trained perturbation generator file (from `robust generator train`), run as the generator attack (repeatable).", rich_help_panel=THREAT)] = None,
    certify: Annotated[bool | None, typer.Option("--certify/--no-certify", help="Prove samples robust with sound bounds (IBP, CROWN) after the first attack, and attack only the rest; the report gives the certified accuracy, a lower bound. Default: as the preset says (standard: on, stopping where the bounds cost more than they spare). PyTorch nn.Sequential Conv/Linear/ReLU nets, Linf only.", rich_help_panel=THREAT)] = None,
    queries: Annotated[int | None, typer.Option(help="Per-sample query budget for every attack (verification included).", rich_help_panel=RUN)] = None,
    seed: Annotated[int, typer.Option(help="Seed for every random choice; in the report.", rich_help_panel=RUN)] = 0,
    batch_size: Annotated[int, typer.Option(help="Samples attacked at once.", rich_help_panel=RUN)] = 256,
    threads: Annotated[int | None, typer.Option(help="Threads for torch and onnxruntime (default: torch's, one per core it sees); recorded in the report. On a shared or busy machine fewer threads can be much faster.", rich_help_panel=RUN)] = None,
    precision: Annotated[str, typer.Option(help="fp32, bf16 or fp16: the attacks' own forward and backward passes under autocast (PyTorch targets); every candidate is still verified in float32, and the report counts those that broke only in reduced precision.", rich_help_panel=RUN)] = "fp32",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted scan from its state file (next to the first report); run the same command with --resume.", rich_help_panel=RUN)] = False,
    time_budget: Annotated[str | None, typer.Option(help="Stop starting new work after this long (90s, 10m, 1h30m); the report says which samples and attacks completed.", rich_help_panel=RUN)] = None,
    shard: Annotated[str | None, typer.Option(help="Scan only shard I of N (I/N, e.g. 2/8: the samples at positions I-1, I-1+N, ...) and write a shard's report; join the N reports with `robust merge` (a Slurm array: one shard per task).", rich_help_panel=SCALE)] = None,
    workers: Annotated[int | None, typer.Option(help="Run the scan as shards on N Ray workers at once (pip install \"robust-scan\\[ray]\"), on this machine or on --ray-address; ends with the merged report, the same per-sample results as one process.", rich_help_panel=SCALE)] = None,
    shards: Annotated[int | None, typer.Option(help="Shards for --workers (default 4 per worker, so that slow shards do not leave workers idle).", rich_help_panel=SCALE)] = None,
    ray_address: Annotated[str | None, typer.Option(help="An existing Ray cluster for --workers: HOST:PORT, ray://HOST:PORT or auto (the run folder next to the report must be on a file system every node sees).", rich_help_panel=SCALE)] = None,
    report: Annotated[list[str] | None, typer.Option("-o", "--report", help="Report file(s); format from the suffix: .json, .csv, .md, .html, .sarif (SARIF 2.1.0 for code scanning), .xml (JUnit of the gate). Default robust-report/report.json.", rich_help_panel=OUTPUTS)] = None,
    save_examples: Annotated[Path | None, typer.Option(help="Save every adversarial example as PNG, with index.csv, in this new folder; each is re-checked on the model after 8-bit rounding.", rich_help_panel=OUTPUTS)] = None,
    html_examples: Annotated[int, typer.Option(help="Adversarial examples per target and threat shown in an .html report.", rich_help_panel=OUTPUTS)] = 6,
    fail_under: FailUnder = None,
    max_drop: MaxDrop = None,
    baseline: Annotated[Path | None, typer.Option(help="Baseline report JSON for --max-drop (default with several models: the first model).", rich_help_panel=GATE)] = None,
    paired: Paired = None,
    alpha: Alpha = None,
    gate: Annotated[bool, typer.Option("--gate", help="Apply the rules of \\[tool.robust.gate] in pyproject.toml (read anyway when a gate option is given).", rich_help_panel=GATE)] = False,
    config: Config = None,
    junit: Junit = None,
    summary: Summary = None,
    github_annotations: Annotate = None,
    detector: Annotated[str | None, typer.Option(help="A detector guarding the (one) model: any model spec whose output scores 'adversarial' (1 score, or 2: clean, adversarial). The scan then reports the model alone, guarded against non-adaptive attacks, and guarded against adaptive attacks on both.", rich_help_panel=DETECTOR)] = None,
    detector_weights: Annotated[str | None, typer.Option(help="The detector's state dict (PyTorch detectors).", rich_help_panel=DETECTOR)] = None,
    detector_fpr: Annotated[float | None, typer.Option(help="Flag this share of clean inputs: sets the detector's threshold (default 0.05).", rich_help_panel=DETECTOR)] = None,
    detector_threshold: Annotated[float | None, typer.Option(help="A fixed detector threshold instead of --detector-fpr.", rich_help_panel=DETECTOR)] = None,
    detector_calibration: Annotated[str | None, typer.Option(help="Clean data for the --detector-fpr threshold (default: the scanned data), e.g. mnist:train.", rich_help_panel=DETECTOR)] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Attack MODELS with a battery and report clean and robust accuracy per threat model.

    Progress is kept in a state file next to the first report (REPORT.state.npz) while the scan runs: Ctrl-C writes
    a partial report marked incomplete, and the same command with --resume continues where it stopped.

    With gate rules (--fail-under, --max-drop, --gate) the exit code is the gate's: 0 passed, 1 failed, 2 could not judge.
    """
    with user_errors(debug), make_progress(err) as progress:  # on screen before torch, the data or a model loads
        cfg = scan_config(ctx, dict(ctx.params))
        verdict = run_scan(cfg, progress)
    if verdict is not None:
        raise typer.Exit(verdict.exit_code)


def scan_config(ctx: typer.Context, p: dict[str, Any]) -> ScanConfig:
    """The command line's options as a config; ``[tool.robust.scan]`` fills the options not given on it."""
    from robustbench_cli.attacks.transfer import surrogate_spec
    from robustbench_cli.config import ScanConfig, pyproject_defaults
    from robustbench_cli.core.data import DataSpec, parse_size
    from robustbench_cli.evaluation.config import DetectorSpec, RunSpec
    from robustbench_cli.reports.writers import OutputSpec
    from robustbench_cli.targets import TargetSpec

    defaults = pyproject_defaults(p["config"])  # [tool.robust.scan], read once
    if any(":" in e for e in p["eps"] or []):
        raise UserError("--eps takes a number (Linf); use --threat NORM:EPS for other norms")
    torch_models = [m for m in p["models"] if not m.lower().endswith(".onnx")]
    if p["weights"] and len(p["weights"]) != len(torch_models):
        raise UserError(f"{len(p['weights'])} --weights for {len(torch_models)} PyTorch model(s): give one per PyTorch "
                        "model, in order")
    if p["pretrained"] and not any(m.startswith(("timm:", "torchvision:", "hf-hub:")) for m in p["models"]):
        raise UserError("--pretrained applies to timm:NAME and torchvision:NAME; give other models --weights FILE")
    mean, std = _tuple(floats(p["mean"], "--mean")), _tuple(floats(p["std"], "--std"))
    bpda = None if p["bpda"] is None else tuple(b.strip() for b in p["bpda"].split(",") if b.strip())
    if bpda is not None and not bpda:
        raise UserError("--bpda needs module names, e.g. --bpda quant or --bpda pre.quant,pre.jpeg")
    if bpda and not torch_models:
        raise UserError("--bpda replaces the gradient of PyTorch submodules; an ONNX black box has no gradients")
    loading = dict(weights_key=p["weights_key"], num_classes=p["num_classes"], batch_size=p["batch_size"],
                   device=p["device"], trust_checkpoint=p["trust_checkpoint"])
    weights = iter(p["weights"] or [])
    targets = [TargetSpec(m, mean=mean, std=std, layout=p["layout"], output=p["output"], access=p["access"], **loading)
               if m.lower().endswith(".onnx") else
               TargetSpec(m, weights=next(weights, None), pretrained=p["pretrained"] and m.startswith(
                   ("timm:", "torchvision:", "hf-hub:")), mean=mean, std=std, layout=p["layout"], output=p["output"],
                          access=p["access"], bpda=bpda, fast_forward=p["fast_forward"], **loading)
               for m in p["models"]]
    if p["detector"] is None and (p["detector_weights"] or p["detector_fpr"] is not None
                                  or p["detector_threshold"] is not None or p["detector_calibration"]):
        raise UserError("--detector-weights, --detector-fpr, --detector-threshold and --detector-calibration need "
                        "--detector")
    gating = bool(p["fail_under"] or p["max_drop"] or p["baseline"] or p["gate"] or p["config"])
    if not gating and (p["junit"] or p["summary"] or p["paired"] or p["alpha"] is not None):
        raise UserError("--junit, --summary, --paired and --alpha need gate rules (--fail-under, --max-drop or --gate)")
    cfg = ScanConfig(
        targets=tuple(targets),
        data=DataSpec(p["data"], n=p["n"], offset=p["offset"], shuffle=p["shuffle"], layout=p["data_layout"],
                      scale=p["data_scale"], resize=None if p["resize"] is None else parse_size(p["resize"], "--resize"),
                      crop=None if p["crop"] is None else parse_size(p["crop"], "--crop")),
        run=RunSpec(
            threats=tuple([*(p["eps"] or []), *(p["threat"] or [])]) or _threats_of(defaults), preset=p["preset"],
            attacks=None if p["attacks"] is None else tuple(a.strip() for a in p["attacks"].split(",")),
            targeted=p["targeted"], queries=p["queries"], seed=p["seed"], batch_size=p["batch_size"], eot=p["eot"],
            certify=p["certify"], time_budget=None if p["time_budget"] is None else parse_duration(p["time_budget"]),
            threads=p["threads"], precision=p["precision"],
            surrogates=tuple(surrogate_spec(s, mean=mean, std=std, **loading) for s in p["surrogate"] or []),
            generators=tuple(p["generator"] or [])),
        detector=None if p["detector"] is None else DetectorSpec(
            TargetSpec(p["detector"], weights=p["detector_weights"]), fpr=p["detector_fpr"],
            threshold=p["detector_threshold"], calibration=p["detector_calibration"]),
        outputs=OutputSpec(tuple(p["report"] or [str(DEFAULT_REPORT_DIR / "report.json")]),
                           save_examples=None if p["save_examples"] is None else str(p["save_examples"]),
                           html_examples=p["html_examples"]),
        gate=ci.gate_spec(p["fail_under"], p["max_drop"], p["baseline"], p["paired"], p["alpha"], p["config"],
                          p["junit"], p["summary"], p["github_annotations"]) if gating else None,
        resume=p["resume"],
        shard=p["shard"], workers=p["workers"], shards=p["shards"], ray_address=p["ray_address"],
    )
    # by name: typer may carry its own copy of click, whose ParameterSource is another enum than click.core's
    given = {name for name in p if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}
    taken = {"threat": {"eps", "threat"}, "report": {"report"}, "preset": {"preset", "attacks"},
             "attacks": {"preset", "attacks"}}
    unset = {k: v for k, v in defaults.items() if not taken.get(k, {k.replace("-", "_")}) & given}
    return cfg.with_options(unset, where=f"{p['config'] or 'pyproject.toml'} [tool.robust.scan]") if unset else cfg


def _default_threats(config: str | None) -> tuple[str, ...]:
    """The threats of ``[tool.robust.scan]`` when the command line gives none (epsilon has no built-in default)."""
    from robustbench_cli.config import pyproject_defaults

    return _threats_of(pyproject_defaults(config))


def _threats_of(defaults: dict[str, Any]) -> tuple[str, ...]:
    value = defaults.get("threat", ())
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def _tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


def run_scan(cfg: ScanConfig, progress: ScanProgress):
    """Run the scan, write its reports, judge its gate; the verdict (None without a gate). ``progress``: the
    display, already on screen; it stops when the scan ends, before the table."""
    from robustbench_cli.gate.plan import GatePlan

    outputs = cfg.outputs.paths()
    plan = GatePlan(cfg.gate) if cfg.gate is not None else None
    if plan is not None and not plan.rules:
        raise UserError("no gate rules: give --fail-under / --max-drop, or set them in [tool.robust.gate]")
    if plan is not None and any(r.kind == "max-drop" for r in plan.rules) and plan.baseline is None \
            and len(cfg.targets) < 2:
        raise UserError("--max-drop needs a baseline: give --baseline BASE.json, or scan several checkpoints "
                        "(the first one is the baseline)")
    if plan is not None:
        from robustbench_cli.gate.rules import check_rules_against_threats

        check_rules_against_threats(plan.rules, cfg.run.threat_models())
    from robustbench_cli.core.io import output_lock
    from robustbench_cli.evaluation.interrupts import terminate_as_interrupt

    terminate_as_interrupt()
    with output_lock(outputs[0]):  # held until the reports are written: one scan per report, and per state file
        return _run_and_write(cfg, plan, outputs, progress)


def _run_and_write(cfg: ScanConfig, plan, outputs: list[Path], progress: ScanProgress):
    from robustbench_cli import api

    with progress:
        if cfg.workers is not None:
            from robustbench_cli import distributed

            try:
                outcome = distributed.run_workers(cfg, progress=progress.update)
            except distributed.Interrupted as stop:
                progress.finish("interrupted")
                args = [a for a in sys.argv[1:] if a != "--resume"]
                err.print(f"[yellow]scan stopped (interrupted):[/yellow] no report yet; every finished shard and every "
                          f"shard's progress is in {stop.folder}. Resume with: robust {shlex.join(args)} --resume",
                          highlight=False, soft_wrap=True)
                raise typer.Exit(ExitCode.INTERRUPTED) from None
        else:
            outcome = api.run(cfg, progress=progress.update)
        progress.finish(outcome.stopped)
    rep = outcome.report
    if outcome.stopped is not None and any(p.exists() for p in outputs):
        # a stopped scan never replaces reports already there: its partial reports go beside them
        outputs = [p.with_name(f"{p.stem}.partial{p.suffix}") for p in outputs]
    examples_dir = Path(cfg.outputs.save_examples) if cfg.outputs.save_examples is not None else None
    save = (examples_dir, outcome.saved) if examples_dir is not None else None
    verdict = None
    if plan is not None:
        try:
            verdict = plan.judge(rep, "this scan")
        except UserError as e:  # the scan itself is sound: keep its reports, then say why the gate cannot judge
            _finish(rep, outputs, outcome.examples, save)
            raise UserError(f"{e} (the scan's reports were written)") from None
        rep.gate = verdict
    _finish(rep, outputs, outcome.examples, save)
    if examples_dir is not None:
        _examples_line(rep, examples_dir)
    if outcome.stopped is None:
        if outcome.state is not None:
            outcome.state.remove()  # the report holds everything now
    else:
        _stopped_line(outcome.stopped, cfg.state_path)
        if outcome.stopped == "interrupted":
            raise typer.Exit(ExitCode.INTERRUPTED)
        if plan is not None:
            raise UserError("the scan stopped early (time budget spent): a partial robust accuracy is no ground "
                            "for a gate verdict (reports written, marked incomplete)")
    if verdict is not None and plan is not None:
        ci.emit(plan, verdict, rep)
        ci.show(verdict)
    return verdict


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


def _stopped_line(reason: str, state: Path) -> None:
    args = [a for a in sys.argv[1:] if a != "--resume"]
    err.print(f"[yellow]scan stopped ({reason}):[/yellow] the reports are partial and marked incomplete; "
              f"the progress is in {state}. Resume with: robust {shlex.join(args)} --resume",
              highlight=False, soft_wrap=True)


def _examples_line(rep: Report, folder: Path) -> None:
    checks = [r.examples_check for r in rep.results if r.examples_check]
    total = sum(c["checked"] for c in checks)
    good = sum(c["still_adversarial"] for c in checks)
    line = (f"examples: {total} saved in {folder}; {good} of them still fool the model after 8-bit rounding "
            "(index.csv, column still_fools)")
    out.print(line, highlight=False)


@app.command()
def demo(
    n: Annotated[int, typer.Option("--n", help="Held-out MNIST samples to scan.")] = 200,
    eps: Annotated[str | None, typer.Option(help="Linf epsilon (default 0.2; 0.3 with --defences).",
                                               show_default=False)] = None,
    defences: Annotated[bool, typer.Option("--defences", help="Compare the defence zoo instead: the embedded CNN "
                                           "trained standard, PGD and logit-paired, then the standard one guarded by "
                                           "a detector, non-adaptive and adaptive.")] = False,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    report_dir: Annotated[Path, typer.Option(help="Folder for the reports (report.*; with --defences defences.* and "
                                                  "detector.*).")] = DEFAULT_REPORT_DIR,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Scan the embedded MNIST CNN as a white box (PyTorch) and as its ONNX export (black box), side by side.

    Offline and CPU-only: the model ships inside the package, trained on mnist:train; it is scanned on mnist:test.
    With --defences: the defence zoo shipped with it, side by side with the same data, seed and battery.
    """
    from robustbench_cli import api, zoo
    from robustbench_cli.config import ScanConfig
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.evaluation.config import DetectorSpec, RunSpec, parse_threats
    from robustbench_cli.reports import compare as C
    from robustbench_cli.reports.writers import OutputSpec
    from robustbench_cli.targets import TargetSpec

    eps = eps or ("0.3" if defences else "0.2")
    with user_errors(debug):
        names = ("defences", "detector") if defences else ("report",)
        outputs = [OutputSpec(tuple(str(report_dir / f"{name}.{ext}") for ext in ("json", "csv", "md")))
                   for name in names]
        for o in outputs:
            o.paths()
        if n <= 0:  # checked before the banner: a bad option is the only line printed
            raise UserError(f"--n must be > 0, got {n}")
        parse_threats([eps])
        common: dict[str, Any] = dict(data=DataSpec("mnist:test", n=n, shuffle=True),
                                      run=RunSpec(threats=(eps,), seed=seed))
        white = TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), device="cpu")
        if not defences:
            scans = [(ScanConfig(targets=(white, TargetSpec(str(zoo.ONNX))), outputs=outputs[0], **common),
                      f"robust demo: the embedded MNIST CNN as a white box ({zoo.SPEC}) and as its ONNX export "
                      f"(black box), {n} held-out digits, Linf eps {eps}")]
        else:
            scans = [
                (ScanConfig(targets=tuple(TargetSpec(zoo.SPEC, weights=str(w), device="cpu")
                                          for w in zoo.DEFENCES.values()), outputs=outputs[0], **common),
                 f"robust demo --defences: the embedded MNIST CNN trained {', '.join(zoo.DEFENCES)} "
                 f"(white boxes), {n} held-out digits, Linf eps {eps}"),
                (ScanConfig(targets=(white,), outputs=outputs[1], **common,
                            detector=DetectorSpec(TargetSpec(zoo.DETECTOR_SPEC, weights=str(zoo.DETECTOR)), fpr=0.05)),
                 "robust demo --defences: the standard CNN guarded by the zoo detector (5% of clean inputs flagged), "
                 "attacked without and with knowledge of it"),
            ]
        for i, (cfg, banner) in enumerate(scans):
            err.print(banner)
            with make_progress(err) as progress:
                outcome = api.run(cfg, progress=progress.update, state=False)
                progress.finish(outcome.stopped)
            rep = outcome.report
            _finish(rep, cfg.outputs.paths())
            if defences and i == 0:
                C.render_console(C.compare(rep), out)


@app.command("attacks")
def list_attacks():
    """List every attack with the norms it supports and what it needs from a target."""
    from robustbench_cli.attacks import REGISTRY
    from robustbench_cli.evaluation import PRESETS
    from robustbench_cli.targets.base import Capability

    table = Table(title="robust attacks")
    for c in ("attack", "family", "norms", "needs", "in presets", "what it does"):
        table.add_column(c)
    for name, cls in sorted(REGISTRY.items()):
        presets = [p.id for p in PRESETS.values() if any(e.attack == name for e in p.entries)]
        table.add_row(name, cls.family, ", ".join(sorted(n.value for n in cls.norms)),
                      ", ".join(Capability.names(cls.requires)), ", ".join(presets) or "–", cls.summary)
    out.print(table)
