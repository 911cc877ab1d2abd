"""Judging a report against gate rules: a verdict and an exit code CI can act on.

Decisions use the number displayed: an accuracy is rounded to 0.1 percentage point (or to the precision of the
rule's value, if finer) before it is compared, so what the table shows is what was judged. Every check shows n
and a 95% Wilson interval, and says when a result is within the noise of n. ``--paired`` makes the exact McNemar
test on the per-sample flips part of ``--max-drop``: a drop fails only when it is both larger than allowed and
significant (p < alpha).

Exit codes: 0 every check passed, 1 a check failed, 2 could not judge (bad rule, missing baseline, incomparable
reports, a value a check needs is missing). The report judged was read as a typed :class:`Report`, which refuses a
file whose summary contradicts its own per-sample columns: the gate never trusts a number it cannot recompute.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import cast

from robustbench_cli.core.errors import ExitCode, UserError
from robustbench_cli.gate.rules import Rule, option, rule_key
from robustbench_cli.reports.compare import check_comparable, display_names, paired_counts, same_threat
from robustbench_cli.reports.model import Check, Report, Result, Verdict
from robustbench_cli.reports.stats import pct, signed, wilson

METRIC_TEXT = {"robust_accuracy": "robust accuracy", "clean_accuracy": "clean accuracy"}


def _count(result: Result, metric: str) -> int:
    """The samples behind the metric, counted from the per-sample columns."""
    s = result.samples
    return s.robust_count() if metric == "robust_accuracy" else sum(s.clean_correct())


def _ci_text(ci) -> str:
    return "–" if ci is None else f"{pct(ci[0])}–{pct(ci[1])}%"


def _references(report: Report, baseline: Report | None, baseline_name: str | None, report_name: str,
                names: dict[str, str]) -> tuple[dict[str, tuple[str, list[Result]]], str]:
    """For ``max-drop``: each judged target's baseline (label, results), and how the verdict names the baseline."""
    by_target = report.by_target()
    targets = list(by_target)
    reference: dict[str, tuple[str, list[Result]]] = {}
    if baseline is not None:
        bname = baseline_name or "baseline"
        check_comparable([(bname, baseline), (report_name, report)])
        base_by = baseline.by_target()
        base_labels = display_names(baseline)
        for t in targets:
            if len(base_by) == 1:
                bt = next(iter(base_by))
            elif t in base_by:
                bt = t
            else:
                raise UserError(f"the baseline {bname} has several targets and none is named {t}: give a baseline "
                                "report with one target, or with the same target names")
            reference[t] = (f"{base_labels[bt]} ({bname})", base_by[bt])
        return reference, bname
    if len(targets) > 1:
        first = targets[0]
        for t in targets[1:]:
            reference[t] = (names[first], by_target[first])
        return reference, f"{names[first]} (first target of {report_name})"
    raise UserError("--max-drop needs a baseline: give --baseline BASE.json, or a report of several "
                    "checkpoints (the first one is the baseline)")


def _choose(rules: list[Rule], report: Report, reference: dict) -> dict[tuple, tuple[tuple, Rule, Result]]:
    """Every rule expanded over targets and threats, keeping the strongest rule per (kind, metric, target, threat):
    the command line beats pyproject.toml, then a rule naming the threat beats one for every threat."""
    by_target = report.by_target()
    targets = list(by_target)
    chosen: dict[tuple, tuple[tuple, Rule, Result]] = {}
    for rule in rules:
        rule_targets = targets if rule.kind == "fail-under" else [t for t in targets if t in reference]
        matched_any = False
        for t in rule_targets:
            for r in by_target[t]:
                if rule.threat is not None and not same_threat(r.key, rule_key(rule)):
                    continue
                matched_any = True
                key = (rule.kind, rule.metric, t, r.threat)
                prio = (0 if rule.source == "command line" else 1, 0 if rule.threat is not None else 1)
                if key in chosen and chosen[key][0] == prio:
                    other = chosen[key][1]
                    raise UserError(f"{option(rule.kind)} rules {other.written!r} and {rule.written!r} both set "
                                    f"{rule.metric} at {r.threat}; keep one")
                if key not in chosen or prio < chosen[key][0]:
                    chosen[key] = (prio, rule, r)
        if rule.threat is not None and not matched_any:
            have = ", ".join(dict.fromkeys(r.threat for rs in by_target.values() for r in rs))
            raise UserError(f"{option(rule.kind)} {rule.written!r}: the report has no threat {rule.threat.name} "
                            f"(it has {have})")
    return chosen


