"""JUnit XML for CI systems: one test case per gate check (a rule applied to one target and threat model).

A failed check is a ``<failure>``, a check that could not be judged an ``<error>``. A report without a gate gives
an empty suite (tests="0"), so a CI step that always collects the file does not break.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from robustbench_cli.reports import safe
from robustbench_cli.reports.model import Check, Verdict

SUITE = "robust gate"


def _classname(target: str) -> str:
    return "robust." + (re.sub(r"[^A-Za-z0-9_]+", "_", target).strip("_") or "target")


def to_junit(verdict: Verdict | None, *, timestamp: str | None = None, properties: dict | None = None) -> str:
    checks = verdict.checks if verdict is not None else []
    failures = sum(c.status == "fail" for c in checks)
    errors = sum(c.status == "n/a" for c in checks)
    counts = {"tests": str(len(checks)), "failures": str(failures), "errors": str(errors), "skipped": "0"}
    root = ET.Element("testsuites", {"name": SUITE, **counts})
    attrs = {"name": SUITE, **counts, "time": "0"}
    if timestamp:
        attrs["timestamp"] = timestamp
    suite = ET.SubElement(root, "testsuite", attrs)
    props = {**(properties or {})}
    if verdict:
        props.update({"verdict": verdict.status, "exit_code": str(verdict.exit_code)})
        if verdict.baseline:
            props["baseline"] = verdict.baseline
        if verdict.paired:
            props["paired_alpha"] = str(verdict.alpha)
    if props:
        pe = ET.SubElement(suite, "properties")
        for k, v in props.items():
            ET.SubElement(pe, "property", {"name": k, "value": str(v)})
    for c in checks:
        case = ET.SubElement(suite, "testcase", {
            "classname": _classname(c.target),
            "name": _name(c),
            "time": "0",
        })
        if c.status == "fail":
            ET.SubElement(case, "failure", {"type": c.kind, "message": c.message}).text = _details(c)
        elif c.status == "n/a":
            ET.SubElement(case, "error", {"type": "could-not-judge", "message": c.message}).text = _details(c)
        else:
            ET.SubElement(case, "system-out").text = _details(c)
    _xml_safe(root)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _name(c: Check) -> str:
    """``robust_accuracy >= 40% at linf:8/255`` or ``robust_accuracy drop <= 2pp at l2:0.5``."""
    op = ">=" if c.kind == "fail-under" else "drop <="
    return f"{c.metric} {op} {c.threshold} at {c.threat}"


def _details(c: Check) -> str:
    return f"{c.message}\nrule {c.written!r} ({c.kind}) from {c.source}"


def _xml_safe(root: ET.Element) -> None:
    """Every text and attribute of the tree as XML 1.0 can hold it (names and messages come from outside robust)."""
    for el in root.iter():
        el.attrib = {safe.xml(k): safe.xml(v) for k, v in el.attrib.items()}
        if el.text is not None:
            el.text = safe.xml(el.text)
        if el.tail is not None:
            el.tail = safe.xml(el.tail)
