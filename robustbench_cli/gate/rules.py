"""The gate: rules on a report (and a baseline), a verdict, and an exit code CI can act on.

Grammar (``--fail-under`` and ``--max-drop``, repeatable, or lists in ``[tool.robust.gate]`` of pyproject.toml)::

    RULE    := [METRIC][@THREAT]=VALUE  |  VALUE
    METRIC  := robust_accuracy (default, also "robust") | clean_accuracy ("clean")
    THREAT  := a threat model as --threat writes it: linf:8/255, l2:0.5, linf:0.3:targeted, 0.3 (Linf)
    VALUE   := fail-under: a level, 0.40 or 40%
               max-drop:   an amount with its unit, 2pp (percentage points) or 5% (of the baseline); a bare
                           number is refused, because 0.02 could mean either

No threat means every threat model of the report. When several rules of one kind apply to the same metric, threat
and target, a rule from the command line beats one from pyproject.toml, and then a rule naming the threat beats a
rule for every threat; two rules tied on both are an error.

Decisions use the number displayed: an accuracy is rounded to 0.1 percentage point (or to the precision of the
rule's value, if finer) before it is compared, so what the table shows is what was judged. Every check shows n
and a 95% Wilson interval, and says when a result is within the noise of n. ``--paired`` makes the exact McNemar
test on the per-sample flips part of ``--max-drop``: a drop fails only when it is both larger than allowed and
significant (p < alpha).

Exit codes: 0 every check passed, 1 a check failed, 2 could not judge (bad rule, missing baseline, incomparable
reports, a value a check needs is missing).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from robustbench_cli.core.errors import UserError
from robustbench_cli.reports.compare import check_comparable, display_names, paired_counts, same_threat, threat_key
from robustbench_cli.reports.stats import count_of, decimals, pct, signed, wilson
from robustbench_cli.core.threat_model import ThreatModel

EXIT_PASSED, EXIT_FAILED, EXIT_UNJUDGED = 0, 1, 2
KINDS = ("fail-under", "max-drop")
METRICS = {
    "robust_accuracy": "robust_accuracy", "robust-accuracy": "robust_accuracy", "robust": "robust_accuracy",
    "clean_accuracy": "clean_accuracy", "clean-accuracy": "clean_accuracy", "clean": "clean_accuracy",
}
METRIC_TEXT = {"robust_accuracy": "robust accuracy", "clean_accuracy": "clean accuracy"}
MAX_PLACES = 4  # decimals of a percentage a rule may ask for
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")

LEGEND = (
    "pass/FAIL: the displayed value against the rule (accuracies rounded to 0.1pp, or finer when the rule is) · "
    "n/a: could not judge · n: samples the threat applies to · 95% CI: Wilson interval for n samples · "
    "change: current minus baseline, in pp (or % of the baseline for relative rules) · "
    "paired: robust→broken/broken→robust samples and the exact McNemar p (--paired) · "
    "within noise: the difference is inside what n samples can resolve"
)


@dataclass(frozen=True)
class Rule:
    kind: str  # fail-under | max-drop
    metric: str  # robust_accuracy | clean_accuracy
    threat: ThreatModel | None  # None: every threat model of the report
    value: Decimal  # fail-under: a level in percent; max-drop: an amount in pp, or in percent of the baseline
    unit: str  # fail-under: "%"; max-drop: "pp" or "%"
    written: str = ""
    source: str = "command line"

    @property
    def canonical(self) -> str:
        where = f"@{self.threat.name}" if self.threat else ""
        return f"{self.metric}{where}={_plain(self.value)}{self.unit}"

    @property
    def places(self) -> int:
        """Decimals of the percentages this rule is decided on: 1, or the rule's own precision when finer."""
        return max(1, decimals(self.value))

    @property
    def threshold_text(self) -> str:
        return f"{_plain(self.value)}{self.unit}"


def _plain(d: Decimal) -> str:
    return format(d.normalize(), "f") if d == d else str(d)


def _option(kind: str) -> str:
    return f"--{kind}"