def judge(report: Report, rules: list[Rule], *, baseline: Report | None = None, baseline_name: str | None = None,
          report_name: str = "report", paired: bool = False, alpha: float = 0.05) -> Verdict:
    """Apply ``rules`` to ``report`` (and ``baseline``); return the verdict: checks, status and exit code.

    Without a baseline, a report with several targets is its own baseline: the first target is the reference for
    ``max-drop`` and every other target is judged against it (as ``robust scan main.pt pr.pt`` would be read).
    """
    if not rules:
        raise UserError("no gate rules: give --fail-under / --max-drop, or set them in [tool.robust.gate] of "
                        "pyproject.toml")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {alpha}")
    names = display_names(report)
    if not report.targets:
        raise UserError(f"{report_name}: the report has no targets")
    reference, baseline_text = ({}, None) if not any(r.kind == "max-drop" for r in rules) else \
        _references(report, baseline, baseline_name, report_name, names)
    checks = []
    for (kind, _, t, _), (_, rule, r) in _choose(rules, report, reference).items():
        if kind == "fail-under":
            checks.append(_fail_under(rule, names[t], r))
        else:
            blabel, bresults = reference[t]
            b = next((x for x in bresults if same_threat(x.key, r.key)), None)
            checks.append(_max_drop(rule, names[t], r, blabel, b, paired, alpha))
        _distrust(checks[-1], r)
    return _verdict(checks, rules, report_name, baseline_text, paired, alpha)


# findings that say the scan did not measure the model the user meant: a number from such a scan passes no gate
UNSOUND = ("random-weights", "clean-accuracy")


def _distrust(c: Check, r: Result) -> None:
    """A passing check on a result whose scan measured the wrong thing becomes "could not judge" (exit 2)."""
    bad = [d.check for d in r.diagnostics if not d.passed and d.check in UNSOUND]
    if bad and c.status == "pass":
        c.status = "n/a"
        c.message += f"; not judged: the scan's {', '.join(bad)} check failed (see docs/diagnostics.md)"


def _verdict(checks: list[Check], rules: list[Rule], report_name: str, baseline: str | None, paired: bool,
             alpha: float) -> Verdict:
    failed = [c for c in checks if c.status == "fail"]
    unjudged = [c for c in checks if c.status == "n/a"]
    if failed:
        status, code = "failed", ExitCode.GATE_FAILED
        line = (f"gate FAILED: {len(failed)} of {len(checks)} checks failed ("
                + "; ".join(f"{c.rule} on {c.target} at {c.threat}" for c in failed[:3])
                + (" …" if len(failed) > 3 else "") + ")")
    elif unjudged:
        status, code = "could not judge", ExitCode.ERROR
        line = f"gate could not judge: {len(unjudged)} of {len(checks)} checks have no value to judge"
    else:
        status, code = "passed", ExitCode.OK
        line = f"gate passed: {len(checks)} of {len(checks)} checks passed"
    if unjudged and failed:
        line += f"; {len(unjudged)} could not be judged"
    return Verdict(status=status, exit_code=int(code), line=line, report=report_name, baseline=baseline,
                   paired=paired, alpha=alpha,
                   rules=[{"kind": r.kind, "rule": r.canonical, "written": r.written, "source": r.source}
                          for r in rules],
                   checks=checks)


def _base_check(rule: Rule, target: str, r: Result) -> Check:
    return Check(kind=rule.kind, rule=rule.canonical, written=rule.written, source=rule.source, metric=rule.metric,
                 threat=r.threat, target=target, threshold=rule.threshold_text, value=getattr(r, rule.metric),
                 n=r.n)


