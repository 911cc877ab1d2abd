"""What each finding means and how grave it is: the diagnostic checks (``docs/diagnostics.md``) and the gate's rules.

Every view that ranks findings reads this one table: the SARIF rules (``reports/sarif.py``) and the HTML report's
findings (``reports/html.py``). A severity is ``error`` when the number cannot be trusted at all (the scan did not
measure the model meant, or a certificate is wrong) or a gate rule failed, ``warning`` when the evaluation is
suspect (its robust accuracy may be far too high), ``note`` for what only informs.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("error", "warning", "note")  # gravest first; SARIF's levels have the same names


@dataclass(frozen=True)
class RuleInfo:
    id: str  # stable: CI tools track findings by it
    title: str  # one line
    severity: str  # error | warning | note
    help: str  # what to do


CHECKS: dict[str, tuple[str, str, str]] = {  # check id -> (title, severity, what to do)
    "random-weights": (
        "The model runs on its random initialisation (no weights were loaded)", "error",
        "Give --weights FILE (or --pretrained for timm/torchvision); the scan did not measure a trained model."),
    "clean-accuracy": (
        "Clean accuracy cannot be told from chance", "error",
        "The scan is not measuring the model you meant: check the normalisation (--mean/--std), the layout, the "
        "weights and that the labels use the model's class order."),
    "certificate-sound": (
        "A sample proved robust was broken by a verified attack", "error",
        "The certificate is wrong for this model (a bug): rerun with --no-certify and report it."),
    "class-coverage": (
        "The selected samples cover at most half of the classes", "warning",
        "The data is stored class by class and the selection took its first rows: pass --shuffle."),
    "finite-scores": (
        "The model answered some candidates with NaN or infinite scores", "warning",
        "The model fails numerically near its inputs; breaks can hide there. Fix its numerics first."),
    "noise-vs-attack": (
        "Random noise broke samples an attack left robust", "warning",
        "The attack is not working (gradient masking, a wrong loss or too small a budget): add query attacks or "
        "raise the budget."),
    "gradients": (
        "The loss gradient is zero or not finite at probed inputs", "warning",
        "Gradient masking or non-differentiable preprocessing: pass the blocking layers to --bpda, or trust the "
        "black-box attacks more (--preset blackbox)."),
    "deterministic-outputs": (
        "The same inputs asked twice give different scores", "warning",
        "A randomised model or preprocessing: use --eot N and raise N if results move between seeds."),
    "batch-independent-outputs": (
        "The model's output depends on the rest of its batch", "warning",
        "BatchNorm or dropout left in training mode: call model.eval() before exporting or scanning."),
    "logit-outputs": (
        "The model returns probabilities, not logits", "note",
        "A saturated softmax hides margins from the attacks: export logits if you can."),
    "epsilon-monotone": (
        "Robust accuracy rises with epsilon", "warning",
        "The attacks at the larger epsilon did not work: raise steps or restarts."),
    "unbounded-epsilon": (
        "With no limit on the perturbation, an attack still leaves the model correct", "warning",
        "Masked or useless gradients, saturated scores, or a model that ignores its input: see the gradients "
        "check, try --bpda, --eot or --preset blackbox."),
    "adaptive-attack": (
        "Adaptive attacks on the detector did not beat non-adaptive ones", "warning",
        "The detector evaluation is suspect: raise steps or restarts, or use --access scores / --preset blackbox."),
    "blackbox-vs-whitebox": (
        "A query attack broke samples the gradient attacks left robust", "warning",
        "Gradient masking: find the layers that block (--bpda) or randomise (--eot) the gradient; meanwhile the "
        "black-box number is the one to trust."),
}

METRIC_WORDS = {"robust_accuracy": "robust accuracy", "clean_accuracy": "clean accuracy"}


def check_rule(check: str) -> RuleInfo:
    """The rule of a diagnostic check; a check this version does not know is a warning with a generic help."""
    title, severity, help_text = CHECKS.get(check, (f"Sanity check {check} failed", "warning",
                                                    "See docs/diagnostics.md for this check."))
    return RuleInfo(id=f"check/{check}", title=title, severity=severity, help=help_text)


def gate_rule(kind: str, metric: str) -> RuleInfo:
    """The rule of a gate check: ``fail-under`` (a level) or ``max-drop`` (a regression) on one metric."""
    words = METRIC_WORDS.get(metric, metric.replace("_", " "))
    if kind == "fail-under":
        title = f"Gate: {words} under the required level"
        help_text = (f"The {words} measured is below the level the gate requires (--fail-under). Make the model "
                     "more robust, or change the rule deliberately.")
    else:
        title = f"Gate: {words} dropped more than allowed"
        help_text = (f"The {words} fell against the baseline by more than the gate allows (--max-drop). Compare "
                     "the two reports (robust compare) to see which samples flipped.")
    return RuleInfo(id=f"gate/{kind}/{metric.replace('_', '-')}", title=title, severity="error", help=help_text)


def all_rules() -> list[RuleInfo]:
    """Every rule this version can report, in a stable order: the gate's first, then the checks."""
    gates = [gate_rule(k, m) for k in ("fail-under", "max-drop") for m in METRIC_WORDS]
    return gates + [check_rule(c) for c in CHECKS]
