"""The commands: ``scan`` (the main job), ``demo`` (the embedded default), ``attacks`` (what can run).

``compare`` and ``gate`` live in :mod:`robustbench_cli.cli.judge`; ``scan`` shares their gate options (``cli.ci``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from robustbench_cli.cli.app import _floats, app, make_progress, user_errors
from robustbench_cli.cli.ci import Alpha, Annotate, Config, FailUnder, GatePlan, Junit, MaxDrop, Paired, Summary
from robustbench_cli.core.errors import UserError

out = Console(width=None if sys.stdout.isatty() else 150)  # logs and pipes get the whole table
err = Console(stderr=True)

DEFAULT_REPORT_DIR = Path("robust-report")

Models = Annotated[list[str], typer.Argument(
    help="Models: model.onnx (black box), file.py:factory or package.module:attr (with --weights), a TorchScript file, "
         "or timm:NAME. file.py:factory imports and runs that Python file: only point it at code you trust.",
    show_default=False)]


def _finish(report: dict, outputs: list[Path], examples=None, save: tuple[Path, list] | None = None) -> None:
    """Show the table, render every report, save the examples folder, then write the reports."""
    from robustbench_cli.reports import write_reports
    from robustbench_cli.reports.console import render_summary
    from robustbench_cli.reports.examples import save_folder
    from robustbench_cli.reports.writers import render_reports

    render_summary(report, out)
    texts = render_reports(report, outputs, examples=examples)
    if save is not None:
        save_folder(save[1], save[0])
    written = write_reports(report, outputs, texts=texts)
    out.print("reports: " + ", ".join(str(p) for p in written))


@app.command()
def scan(
    models: Models,
    data: Annotated[str, typer.Option(help="Data: mnist, mnist:test, mnist:train, digits, an .npz (x, y), an image folder "
                                           "(one sub-folder per class), an MNIST IDX images file, or a CIFAR-10 batch.")] = "mnist",
    eps: Annotated[Optional[list[str]], typer.Option("--eps", help="Linf epsilon (repeatable), e.g. 0.3 or 8/255.")] = None,
    threat: Annotated[Optional[list[str]], typer.Option("--threat", help="Threat model NORM:EPS[:targeted] (repeatable), e.g. linf:8/255, l2:1.5.")] = None,
    targeted: Annotated[Optional[str], typer.Option(help="Targeted attacks towards: random, least-likely, or a class index.")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Number of samples (after --offset).")] = None,
    offset: Annotated[int, typer.Option(help="First sample to use.")] = 0,
    shuffle: Annotated[bool, typer.Option(help="Shuffle the data with the seed before selecting.")] = False,
    data_layout: Annotated[Optional[str], typer.Option(help="Layout of the data arrays: nchw or nhwc (detected by default).")] = None,
    data_scale: Annotated[Optional[float], typer.Option(help="Divide pixel values by this (e.g. 255 for float data in 0..255).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Battery preset: quick, default, blackbox or standard (see `robust attacks`); default: default.", show_default=False)] = None,
    attacks: Annotated[Optional[str], typer.Option(help="Comma-separated attacks instead of a preset (see `robust attacks`).")] = None,
    queries: Annotated[Optional[int], typer.Option(help="Per-sample query budget for every attack (verification included).")] = None,
    weights: Annotated[Optional[list[str]], typer.Option(help="Checkpoint (state dict) per PyTorch model, in model order; loaded with weights_only=True.")] = None,
    weights_key: Annotated[Optional[str], typer.Option(help="Where the state dict sits in the checkpoint, e.g. state_dict.0.")] = None,
    trust_checkpoint: Annotated[bool, typer.Option(help="Allow full unpickling of checkpoints that need it (runs any code inside them; a warning names each such file).")] = False,
    num_classes: Annotated[Optional[int], typer.Option(help="Number of classes (timm models and factories that take it).")] = None,
    mean: Annotated[Optional[str], typer.Option(help="Per-channel mean applied inside PyTorch targets, e.g. 0.485,0.456,0.406.")] = None,
    std: Annotated[Optional[str], typer.Option(help="Per-channel std applied inside PyTorch targets.")] = None,
    layout: Annotated[Optional[str], typer.Option(help="ONNX input layout: nchw, nhwc or flat (detected by default).")] = None,
    output: Annotated[Optional[str], typer.Option(help="ONNX output to read when the model has several.")] = None,
    access: Annotated[str, typer.Option(help="What the attacker sees: auto, scores, or labels (decision-based).")] = "auto",
    eot: Annotated[int, typer.Option(help="Average every gradient attack's gradients over N draws of a randomised model (EOT); needed when the model is randomised.")] = 1,
    bpda: Annotated[Optional[str], typer.Option(help="Comma-separated submodules of a PyTorch model (names as in model.named_modules()) differentiated as the identity (BPDA, straight-through), e.g. quant.")] = None,
    surrogate: Annotated[Optional[list[str]], typer.Option(help="Surrogate model for transfer attacks, SPEC or SPEC@WEIGHTS (repeatable; several also form an ensemble), e.g. examples/architectures.py:LeNet5@lenet5.pt; loaded like a PyTorch model.")] = None,
    generator: Annotated[Optional[list[str]], typer.Option(help="Trained perturbation generator file (from `robust generator train`), run as the generator attack (repeatable).")] = None,
    detector: Annotated[Optional[str], typer.Option(help="A detector guarding the (one) model: any model spec whose output scores 'adversarial' (1 score, or 2: clean, adversarial). The scan then reports the model alone, guarded against non-adaptive attacks, and guarded against adaptive attacks on both.")] = None,
    detector_weights: Annotated[Optional[str], typer.Option(help="The detector's state dict (PyTorch detectors).")] = None,
    detector_fpr: Annotated[Optional[float], typer.Option(help="Flag this share of clean inputs: sets the detector's threshold (default 0.05).")] = None,
    detector_threshold: Annotated[Optional[float], typer.Option(help="A fixed detector threshold instead of --detector-fpr.")] = None,
    detector_calibration: Annotated[Optional[str], typer.Option(help="Clean data for the --detector-fpr threshold (default: the scanned data), e.g. mnist:train.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for every random choice; in the report.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Samples attacked at once.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N] for PyTorch targets.")] = "auto",
    report: Annotated[Optional[list[str]], typer.Option("-o", "--report", help="Report file(s); format from the suffix: .json, .csv, .md, .html, .xml (JUnit of the gate). Default robust-report/report.json.")] = None,
    save_examples: Annotated[Optional[Path], typer.Option(help="Save every adversarial example as PNG, with index.csv, in this new folder; each is re-checked on the model after 8-bit rounding.")] = None,
    html_examples: Annotated[int, typer.Option(help="Adversarial examples per target and threat shown in an .html report.")] = 6,
    fail_under: FailUnder = None,
    max_drop: MaxDrop = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Baseline report JSON for --max-drop (default with several models: the first model).")] = None,
    paired: Paired = None,
    alpha: Alpha = None,
    gate: Annotated[bool, typer.Option("--gate", help="Apply the rules of [tool.robust.gate] in pyproject.toml (read anyway when a gate option is given).")] = False,
    config: Config = None,
    junit: Junit = None,
    summary: Summary = None,
    github_annotations: Annotate = None,
    fast_forward: Annotated[bool, typer.Option(help="Answer attacks' forward-only queries on a PyTorch model from an onnxruntime export of it (CPU; checked against the model first, and every success is verified on the model itself).")] = True,
    certify: Annotated[Optional[bool], typer.Option("--certify/--no-certify", help="Prove samples robust with sound bounds (IBP, CROWN) after the first attack, and attack only the rest; the report gives the certified accuracy, a lower bound. Default: as the preset says (standard: on, stopping where the bounds cost more than they spare). PyTorch nn.Sequential Conv/Linear/ReLU nets, Linf only.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted scan from its state file (next to the first report); run the same command with --resume.")] = False,
    time_budget: Annotated[Optional[str], typer.Option(help="Stop starting new work after this long (90s, 10m, 1h30m); the report says which samples and attacks completed.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Attack MODELS with a battery and report clean and robust accuracy per threat model.

    Progress is kept in a state file next to the first report (REPORT.state.npz) while the scan runs: Ctrl-C writes
    a partial report marked incomplete, and the same command with --resume continues where it stopped.

    With gate rules (--fail-under, --max-drop, --gate) the exit code is the gate's: 0 passed, 1 failed, 2 could not judge.
    """
    from robustbench_cli.reports import check_outputs
    from robustbench_cli.reports.examples import check_folder
    from robustbench_cli.gate.rules import check_rules_against_threats
    from robustbench_cli.evaluation.scan import ScanConfig, parse_duration, parse_threats, scan as run
    from robustbench_cli.evaluation.resume import state_path_for
    from robustbench_cli.targets import TargetOptions

    with user_errors(debug):
        outputs = check_outputs(report or [str(DEFAULT_REPORT_DIR / "report.json")])
        threats = [*(eps or []), *(threat or [])] or ["linf:0.3"]
        if any(":" in e for e in (eps or [])):
            raise UserError("--eps takes a number (Linf); use --threat NORM:EPS for other norms")
        gating = bool(fail_under or max_drop or baseline or gate or config)
        plan = None
        if gating:
            plan = GatePlan(fail_under, max_drop, baseline, paired, alpha, config, junit, summary, github_annotations)
            if not plan.rules:
                raise UserError("no gate rules: give --fail-under / --max-drop, or set them in [tool.robust.gate]")
            check_rules_against_threats(plan.rules, parse_threats(threats))
            if any(r.kind == "max-drop" for r in plan.rules) and plan.baseline is None and len(models) < 2:
                raise UserError("--max-drop needs a baseline: give --baseline BASE.json, or scan several checkpoints "
                                "(the first one is the baseline)")
        elif junit or summary or paired or alpha is not None:
            raise UserError("--junit, --summary, --paired and --alpha need gate rules (--fail-under, --max-drop or --gate)")
        if html_examples < 0:
            raise UserError(f"--html-examples must be >= 0, got {html_examples}")
        if attacks is not None and not any(a.strip() for a in attacks.split(",")):
            raise UserError("--attacks needs attack names, e.g. --attacks fgsm,pgd (`robust attacks` lists them)")
        if attacks is not None and preset is not None:  # one would silently replace the other
            raise UserError(f"give --preset or --attacks, not both (--preset {preset} --attacks {attacks})")
        examples_dir = check_folder(save_examples) if save_examples is not None else None
        wants_html = any(p.suffix.lower() == ".html" for p in outputs)
        torch_models = [m for m in models if not m.lower().endswith(".onnx")]
        if weights and len(weights) != len(torch_models):
            raise UserError(f"{len(weights)} --weights for {len(torch_models)} PyTorch model(s): give one per PyTorch model, in order")
        mean_v, std_v = _floats(mean, "--mean"), _floats(std, "--std")
        if eot < 1:
            raise UserError(f"--eot must be >= 1, got {eot}")
        bpda_v = [b.strip() for b in bpda.split(",") if b.strip()] if bpda is not None else None
        if bpda is not None and not bpda_v:
            raise UserError("--bpda needs module names, e.g. --bpda quant or --bpda pre.quant,pre.jpeg")
        if bpda_v and not torch_models:
            raise UserError("--bpda replaces the gradient of PyTorch submodules; an ONNX black box has no gradients")
        wq = iter(weights or [])
        opts = [
            TargetOptions(
                weights=None if m.lower().endswith(".onnx") else next(wq, None), weights_key=weights_key,
                num_classes=num_classes, mean=None if m.lower().endswith(".onnx") else mean_v,
                std=None if m.lower().endswith(".onnx") else std_v, layout=layout, output=output, access=access,
                batch_size=batch_size, device=device, trust_checkpoint=trust_checkpoint,
                bpda=None if m.lower().endswith(".onnx") else bpda_v, fast_forward=fast_forward,
            )
            for m in models
        ]
        if (mean_v or std_v) and not torch_models and not surrogate:
            raise UserError("--mean/--std apply to PyTorch targets; an ONNX graph must contain its own normalisation")
        if detector is None and (detector_weights or detector_fpr is not None or detector_threshold is not None
                                 or detector_calibration):
            raise UserError("--detector-weights, --detector-fpr, --detector-threshold and --detector-calibration need --detector")
        cfg = ScanConfig(
            models=list(models), data=data, threats=threats, n=n, offset=offset, shuffle=shuffle, data_layout=data_layout,
            data_scale=data_scale, preset=preset or "default", attacks=[a.strip() for a in attacks.split(",") if a.strip()] if attacks else None,
            targeted=targeted, queries=queries, seed=seed, batch_size=batch_size, eot=eot, target_options=opts,
            certify=certify, state_path=str(state_path_for(outputs[0])), resume=resume,
            time_budget=parse_duration(time_budget) if time_budget is not None else None,
            detector=detector, detector_weights=detector_weights, detector_fpr=detector_fpr,
            detector_threshold=detector_threshold, detector_calibration=detector_calibration,
            surrogates=list(surrogate or []), generators=list(generator or []),
            surrogate_options=TargetOptions(weights_key=weights_key, num_classes=num_classes, mean=mean_v, std=std_v,
                                            batch_size=batch_size, device=device, trust_checkpoint=trust_checkpoint),
        )
        progress, update = make_progress(err)
        with progress:
            outcome = run(cfg, progress=update, save_examples=examples_dir,
                          html_examples=html_examples if wants_html else 0)
        rep = outcome.report
        save = (examples_dir, outcome.saved) if examples_dir is not None else None
        verdict = None
        if plan is not None:
            try:
                verdict = plan.judge(rep, "this scan")
            except UserError as e:  # the scan itself is sound: keep its reports, then say why the gate cannot judge
                _finish(rep, outputs, outcome.examples, save)
                raise UserError(f"{e} (the scan's reports were written)") from None
            rep["gate"] = verdict
        _finish(rep, outputs, outcome.examples, save)
        if examples_dir is not None:
            _examples_line(rep, examples_dir)
        if outcome.stopped is None:
            if outcome.state is not None:
                outcome.state.remove()  # the report holds everything now
        else:
            _stopped_line(outcome.stopped, outputs[0])
            if outcome.stopped == "interrupted":
                raise typer.Exit(130)
            if plan is not None:
                raise UserError("the scan stopped early (time budget spent): a partial robust accuracy is no ground "
                                "for a gate verdict (reports written, marked incomplete)")
        if verdict is not None:
            plan.emit(verdict, rep)
            plan.show(verdict)
    if verdict is not None:
        raise typer.Exit(verdict["exit_code"])