def _judgeable(v) -> bool:
    """A metric the gate can compare: a finite number (a NaN or a missing value leaves the check undecided)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fail_under(rule: Rule, target: str, r: Result) -> Check:
    c = _base_check(rule, target, r)
    v, n = getattr(r, rule.metric), r.n
    what = f"{METRIC_TEXT[rule.metric]} of {target} at {r.threat}"
    if not _judgeable(v) or not n:
        c.message = f"{what}: no value to judge (n={n})"
        return c
    shown = cast(Decimal, pct(v, rule.places))  # v is a number here
    ci = wilson(_count(r, rule.metric), n)
    assert ci is not None  # n > 0
    c.shown, c.ci, c.ci_shown = f"{shown}%", list(ci), _ci_text(ci)
    passed = shown >= rule.value
    c.status = "pass" if passed else "fail"
    c.message = (f"{what} is {shown}% (n={n}, 95% CI {_ci_text(ci)}), "
                 + (f"at least {rule.threshold_text}" if passed else f"under {rule.threshold_text}"))
    level = float(rule.value) / 100
    if ci[0] <= level <= ci[1]:
        c.within_noise, c.note = True, "within noise"
        c.message += f"; {rule.threshold_text} lies inside the 95% CI, so with n={n} this could go either way"
    return c


def _max_drop(rule: Rule, target: str, r: Result, blabel: str, b: Result | None, paired: bool, alpha: float) -> Check:
    c = _base_check(rule, target, r)
    c.baseline_target = blabel
    what = f"{METRIC_TEXT[rule.metric]} of {target} at {r.threat}"
    v, n = getattr(r, rule.metric), r.n
    bv = None if b is None else getattr(b, rule.metric)
    if not _judgeable(v) or not _judgeable(bv) or not n:
        c.message = f"{what}: no value to judge against the baseline {blabel}"
        return c
    places = rule.places
    cur, base = cast(Decimal, pct(v, places)), cast(Decimal, pct(bv, places))  # v and bv are numbers here
    drop = base - cur  # in pp, from the displayed numbers
    ci = wilson(_count(r, rule.metric), n)
    assert ci is not None  # n > 0
    c.shown, c.ci, c.ci_shown = f"{cur}%", list(ci), _ci_text(ci)
    c.baseline_value, c.baseline_shown = bv, f"{base}%"
    if rule.unit == "pp":
        amount = drop
        c.change = signed(-drop, "pp")
    else:
        amount = (drop / base * 100).quantize(Decimal(1).scaleb(-places)) if base > 0 else Decimal(0)
        c.change = signed(-amount, "%")
    exceeded = amount > rule.value
    change_text = (f"dropped {drop}pp" if drop > 0 else ("rose " + str(-drop) + "pp" if drop < 0 else "did not change"))
    if rule.unit == "%" and drop > 0:
        change_text += f" ({amount}% of the baseline)"
    c.message = f"{what} {change_text}: {base}% ({blabel}) to {cur}% (n={n}, 95% CI {_ci_text(ci)})"
    noise = ci[0] <= float(cast(float, bv)) <= ci[1]  # bv is a finite number here (_judgeable)
    if paired:
        return _paired(c, rule, r, b, exceeded, alpha)
    c.status = "fail" if exceeded else "pass"
    c.message += f"; {'more than' if exceeded else 'within'} {rule.threshold_text}"
    if noise and drop > 0:
        c.within_noise, c.note = True, "within noise"
        c.message += ("; the baseline lies inside the 95% CI, so this may be noise: --paired decides on the per-sample "
                      "flips")
    return c


def _paired(c: Check, rule: Rule, r: Result, b: Result | None, exceeded: bool, alpha: float) -> Check:
    """``--paired``: a drop fails only when it exceeds the rule and the exact McNemar test finds it significant."""
    counts = paired_counts(b, r, rule.metric)
    if counts is None:
        c.message += "; no per-sample results to pair, so the paired test cannot run"
        return c  # n/a
    c.paired_test = counts
    significant = counts["p_value"] < alpha and counts["robust_to_broken"] > counts["broken_to_robust"]
    stat = (f"{counts['robust_to_broken']} robust→broken, {counts['broken_to_robust']} broken→robust, "
            f"McNemar p={counts['p_value']:.4g}")
    if exceeded and significant:
        c.status = "fail"
        c.message += f"; more than {rule.threshold_text} and significant ({stat} < {alpha})"
    elif exceeded:
        c.status, c.within_noise, c.note = "pass", True, "within noise (paired)"
        c.message += f"; more than {rule.threshold_text} but not significant ({stat} ≥ {alpha})"
    else:
        c.status = "pass"
        c.message += f"; within {rule.threshold_text} ({stat})"
    return c
