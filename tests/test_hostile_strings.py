"""Strings from outside robust (model and data names, file paths, messages read back from a report) go through
every output escaped for it: one hostile string, generated, pushed through every text field of a report and
rendered to every format. What must hold, per format:

- HTML: the page has no element the string wrote (no ``<script``, no tag, no attribute break-out);
- CSV: no cell a spreadsheet would run as a formula;
- JUnit XML: well-formed (ElementTree parses it), whatever control characters the string held;
- Markdown: every table row keeps its columns (no unescaped ``|``) and no raw line break splits a row;
- the terminal: no control character reaches it (escape sequences, carriage returns, bells);
- JSON: the string comes back exactly;
- SARIF: valid against the SARIF 2.1.0 schema, and the string comes back exactly as data.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_factory import synthetic_report
from rich.console import Console
from test_sarif import assert_valid_sarif

from robustbench_cli.gate.judge import judge
from robustbench_cli.gate.rules import collect_rules
from robustbench_cli.reports import safe
from robustbench_cli.reports.console import render_summary
from robustbench_cli.reports.html import to_html
from robustbench_cli.reports.model import Finding, Report
from robustbench_cli.reports.writers import to_csv, to_json, to_junit, to_markdown, to_sarif

NASTY = ["<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0",
         "@SUM(1)", "-2+3", "\x1b]0;owned\x07\x1b[31mred", "a|b|c", "line\nbreak\rreturn", "\x00\x01\x0b\x0c\x7f\x85",
         "`code` *bold* _it_ [link](x) # head", "\u2028\u2029", "&amp; &lt; ]]> <![CDATA[", "\ud7ff\ue000\ufffd"]
HOSTILE = st.one_of(st.sampled_from(NASTY),
                    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30),
                    st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(max_size=10)))


def _tags(page: str) -> list[tuple[str, list[str]]]:
    from html.parser import HTMLParser

    found: list[tuple[str, list[str]]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, [a for a, _ in attrs]))

    Tags().feed(page)
    return found


def hostile_report(s: str) -> Report:
    """A report whose every outside-sourced string carries ``s``: target names, data name, messages, reasons."""
    rep = synthetic_report(targets=((f"{s}.onnx", 0.45), (f"=x{s}", 0.40)), data_name=s, threats=("linf:8/255",))
    for r in rep.results:
        r.diagnostics = [*r.diagnostics, Finding(check="noise-vs-attack", passed=False, message=f"failed {s}")]
        for a in r.attacks:
            if a.skipped:
                a.skipped = f"skipped because {s}"
    rules = collect_rules(["robust_accuracy@linf:8/255=99%"], [])
    rep = replace(rep, gate=judge(rep, rules))
    return rep


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=HOSTILE)
def test_a_hostile_string_is_escaped_in_every_output(s):
    rep = hostile_report(s)

    page = to_html(rep)
    tags = _tags(page)
    assert "script" not in {t for t, _ in tags}  # the page promises no script at all
    assert not any(a.startswith("on") for _, attrs in tags for a in attrs)  # no event handler broke out
    assert {t for t, _ in tags} <= {t for t, _ in _tags(to_html(hostile_report("plain")))}  # no tag the string wrote
    assert "\x1b" not in page and "\x00" not in page

    for row in csv.reader(io.StringIO(to_csv(rep))):
        for cell in row:
            assert not cell.startswith(safe.FORMULA_START) or safe._is_number(cell), cell

    ET.fromstring(to_junit(rep).split("\n", 1)[1])  # well-formed XML (the declaration line aside)

    md = to_markdown(rep)
    for block in re.split(r"\n\s*\n", md):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            width = len(re.findall(r"(?<!\\)\|", rows[0]))
            assert all(len(re.findall(r"(?<!\\)\|", line)) == width for line in rows), block

    buf = io.StringIO()
    render_summary(rep, Console(file=buf, width=200, force_terminal=False, color_system=None))
    shown = buf.getvalue()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", shown), repr(shown)

    back = json.loads(to_json(rep))
    assert back["data"]["name"] == s and back["targets"][0]["name"] == f"{s}.onnx"

    log = json.loads(to_sarif(rep))
    assert_valid_sarif(log)
    assert log["runs"][0]["properties"]["data"]["name"] == s
    assert any(f"failed {s}" in x["message"]["text"] for x in log["runs"][0]["results"])


def test_the_rules_themselves():
    assert safe.csv_cell("=1+1") == "'=1+1" and safe.csv_cell("-0.5") == "-0.5" and safe.csv_cell(3) == 3
    assert safe.terminal("\x1b[31m[bold]x") == "\\x1b[31m\\[bold]x"  # shown, and not a style
    assert safe.html("<a href='x'>\x07") == "&lt;a href=&#x27;x&#x27;&gt;\\x07"
    assert safe.xml("ok\x00\x1f") == "ok\\x00\\x1f"
    assert safe.markdown("a|b\nc") == "a\\|b\\\\x0ac"  # the break shown as text, its backslash escaped

