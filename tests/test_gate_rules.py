"""Gate rules: the grammar (property-based), the config table, precedence, and decisions on displayed numbers."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_factory import only_target, set_robust, synthetic_report

from robustbench_cli.core.errors import UserError
from robustbench_cli.gate.config import load_config
from robustbench_cli.gate.judge import judge
from robustbench_cli.gate.rules import collect_rules, parse_rule
from robustbench_cli.reports.model import Report
from robustbench_cli.reports.stats import mcnemar_exact, pct, wilson

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------------------------------------------------
metrics = st.sampled_from([("", "robust_accuracy"), ("robust_accuracy", "robust_accuracy"), ("robust", "robust_accuracy"),
                           ("ROBUST-ACCURACY", "robust_accuracy"), ("clean_accuracy", "clean_accuracy"),
                           ("clean", "clean_accuracy")])


@st.composite
def threats(draw):
    norm = draw(st.sampled_from(["linf", "l2"]))
    if draw(st.booleans()):
        den = draw(st.integers(2, 1000))
        num = draw(st.integers(1, den - 1))
        eps = f"{num}/{den}"
    else:
        eps = f"{draw(st.integers(1, 999)) / 1000:g}"
    targeted = draw(st.booleans())
    return f"{norm}:{eps}" + (":targeted" if targeted else "")


levels_fraction = st.integers(0, 10_000).map(lambda k: (f"{Decimal(k) / 10_000}", Decimal(k) / 100))
levels_percent = st.integers(0, 10_000).map(lambda k: (f"{Decimal(k) / 100}%", Decimal(k) / 100))
amounts = st.tuples(st.integers(0, 10_000), st.sampled_from(["pp", "%"])).map(
    lambda t: (f"{Decimal(t[0]) / 100}{t[1]}", Decimal(t[0]) / 100, t[1]))


def _text(metric: str, threat: str | None, value: str) -> str:
    left = metric + (f"@{threat}" if threat else "")
    return f"{left}={value}" if left or threat else value


# --- properties -------------------------------------------------------------------------------------------------------
@FAST
@given(metrics, st.one_of(st.none(), threats()), st.one_of(levels_fraction, levels_percent), st.booleans())
def test_fail_under_rules_parse_to_what_they_say(metric, threat, level, spaces):
    written, percent = level
    text = _text(metric[0], threat, written)
    if spaces:
        text = f"  {text} "
    rule = parse_rule("fail-under", text)
    assert rule.kind == "fail-under" and rule.metric == metric[1] and rule.unit == "%"
    assert rule.value == percent
    if threat is None:
        assert rule.threat is None
    else:
        norm, eps = threat.split(":")[:2]
        assert rule.threat.norm.value == norm and rule.threat.targeted == threat.endswith(":targeted")
        assert math.isclose(rule.threat.epsilon, float(Fraction(eps)), rel_tol=1e-12)
    again = parse_rule("fail-under", rule.canonical)  # the canonical form reads back as the same rule
    assert (again.metric, again.threat, again.value, again.unit) == (rule.metric, rule.threat, rule.value, rule.unit)


@FAST
@given(metrics, st.one_of(st.none(), threats()), amounts)
def test_max_drop_rules_keep_their_unit(metric, threat, amount):
    written, value, unit = amount
    rule = parse_rule("max-drop", _text(metric[0], threat, written))
    assert (rule.metric, rule.value, rule.unit) == (metric[1], value, unit)
    again = parse_rule("max-drop", rule.canonical)
    assert (again.metric, again.threat, again.value, again.unit) == (rule.metric, rule.threat, rule.value, rule.unit)


@FAST
@given(metrics, st.one_of(st.none(), threats()), st.integers(0, 10_000))
def test_max_drop_refuses_a_bare_number(metric, threat, k):
    number = f"{Decimal(k) / 1000}"
    with pytest.raises(UserError, match="unit"):
        parse_rule("max-drop", _text(metric[0], threat, number))


@FAST
@given(st.integers(1001, 10**6))
def test_fail_under_refuses_fractions_above_one(k):
    with pytest.raises(UserError, match="did you mean"):
        parse_rule("fail-under", f"{Decimal(k) / 1000}")


@FAST
@given(st.sampled_from(["fail-under", "max-drop"]), st.text(max_size=40))
def test_any_text_parses_or_is_a_user_error(kind, text):
    try:
        rule = parse_rule(kind, text)
    except UserError as e:
        assert "\n" not in str(e).strip()  # one line
    else:
        assert rule.kind == kind


# --- examples ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, text, match", [
    ("fail-under", "", "empty"),
    ("fail-under", "robust_accuracy@linf:0.3=0.4=0.5", "more than one '='"),
    ("fail-under", "accuracy=0.4", "unknown metric"),
    ("fail-under", "@=0.4", "no threat"),
    ("fail-under", "@linf:0.3@l2:1=0.4", "more than one '@'"),
    ("fail-under", "@linf:2=0.4", "whole"),
    ("fail-under", "@linf:abc=0.4", "not a number"),
    ("fail-under", "40pp", "not pp"),
    ("fail-under", "120%", "above 100"),
    ("fail-under", "-0.1", "negative"),
    ("fail-under", "0.4x", "not a number"),
    ("fail-under", "nan", "not a number"),
    ("fail-under", "0.1234567", "finer"),
    ("max-drop", "0.02", "unit"),
    ("max-drop", "2", "unit"),
    ("max-drop", "2 points", "not a number"),
    ("max-drop", "200pp", "more than 100"),
    ("max-drop", "-2pp", "negative"),
])
def test_bad_rules_say_what_is_wrong(kind, text, match):
    with pytest.raises(UserError, match=match):
        parse_rule(kind, text)


def test_issue_examples():
    r = parse_rule("fail-under", "robust_accuracy@linf:8/255=0.40")
    assert (r.metric, r.threat.name, r.value, r.canonical) == ("robust_accuracy", "linf:8/255", Decimal(40), "robust_accuracy@linf:8/255=40%")
    bare = parse_rule("fail-under", "0.40")
    assert bare.threat is None and bare.metric == "robust_accuracy" and bare.value == 40
    assert parse_rule("max-drop", "2pp").unit == "pp" and parse_rule("max-drop", "5%").unit == "%"
    assert parse_rule("max-drop", "clean@l2:0.5=0.5pp").value == Decimal("0.5")


# --- the config table -------------------------------------------------------------------------------------------------
def test_config_table_is_read_and_checked(tmp_path):
    p = tmp_path / "pyproject.toml"
    p.write_text('[project]\nname = "x"\n[tool.robust.gate]\nfail-under = ["robust_accuracy@linf:8/255=0.40", 0.3]\n'
                 'max_drop = "2pp"\npaired = true\nalpha = 0.01\n')
    cfg = load_config(p)
    assert cfg.fail_under == ["robust_accuracy@linf:8/255=0.40", "0.3"] and cfg.max_drop == ["2pp"]
    assert cfg.paired is True and cfg.alpha == 0.01
    rules = collect_rules(["0.5"], None, cfg)
    assert [r.source for r in rules] == ["command line", f"{p} [tool.robust.gate]", f"{p} [tool.robust.gate]",
                                         f"{p} [tool.robust.gate]"]
    for bad, match in [("fail-unde = 0.4", "unknown key"), ("paired = 1", "true or false"), ("alpha = 2", "alpha"),
                       ("max-drop = 0.02", "unit"), ("fail-under = [true]", "list of rules")]:
        p.write_text(f"[tool.robust.gate]\n{bad}\n")
        with pytest.raises(UserError, match=match):
            collect_rules(None, None, load_config(p))
    p.write_text("[tool.robust.gate\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_no_config_file_means_no_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    assert cfg.fail_under == [] and cfg.max_drop == []


# --- judging ----------------------------------------------------------------------------------------------------------
def _one(value: float, n: int = 100_000) -> Report:
    """One target whose robust accuracy is exactly ``value`` (n large enough that it is a whole count)."""
    rep = only_target(synthetic_report(n=n, threats=("linf:8/255",)), "model-a.onnx")
    k = round(value * n)
    assert k == value * n
    set_robust(rep, "model-a.onnx", "linf:8/255", [True] * k + [False] * (n - k))
    return rep


@pytest.mark.parametrize("value, passed", [(0.39951, True), (0.3995, True), (0.39949, False), (0.4, True)])
def test_fail_under_decides_on_the_displayed_number(value, passed):
    v = judge(_one(value), [parse_rule("fail-under", "0.40")])
    c = v.checks[0]
    assert c.shown == f"{pct(value)}%"
    assert (c.status == "pass") is passed and v.exit_code == (0 if passed else 1)


def test_finer_rules_are_decided_at_their_own_precision():
    v = judge(_one(0.40049), [parse_rule("fail-under", "40.05%")])
    assert v.checks[0].shown == "40.05%" and v.checks[0].status == "pass"
    v = judge(_one(0.40044), [parse_rule("fail-under", "40.05%")])
    assert v.checks[0].shown == "40.04%" and v.checks[0].status == "fail"


def test_max_drop_uses_displayed_numbers_and_units():
    base, cur = _one(0.4204), _one(0.3996)  # shown 42.0% and 40.0%: a drop of exactly 2.0pp (raw: 2.08pp)
    v = judge(cur, [parse_rule("max-drop", "2pp")], baseline=base)
    assert v.checks[0].status == "pass" and v.checks[0].change == "-2.0pp"
    v = judge(cur, [parse_rule("max-drop", "1.9pp")], baseline=base)
    assert v.checks[0].status == "fail" and v.exit_code == 1
    # relative: 2.0 / 42.0 = 4.8% of the baseline
    v = judge(cur, [parse_rule("max-drop", "5%")], baseline=base)
    assert v.checks[0].status == "pass" and v.checks[0].change == "-4.8%"
    v = judge(cur, [parse_rule("max-drop", "4.7%")], baseline=base)
    assert v.checks[0].status == "fail"


def test_noise_is_named_and_the_paired_rule_decides():
    rep = synthetic_report(n=200, threats=("linf:8/255",))
    a, b = "model-a.onnx", "model-b.onnx"
    base = [True] * 100 + [False] * 100
    # 8 robust->broken, 2 broken->robust: a 3pp drop, not significant (exact McNemar p = 0.109)
    cur = [False] * 8 + [True] * 92 + [True] * 2 + [False] * 98
    set_robust(rep, a, "linf:8/255", base)
    set_robust(rep, b, "linf:8/255", cur)
    rule = [parse_rule("max-drop", "2pp")]
    unpaired = judge(rep, rule)  # the first target is the baseline
    c = unpaired.checks[0]
    assert c.target == b and c.status == "fail" and c.within_noise and "--paired" in c.message
    paired = judge(rep, rule, paired=True)
    c = paired.checks[0]
    assert c.status == "pass" and c.within_noise and paired.exit_code == 0
    assert c.paired_test["robust_to_broken"] == 8 and c.paired_test["broken_to_robust"] == 2
    assert c.paired_test["p_value"] == pytest.approx(mcnemar_exact(8, 2)) == pytest.approx(0.109375)
    # 20 robust->broken, none back: significant, and more than 2pp
    set_robust(rep, b, "linf:8/255", [False] * 20 + [True] * 80 + [False] * 100)
    c = judge(rep, rule, paired=True).checks[0]
    assert c.status == "fail" and c.paired_test["p_value"] < 0.05


def test_precedence_command_line_and_specific_threat_win(tmp_path):
    rep = only_target(synthetic_report(n=200), "model-a.onnx")  # linf:8/255 at 44.5%, l2:0.5 lower
    p = tmp_path / "pyproject.toml"
    p.write_text('[tool.robust.gate]\nfail-under = ["0.9", "@l2:0.5=0.01"]\n')
    rules = collect_rules(["0.1"], None, load_config(p))
    v = judge(rep, rules)
    by = {c.threat: c for c in v.checks}
    assert by["linf:8/255"].written == "0.1"  # the command line beats the config's 0.9 ...
    assert by["l2:0.5"].written == "0.1"  # ... and its rule for l2 (the source comes first)
    v = judge(rep, collect_rules(None, None, load_config(p)))
    by = {c.threat: c for c in v.checks}
    assert by["linf:8/255"].written == "0.9"  # within one source, a rule for that threat beats the general rule
    assert by["l2:0.5"].written == "@l2:0.5=0.01"
    v = judge(rep, collect_rules(["0.1", "@l2:0.5=0.01"], None))
    assert {c.threat: c.written for c in v.checks} == {"linf:8/255": "0.1", "l2:0.5": "@l2:0.5=0.01"}
    with pytest.raises(UserError, match="keep one"):
        judge(rep, collect_rules(["0.1", "0.2"], None))


def test_rules_that_cannot_be_judged():
    rep = only_target(synthetic_report(n=50), "model-a.onnx")
    with pytest.raises(UserError, match="no threat linf:0.3"):
        judge(rep, [parse_rule("fail-under", "@linf:0.3=0.4")])
    with pytest.raises(UserError, match="needs a baseline"):
        judge(rep, [parse_rule("max-drop", "2pp")])
    with pytest.raises(UserError, match="no gate rules"):
        judge(rep, [])
    empty = only_target(synthetic_report(n=50), "model-a.onnx")  # no sample the threat applies to: nothing to judge
    for r in empty.results:
        r.samples.eligible = [False] * len(r.samples)
        r.n, r.clean_accuracy, r.robust_accuracy = 0, 0.0, 0.0
    v = judge(empty, [parse_rule("fail-under", "0.4")])
    assert v.status == "could not judge" and v.exit_code == 2
    assert all(c.status == "n/a" for c in v.checks)


def test_threat_spellings_match():
    rep = only_target(synthetic_report(n=50), "model-a.onnx")
    v = judge(rep, [parse_rule("fail-under", "@linf:0.0313725490196078431=0.1")])  # 8/255 written as a decimal
    assert [c.threat for c in v.checks] == ["linf:8/255"]


def test_wilson_and_mcnemar_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(0, 10), (3, 10), (40, 100), (999, 1000), (1000, 1000)]:
        lo, hi = wilson(k, n)
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)
    for b, c in [(0, 0), (5, 0), (8, 2), (30, 41), (400, 350)]:
        expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_a_gate_does_not_pass_a_scan_that_measured_the_wrong_model():
    """random-weights and clean-accuracy findings: a check that would pass is 'could not judge' (exit 2)."""
    from report_factory import synthetic_report

    from robustbench_cli.core.errors import ExitCode
    from robustbench_cli.gate.judge import judge
    from robustbench_cli.gate.rules import collect_rules
    from robustbench_cli.reports.model import Finding

    rep = synthetic_report(targets=(("m.onnx", 0.45),), threats=("linf:8/255",))
    rules = collect_rules(["robust_accuracy@linf:8/255=10%"], [])
    assert judge(rep, rules).exit_code == ExitCode.OK
    rep.results[0].diagnostics.append(Finding(check="clean-accuracy", passed=False, message="at chance"))
    verdict = judge(rep, rules)
    assert verdict.exit_code == ExitCode.ERROR and verdict.checks[0].status == "n/a"
    assert "clean-accuracy check failed" in verdict.checks[0].message