def parse_rule(kind: str, text: str, source: str = "command line") -> Rule:
    """Parse one rule; anything malformed is a one-line UserError naming the option and the grammar."""
    if kind not in KINDS:
        raise ValueError(kind)
    where = f"{_option(kind)} {text!r}" + ("" if source == "command line" else f" ({source})")
    hint = ("write [METRIC][@THREAT]=LEVEL, e.g. robust_accuracy@linf:8/255=0.40, or a bare 0.40" if kind == "fail-under"
            else "write [METRIC][@THREAT]=AMOUNT with a unit, e.g. robust_accuracy@linf:8/255=2pp, or a bare 2pp or 5%")
    s = str(text).strip()
    if not s:
        raise UserError(f"{where}: empty rule; {hint}")
    if s.count("=") > 1:
        raise UserError(f"{where}: more than one '='; {hint}")
    left, _, right = s.rpartition("=")
    if "@" in left:
        metric_text, _, threat_text = left.partition("@")
        if "@" in threat_text:
            raise UserError(f"{where}: more than one '@'; {hint}")
        if not threat_text.strip():
            raise UserError(f"{where}: no threat model after '@'; {hint}")
    else:
        metric_text, threat_text = left, None
    metric = METRICS.get(metric_text.strip().lower() or "robust_accuracy")
    if metric is None:
        raise UserError(f"{where}: unknown metric {metric_text.strip()!r} (known: robust_accuracy, clean_accuracy)")
    threat = None
    if threat_text is not None:
        try:
            threat = ThreatModel.parse(threat_text)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    value, unit = _parse_value(kind, right.strip(), where, hint)
    return Rule(kind, metric, threat, value, unit, s, source)


def _decimal(num: str, where: str, hint: str) -> Decimal:
    if not _NUMBER.match(num):
        raise UserError(f"{where}: {num!r} is not a number; {hint}")
    try:
        d = Decimal(num)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise UserError(f"{where}: {num!r} is not a number; {hint}") from None
    if d < 0:
        raise UserError(f"{where}: {num} is negative")
    return d


def _parse_value(kind: str, v: str, where: str, hint: str) -> tuple[Decimal, str]:
    low = v.lower().replace(" ", "")
    if kind == "fail-under":
        if low.endswith("pp"):
            raise UserError(f"{where}: a fail-under level is a fraction or a percentage (0.40 or 40%), not pp")
        if low.endswith("%"):
            level = _decimal(low[:-1], where, hint)
            if level > 100:
                raise UserError(f"{where}: {v} is above 100%")
        else:
            frac = _decimal(low, where, hint)
            if frac > 1:
                raise UserError(f"{where}: {v} is not a fraction in [0,1] (did you mean {v}%?)")
            level = frac * 100
        if decimals(level) > MAX_PLACES:
            raise UserError(f"{where}: {v} is finer than {MAX_PLACES} decimals of a percent")
        return level.normalize() if level else Decimal(0), "%"
    # max-drop
    if low.endswith("pp"):
        amount, unit = _decimal(low[:-2], where, hint), "pp"
    elif low.endswith("%"):
        amount, unit = _decimal(low[:-1], where, hint), "%"
    else:
        _decimal(low, where, hint)  # a number, but without a unit
        raise UserError(f"{where}: give the amount with a unit: {low}pp (percentage points) or {low}% (of the baseline)")
    if amount > 100:
        raise UserError(f"{where}: {v} is more than 100{unit}")
    if decimals(amount) > MAX_PLACES:
        raise UserError(f"{where}: {v} is finer than {MAX_PLACES} decimals")
    return (amount.normalize() if amount else Decimal(0)), unit


# --- pyproject.toml -------------------------------------------------------------------------------------------------
@dataclass
class GateConfig:
    fail_under: list[str]
    max_drop: list[str]
    paired: bool | None = None
    alpha: float | None = None
    source: str = ""


_CONFIG_KEYS = {"fail-under": "fail_under", "fail_under": "fail_under", "max-drop": "max_drop", "max_drop": "max_drop",
                "paired": "paired", "alpha": "alpha"}


