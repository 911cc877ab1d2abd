"""Snapshots of what people and CI read: the console tables, the Markdown views and the JUnit XML.

The reports are synthetic and pinned (fixed timestamp, versions and paths), so the text is deterministic.
Regenerate after an intended change with ``python -m pytest tests/test_report_snapshots.py --update-snapshots``
(or ``ROBUST_UPDATE_SNAPSHOTS=1``) and review the diff of tests/snapshots/.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from report_factory import only_target, set_robust, synthetic_report
from rich.console import Console

from robustbench_cli.gate.judge import judge
from robustbench_cli.gate.rules import collect_rules
from robustbench_cli.reports import compare as C
from robustbench_cli.reports import verdict as V
from robustbench_cli.reports.console import render_summary
from robustbench_cli.reports.junit import to_junit
from robustbench_cli.reports.model import Report, Verdict
from robustbench_cli.reports.writers import to_markdown


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=150, color_system=None, force_terminal=False, highlight=False, emoji=False,
                   legacy_windows=False), buf


@pytest.fixture(scope="module")
def report() -> Report:
    rep = synthetic_report(n=200)
    # a known paired picture at linf: 100 robust in A; B loses 12 of them and gains 3
    set_robust(rep, "model-a.onnx", "linf:8/255", [True] * 100 + [False] * 100)
    set_robust(rep, "model-b.onnx", "linf:8/255", [False] * 12 + [True] * 88 + [True] * 3 + [False] * 97)
    return rep


@pytest.fixture(scope="module")
def verdict(report) -> Verdict:
    rules = collect_rules(["robust_accuracy@linf:8/255=0.40", "clean=0.9"], ["2pp", "clean@l2:0.5=5%"])
    return judge(report, rules, report_name="report.json", paired=True)


def test_console_summary(report, snapshot):
    console, buf = _console()
    render_summary(report, console)
    snapshot("console_summary.txt", buf.getvalue())


def test_console_compare(report, snapshot):
    console, buf = _console()
    C.render_console(C.compare(report), console)
    snapshot("console_compare.txt", buf.getvalue())


def test_console_gate(verdict, snapshot):
    console, buf = _console()
    V.render_console(verdict, console)
    text = buf.getvalue()
    assert text.rstrip().splitlines()[-1].startswith("gate FAILED")  # the verdict is the last line
    snapshot("console_gate.txt", text)


def test_markdown_report(report, verdict, snapshot):
    snapshot("report.md", to_markdown(replace(report, gate=verdict)))


def test_markdown_comparison(report, snapshot):
    a, b = only_target(report, "model-a.onnx"), only_target(report, "model-b.onnx")
    merged, warnings = C.merge_reports([("main/report.json", a), ("pr/report.json", b)])
    snapshot("comparison.md", C.to_markdown(C.compare(merged, warnings)))


def test_markdown_gate_summary(verdict, snapshot):
    snapshot("gate_summary.md", V.to_markdown(verdict))


def test_junit(report, verdict, snapshot):
    xml = to_junit(verdict, timestamp=report.created)
    root = ET.fromstring(xml)
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(verdict.checks)  # one test case per check
    assert int(root.get("failures")) == sum(c.status == "fail" for c in verdict.checks) > 0
    snapshot("gate.junit.xml", xml)


def test_github_annotations(verdict, snapshot):
    lines = V.annotations(verdict)
    assert all(line.startswith(("::error title=", "::notice title=")) for line in lines)
    assert all("\n" not in line for line in lines)
    snapshot("gate.annotations.txt", "\n".join(lines) + "\n")


def test_junit_without_a_gate_is_an_empty_suite():
    root = ET.fromstring(to_junit(None))
    assert root.get("tests") == "0" and root.find("./testsuite") is not None
