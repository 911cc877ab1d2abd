"""Gate rules: the grammar of ``--fail-under`` and ``--max-drop``, parsed once and checked before any work.

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

How rules are judged: :mod:`robustbench_cli.gate.judge`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.gate.config import GateConfig
from robustbench_cli.reports.compare import same_threat
from robustbench_cli.reports.stats import decimals

KINDS = ("fail-under", "max-drop")
METRICS = {
    "robust_accuracy": "robust_accuracy", "robust-accuracy": "robust_accuracy", "robust": "robust_accuracy",
    "clean_accuracy": "clean_accuracy", "clean-accuracy": "clean_accuracy", "clean": "clean_accuracy",
}
METRIC_TEXT = {"robust_accuracy": "robust accuracy", "clean_accuracy": "clean accuracy"}
MAX_PLACES = 4  # decimals of a percentage a rule may ask for
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")

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


def option(kind: str) -> str:
    return f"--{kind}"


def parse_rule(kind: str, text: str, source: str = "command line") -> Rule:
    """Parse one rule; anything malformed is a one-line UserError naming the option and the grammar."""
    if kind not in KINDS:
        raise ValueError(kind)
    where = f"{option(kind)} {text!r}" + ("" if source == "command line" else f" ({source})")
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
                same_threat((t.norm.value, t.epsilon, t.targeted), rule_key(rule)) for t in threats):
            raise UserError(f"{option(rule.kind)} {rule.written!r}: the scan has no threat {rule.threat.name} "
                            f"(it runs {', '.join(t.name for t in threats)})")
    for t in threats:  # two rules tied on precedence for one metric and threat: refuse now, not after the scan
        seen: dict[tuple, Rule] = {}
        for rule in rules:
            if rule.threat is not None and not same_threat((t.norm.value, t.epsilon, t.targeted), rule_key(rule)):
                continue
            key = (rule.kind, rule.metric, rule.source == "command line", rule.threat is not None)
            if key in seen:
                raise UserError(f"{option(rule.kind)} rules {seen[key].written!r} and {rule.written!r} both set "
                                f"{rule.metric} at {t.name}; keep one")
            seen[key] = rule


def rule_key(rule: Rule) -> tuple:
    t = rule.threat
    assert t is not None  # only rules that name a threat have a key
    return t.norm.value, t.epsilon, t.targeted