def load_config(path: str | Path | None) -> GateConfig:
    """``[tool.robust.gate]`` of a pyproject.toml: the given file, or ./pyproject.toml when it exists."""
    explicit = path is not None
    p = Path(path) if explicit else Path("pyproject.toml")
    if not p.is_file():
        if explicit:
            raise UserError(f"config {str(p)!r} not found")
        return GateConfig([], [])
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not valid TOML ({e})") from None
    table = doc.get("tool", {}).get("robust", {}).get("gate")
    cfg = GateConfig([], [], source=f"{p} [tool.robust.gate]")
    if table is None:
        return cfg
    if not isinstance(table, dict):
        raise UserError(f"{p}: [tool.robust.gate] must be a table")
    for key, value in table.items():
        attr = _CONFIG_KEYS.get(key)
        if attr is None:
            raise UserError(f"{p}: unknown key {key!r} in [tool.robust.gate] (known: fail-under, max-drop, paired, alpha)")
        if attr in ("fail_under", "max_drop"):
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(i, (str, int, float)) and not isinstance(i, bool) for i in items):
                raise UserError(f"{p}: [tool.robust.gate] {key} must be a rule or a list of rules (strings)")
            getattr(cfg, attr).extend(str(i) for i in items)
        elif attr == "paired":
            if not isinstance(value, bool):
                raise UserError(f"{p}: [tool.robust.gate] paired must be true or false")
            cfg.paired = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise UserError(f"{p}: [tool.robust.gate] alpha must be a number between 0 and 1")
            cfg.alpha = float(value)
    return cfg


def collect_rules(fail_under: list[str] | None, max_drop: list[str] | None, config: GateConfig | None = None) -> list[Rule]:
    """Rules from the command line and from the config, parsed (the command line comes first)."""
    rules = [parse_rule("fail-under", t) for t in fail_under or []]
    rules += [parse_rule("max-drop", t) for t in max_drop or []]
    if config is not None:
        rules += [parse_rule("fail-under", t, config.source) for t in config.fail_under]
        rules += [parse_rule("max-drop", t, config.source) for t in config.max_drop]
    return rules


def check_rules_against_threats(rules: list[Rule], threats: list[ThreatModel]) -> None:
    """Before a scan starts: a rule naming a threat the scan will not run is an error, not a silent pass."""
    for rule in rules:
        if rule.threat is not None and not any(
                same_threat((t.norm.value, t.epsilon, t.targeted), _rule_key(rule)) for t in threats):
            raise UserError(f"{_option(rule.kind)} {rule.written!r}: the scan has no threat {rule.threat.name} "
                            f"(it runs {', '.join(t.name for t in threats)})")
    for t in threats:  # two rules tied on precedence for one metric and threat: refuse now, not after the scan
        seen: dict[tuple, Rule] = {}
        for rule in rules:
            if rule.threat is not None and not same_threat((t.norm.value, t.epsilon, t.targeted), _rule_key(rule)):
                continue
            key = (rule.kind, rule.metric, rule.source == "command line", rule.threat is not None)
            if key in seen:
                raise UserError(f"{_option(rule.kind)} rules {seen[key].written!r} and {rule.written!r} both set "
                                f"{rule.metric} at {t.name}; keep one")
            seen[key] = rule


def _rule_key(rule: Rule) -> tuple:
    t = rule.threat
    return t.norm.value, t.epsilon, t.targeted