def _stopped_line(reason: str, first_report: Path) -> None:
    args = [a for a in sys.argv[1:] if a != "--resume"]
    err.print(f"[yellow]scan stopped ({reason}):[/yellow] the reports are partial and marked incomplete; "
              f"the progress is in {state_path_for_name(first_report)}. Resume with: robust {' '.join(args)} --resume",
              highlight=False, soft_wrap=True)


def state_path_for_name(report: Path) -> str:
    from robustbench_cli.evaluation.resume import state_path_for

    return str(state_path_for(report))


def _examples_line(rep: dict, folder: Path) -> None:
    checks = [r["examples_check"] for r in rep["results"] if r.get("examples_check")]
    total = sum(c["checked"] for c in checks)
    good = sum(c["still_adversarial"] for c in checks)
    line = (f"examples: {total} saved in {folder}; {good} of them still fool the model after 8-bit rounding "
            "(index.csv, column still_fools)")
    out.print(line, highlight=False)


@app.command()
def demo(
    n: Annotated[int, typer.Option("--n", help="Held-out MNIST samples to scan.")] = 200,
    eps: Annotated[Optional[str], typer.Option(help="Linf epsilon (default 0.2; 0.3 with --defences).",
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
    from robustbench_cli import zoo
    from robustbench_cli.reports import check_outputs
    from robustbench_cli.evaluation.scan import ScanConfig, parse_threats, run_scan
    from robustbench_cli.targets import TargetOptions

    eps = eps or ("0.3" if defences else "0.2")
    with user_errors(debug):
        names = ("defences", "detector") if defences else ("report",)
        outputs = check_outputs([str(report_dir / f"{name}.{ext}") for name in names for ext in ("json", "csv", "md")])
        if n <= 0:  # checked before the banner: a bad option is the only line printed
            raise UserError(f"--n must be > 0, got {n}")
        parse_threats([eps])
        common = dict(data="mnist:test", threats=[eps], n=n, shuffle=True, seed=seed)
        if not defences:
            scans = [(ScanConfig(models=[zoo.SPEC, str(zoo.ONNX)], **common,
                                 target_options=[TargetOptions(weights=str(zoo.WEIGHTS), device="cpu"), TargetOptions()]),
                      f"robust demo: the embedded MNIST CNN as a white box ({zoo.SPEC}) and as its ONNX export "
                      f"(black box), {n} held-out digits, Linf eps {eps}")]
        else:
            scans = [
                (ScanConfig(models=[zoo.SPEC] * len(zoo.DEFENCES), **common,
                            target_options=[TargetOptions(weights=str(w), device="cpu") for w in zoo.DEFENCES.values()]),
                 f"robust demo --defences: the embedded MNIST CNN trained {', '.join(zoo.DEFENCES)} "
                 f"(white boxes), {n} held-out digits, Linf eps {eps}"),
                (ScanConfig(models=[zoo.SPEC], **common, target_options=[TargetOptions(weights=str(zoo.WEIGHTS), device="cpu")],
                            detector=zoo.DETECTOR_SPEC, detector_weights=str(zoo.DETECTOR), detector_fpr=0.05),
                 "robust demo --defences: the standard CNN guarded by the zoo detector (5% of clean inputs flagged), "
                 "attacked without and with knowledge of it"),
            ]
        for i, (cfg, banner) in enumerate(scans):
            err.print(banner)
            progress, update = make_progress(err)
            with progress:
                rep = run_scan(cfg, progress=update)
            _finish(rep, outputs[3 * i: 3 * i + 3])
            if defences and i == 0:
                from robustbench_cli.reports import compare as C

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