# --- judging ----------------------------------------------------------------------------------------------------------
def _by_target(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {t["name"]: [] for t in report["targets"]}
    for r in report["results"]:
        out.setdefault(r["target"], []).append(r)
    return out


def _count(result: dict, metric: str) -> int:
    s = result.get("samples") or {}
    if metric == "robust_accuracy" and "robust" in s:
        eligible = s.get("eligible", [True] * len(s["robust"]))
        return int(sum(1 for r, e in zip(s["robust"], eligible) if r and e))
    return count_of(result[metric], result["n"])


def _ci_text(ci) -> str:
    return "–" if ci is None else f"{pct(ci[0])}–{pct(ci[1])}%"


def judge(report: dict, rules: list[Rule], *, baseline: dict | None = None, baseline_name: str | None = None,
          report_name: str = "report", paired: bool = False, alpha: float = 0.05) -> dict:
    """Apply ``rules`` to ``report`` (and ``baseline``); return the verdict: checks, status and exit code.

    Without a baseline, a report with several targets is its own baseline: the first target is the reference for
    ``max-drop`` and every other target is judged against it (as ``robust scan main.pt pr.pt`` would be read).
    """
    if not rules:
        raise UserError("no gate rules: give --fail-under / --max-drop, or set them in [tool.robust.gate] of pyproject.toml")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {alpha}")
    names = display_names(report)
    by_target = _by_target(report)
    targets = list(by_target)
    if not targets:
        raise UserError(f"{report_name}: the report has no targets")
    drops = [r for r in rules if r.kind == "max-drop"]
    reference: dict[str, tuple[str, dict, list[dict]]] = {}  # judged target -> (baseline label, report, its results)
    baseline_text = None
    if drops:
        if baseline is not None:
            bname = baseline_name or "baseline"
            check_comparable([(bname, baseline), (report_name, report)])
            base_by = _by_target(baseline)
            base_labels = display_names(baseline)
            for t in targets:
                if len(base_by) == 1:
                    bt = next(iter(base_by))
                elif t in base_by:
                    bt = t
                else:
                    raise UserError(f"the baseline {bname} has several targets and none is named {t}: give a baseline "
                                    "report with one target, or with the same target names")
                reference[t] = (f"{base_labels[bt]} ({bname})", baseline, base_by[bt])
            baseline_text = bname
        elif len(targets) > 1:
            first = targets[0]
            for t in targets[1:]:
                reference[t] = (names[first], report, by_target[first])
            baseline_text = f"{names[first]} (first target of {report_name})"
        else:
            raise UserError("--max-drop needs a baseline: give --baseline BASE.json, or a report of several "
                            "checkpoints (the first one is the baseline)")

    # expand every rule over targets and threats; keep the strongest rule per (kind, metric, target, threat)
    chosen: dict[tuple, tuple[tuple, Rule, dict]] = {}
    for rule in rules:
        rule_targets = targets if rule.kind == "fail-under" else [t for t in targets if t in reference]
        matched_any = False
        for t in rule_targets:
            for r in by_target[t]:
                if rule.threat is not None and not same_threat(threat_key(r), _rule_key(rule)):
                    continue
                matched_any = True
                key = (rule.kind, rule.metric, t, r["threat"])
                prio = (0 if rule.source == "command line" else 1, 0 if rule.threat is not None else 1)
                if key in chosen and chosen[key][0] == prio:
                    other = chosen[key][1]
                    raise UserError(f"{_option(rule.kind)} rules {other.written!r} and {rule.written!r} both set "
                                    f"{rule.metric} at {r['threat']}; keep one")
                if key not in chosen or prio < chosen[key][0]:
                    chosen[key] = (prio, rule, r)
        if rule.threat is not None and not matched_any:
            have = ", ".join(dict.fromkeys(r["threat"] for rs in by_target.values() for r in rs))
            raise UserError(f"{_option(rule.kind)} {rule.written!r}: the report has no threat {rule.threat.name} "
                            f"(it has {have})")

    checks = []
    for (kind, metric, t, _), (_, rule, r) in chosen.items():
        if kind == "fail-under":
            checks.append(_fail_under(rule, names[t], r))
        else:
            blabel, _, bresults = reference[t]
            b = next((x for x in bresults if same_threat(threat_key(x), threat_key(r))), None)
            checks.append(_max_drop(rule, names[t], r, blabel, b, paired, alpha))
    failed = [c for c in checks if c["status"] == "fail"]
    unjudged = [c for c in checks if c["status"] == "n/a"]
    if failed:
        status, code = "failed", EXIT_FAILED
        line = (f"gate FAILED: {len(failed)} of {len(checks)} checks failed ("
                + "; ".join(f"{c['rule']} on {c['target']} at {c['threat']}" for c in failed[:3])
                + (" …" if len(failed) > 3 else "") + ")")
    elif unjudged:
        status, code = "could not judge", EXIT_UNJUDGED
        line = f"gate could not judge: {len(unjudged)} of {len(checks)} checks have no value to judge"
    else:
        status, code = "passed", EXIT_PASSED
        line = f"gate passed: {len(checks)} of {len(checks)} checks passed"
    if unjudged and failed:
        line += f"; {len(unjudged)} could not be judged"
    return {
        "status": status, "exit_code": code, "line": line, "report": report_name, "baseline": baseline_text,
        "paired": paired, "alpha": alpha, "rules": [{"kind": r.kind, "rule": r.canonical, "written": r.written,
                                                    "source": r.source} for r in rules],
        "checks": checks,
    }


def _base_check(rule: Rule, target: str, r: dict) -> dict:
    return {
        "kind": rule.kind, "rule": rule.canonical, "written": rule.written, "source": rule.source,
        "metric": rule.metric, "threat": r["threat"], "target": target, "threshold": rule.threshold_text,
        "status": "n/a", "value": r.get(rule.metric), "shown": "–", "n": r.get("n"), "ci": None, "ci_shown": "–",
        "baseline_target": None, "baseline_value": None, "baseline_shown": None, "change": None, "paired_test": None,
        "within_noise": False, "message": "", "note": None,
    }


def _fail_under(rule: Rule, target: str, r: dict) -> dict:
    c = _base_check(rule, target, r)
    v, n = r.get(rule.metric), r.get("n") or 0
    what = f"{METRIC_TEXT[rule.metric]} of {target} at {r['threat']}"
    if v is None or not n:
        c["message"] = f"{what}: no value to judge (n={n})"
        return c
    shown = pct(v, rule.places)
    ci = wilson(_count(r, rule.metric), n)
    c.update(shown=f"{shown}%", ci=list(ci), ci_shown=_ci_text(ci))
    passed = shown >= rule.value
    c["status"] = "pass" if passed else "fail"
    c["message"] = (f"{what} is {shown}% (n={n}, 95% CI {_ci_text(ci)}), "
                    + (f"at least {rule.threshold_text}" if passed else f"under {rule.threshold_text}"))
    level = float(rule.value) / 100
    if ci[0] <= level <= ci[1]:
        c["within_noise"] = True
        c["note"] = "within noise"
        c["message"] += f"; {rule.threshold_text} lies inside the 95% CI, so with n={n} this could go either way"
    return c


def _max_drop(rule: Rule, target: str, r: dict, blabel: str, b: dict | None, paired: bool, alpha: float) -> dict:
    c = _base_check(rule, target, r)
    c["baseline_target"] = blabel
    what = f"{METRIC_TEXT[rule.metric]} of {target} at {r['threat']}"
    v, n = r.get(rule.metric), r.get("n") or 0
    bv = None if b is None else b.get(rule.metric)
    if v is None or bv is None or not n:
        c["message"] = f"{what}: no value to judge against the baseline {blabel}"
        return c
    places = rule.places
    cur, base = pct(v, places), pct(bv, places)
    drop = base - cur  # in pp, from the displayed numbers
    ci = wilson(_count(r, rule.metric), n)
    c.update(shown=f"{cur}%", ci=list(ci), ci_shown=_ci_text(ci), baseline_value=bv, baseline_shown=f"{base}%")
    if rule.unit == "pp":
        amount = drop
        c["change"] = signed(-drop, "pp")
    else:
        amount = (drop / base * 100).quantize(Decimal(1).scaleb(-places)) if base > 0 else Decimal(0)
        c["change"] = signed(-amount, "%")
    exceeded = amount > rule.value
    change_text = (f"dropped {drop}pp" if drop > 0 else ("rose " + str(-drop) + "pp" if drop < 0 else "did not change"))
    if rule.unit == "%" and drop > 0:
        change_text += f" ({amount}% of the baseline)"
    c["message"] = f"{what} {change_text}: {base}% ({blabel}) to {cur}% (n={n}, 95% CI {_ci_text(ci)})"
    noise = ci[0] <= float(bv) <= ci[1]
    if paired:
        counts = paired_counts(b, r, rule.metric)
        if counts is None:
            c["message"] += "; no per-sample results to pair, so the paired test cannot run"
            return c  # n/a
        c["paired_test"] = counts
        significant = counts["p_value"] < alpha and counts["robust_to_broken"] > counts["broken_to_robust"]
        stat = (f"{counts['robust_to_broken']} robust→broken, {counts['broken_to_robust']} broken→robust, "
                f"McNemar p={counts['p_value']:.4g}")
        if exceeded and significant:
            c["status"] = "fail"
            c["message"] += f"; more than {rule.threshold_text} and significant ({stat} < {alpha})"
        elif exceeded:
            c["status"] = "pass"
            c["within_noise"] = True
            c["message"] += f"; more than {rule.threshold_text} but not significant ({stat} ≥ {alpha})"
            c["note"] = "within noise (paired)"
        else:
            c["status"] = "pass"
            c["message"] += f"; within {rule.threshold_text} ({stat})"
        return c
    c["status"] = "fail" if exceeded else "pass"
    c["message"] += f"; {'more than' if exceeded else 'within'} {rule.threshold_text}"
    if noise and drop > 0:
        c["within_noise"] = True
        c["note"] = "within noise"
        c["message"] += "; the baseline lies inside the 95% CI, so this may be noise: --paired decides on the per-sample flips"
    return c


# --- views ------------------------------------------------------------------------------------------------------------
STATUS_TEXT = {"pass": "pass", "fail": "FAIL", "n/a": "n/a"}


def _paired_text(c: dict) -> str:
    p = c.get("paired_test")
    if not p:
        return "–"
    return f"{p['robust_to_broken']}↓ {p['broken_to_robust']}↑ p={p['p_value']:.3g}"


def _from(c: dict) -> str:
    return "" if c["source"] == "command line" else f" (from {c['source']})"


def short_rule(c: dict) -> str:
    """A check's rule in a few characters (its threat has a column of its own): ``robust ≥ 40%``, ``robust drop ≤ 2pp``."""
    metric = c["metric"].removesuffix("_accuracy")
    return f"{metric} ≥ {c['threshold']}" if c["kind"] == "fail-under" else f"{metric} drop ≤ {c['threshold']}"


def rows(verdict: dict) -> list[list[str]]:
    """The table every view shows: one row per check."""
    out = []
    for c in verdict["checks"]:
        out.append([
            STATUS_TEXT[c["status"]], short_rule(c), c["target"], c["threat"], c["shown"], str(c["n"]), c["ci_shown"],
            c["baseline_shown"] or "–", c["change"] or "–", _paired_text(c), c["note"] or "",
        ])
    return out


HEADER = ["status", "rule", "target", "threat", "value", "n", "95% CI", "baseline", "change", "paired", "note"]


def render_console(verdict: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="robust gate" + (f" · baseline {escape(verdict['baseline'])}" if verdict["baseline"] else ""))
    for h in HEADER:
        table.add_column(h, justify="right" if h in ("value", "n", "baseline", "change") else "left")
    colour = {"pass": "green", "FAIL": "bold red", "n/a": "yellow"}
    for row in rows(verdict):
        cells = [escape(x) for x in row]
        cells[0] = f"[{colour[row[0]]}]{cells[0]}[/]"
        table.add_row(*cells)
    console.print(table)
    console.print(f"[dim]{escape(LEGEND)}[/dim]")
    for c in verdict["checks"]:
        if c["status"] != "pass" or c["within_noise"]:
            tag = {"fail": "red", "n/a": "yellow", "pass": "green"}[c["status"]]
            console.print(f"[{tag}]{STATUS_TEXT[c['status']]}[/] {escape(c['rule'])}{escape(_from(c))}: "
                          f"{escape(c['message'])}", highlight=False, soft_wrap=True)
    mark = {"passed": "[bold green]", "failed": "[bold red]", "could not judge": "[bold yellow]"}[verdict["status"]]
    console.print(f"{mark}{escape(verdict['line'])}[/]", highlight=False, soft_wrap=True)


def to_markdown(verdict: dict) -> str:
    """A summary for people reading CI: suitable for $GITHUB_STEP_SUMMARY."""
    icon = {"passed": "✅", "failed": "❌", "could not judge": "⚠️"}[verdict["status"]]
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"## {icon} robust gate: {verdict['status']}", ""]
    if verdict["baseline"]:
        lines += [f"Baseline: {esc(verdict['baseline'])}" + (f"; paired test at alpha {verdict['alpha']}" if verdict["paired"] else ""), ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---:" if h in ("value", "n", "baseline", "change") else "---" for h in HEADER) + "|"]
    for row in rows(verdict):
        row = list(row)
        row[0] = {"pass": "✅ pass", "FAIL": "❌ **FAIL**", "n/a": "⚠️ n/a"}[row[0]]
        lines.append("| " + " | ".join(esc(x) if x else " " for x in row) + " |")
    lines += [""]
    notable = [c for c in verdict["checks"] if c["status"] != "pass" or c["within_noise"]]
    for c in notable:
        lines.append(f"- **{STATUS_TEXT[c['status']]}** `{c['rule']}`{esc(_from(c))}: {esc(c['message'])}")
    if notable:
        lines.append("")
    lines += [f"<sub>{LEGEND}</sub>", "", f"**{verdict['line']}**", ""]
    return "\n".join(lines)


def _gh_escape(s: str, prop: bool = False) -> str:
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        s = s.replace(":", "%3A").replace(",", "%2C")
    return s


def annotations(verdict: dict) -> list[str]:
    """GitHub Actions workflow commands: an error per failed or unjudged check, a notice for the verdict."""
    out = []
    for c in verdict["checks"]:
        if c["status"] == "pass":
            continue
        title = f"robust gate {STATUS_TEXT[c['status']]}: {c['rule']} on {c['target']} at {c['threat']}"
        out.append(f"::error title={_gh_escape(title, True)}::{_gh_escape(c['message'])}")
    level = "notice" if verdict["status"] == "passed" else "error"
    out.append(f"::{level} title={_gh_escape('robust gate', True)}::{_gh_escape(verdict['line'])}")
    return out
