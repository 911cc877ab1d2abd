"""SARIF 2.1.0 for code scanning (GitHub's and others'): one result per failed gate check and per failed sanity check.

Each result points at the model file (the checkpoint, the ONNX or TorchScript file, else the Python file that builds
the model), as a URI relative to the folder the report is written from when the file lies under it (a repository
checkout in CI), else as an absolute ``file:`` URI; a model with no file at all (``timm:NAME``) gets a logical
location only. ``partialFingerprints`` carries a stable hash of the model's sha256, the threat and the rule, so a
code-scanning service keeps one alert for the same finding on the same model across runs, and closes it once a run
no longer reports it.

A gate check that could not be judged (exit 2) is reported too, at level ``error``: CI did not pass. A report
without a gate gives only the failed sanity checks; a report with nothing failed gives an empty ``results`` list
(uploading it closes the alerts of earlier runs).

Every string from the report (model names, paths, messages) goes in as JSON data; ``json.dumps`` escapes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from robustbench_cli.reports import catalog
from robustbench_cli.reports.compare import display_names
from robustbench_cli.reports.describe import identity, model_file, target_of, threat_words
from robustbench_cli.reports.model import Check, Finding, Report, Result, TargetInfo

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
VERSION = "2.1.0"
FINGERPRINT_KEY = "robustFinding/v1"
SRCROOT = "%SRCROOT%"


def fingerprint(target_sha256: str, threat: str, rule_id: str, extra: str = "") -> str:
    """sha256 of the model's sha256, the threat and the rule (and, where one check can fail several times on the same
    result, what tells those apart: the attack it is about)."""
    text = "\n".join([target_sha256, threat, rule_id] + ([extra] if extra else []))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _uri(path: str, root: Path) -> tuple[str, bool]:
    """The path as a URI reference: relative (POSIX, percent-encoded) when under ``root``, else ``file:``."""
    p = Path(os.path.expanduser(path))
    absolute = p if p.is_absolute() else (root / p)
    absolute = Path(os.path.normpath(absolute))
    try:
        rel = absolute.relative_to(root)
    except ValueError:
        return _quote(absolute.as_posix(), absolute=True), False
    return _quote(PurePosixPath(*rel.parts).as_posix(), absolute=False), True


def _quote(posix: str, *, absolute: bool) -> str:
    encoded = quote(posix.encode("utf-8", "surrogatepass"), safe="/")
    return "file://" + encoded if absolute else encoded


def _location(target: TargetInfo | None, name: str, root: Path) -> dict[str, Any]:
    logical = {"name": name, "kind": "module"}
    file = model_file(target) if target is not None else None
    if file is None:
        return {"logicalLocations": [logical]}
    uri, relative = _uri(file, root)
    artifact: dict[str, Any] = {"uri": uri}
    if relative:
        artifact["uriBaseId"] = SRCROOT
    # GitHub shows a result only with a region; a model file has no lines, so the finding sits at its start
    return {"physicalLocation": {"artifactLocation": artifact, "region": {"startLine": 1}},
            "logicalLocations": [logical]}


def _rule(info: catalog.RuleInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": "".join(w.capitalize() for w in info.id.replace("/", "-").split("-")),
        "shortDescription": {"text": info.title},
        "fullDescription": {"text": f"{info.title}. {info.help}"},
        "help": {"text": info.help, "markdown": info.help},
        "defaultConfiguration": {"level": info.severity},
        "properties": {"tags": ["robustness", "gate" if info.id.startswith("gate/") else "sanity-check"]},
    }


class _Rules:
    """The run's rules: every rule this version knows, plus any a result names that it does not (a newer report)."""

    def __init__(self) -> None:
        self.infos = catalog.all_rules()
        self.index = {r.id: i for i, r in enumerate(self.infos)}

    def add(self, info: catalog.RuleInfo) -> int:
        if info.id not in self.index:
            self.index[info.id] = len(self.infos)
            self.infos.append(info)
        return self.index[info.id]


def _gate_result(report: Report, c: Check, rules: _Rules, root: Path) -> dict[str, Any]:
    info = catalog.gate_rule(c.kind, c.metric)
    target = target_of(report, c.target)
    sha = target.sha256 if target is not None else ""
    unjudged = c.status != "fail"
    text = (f"could not judge {c.rule}: {c.message}" if unjudged else f"{c.message} (rule {c.rule})")
    props: dict[str, Any] = {"target": c.target, "threat": c.threat, "status": c.status, "rule": c.rule,
                             "threshold": c.threshold, "value": c.value, "n": c.n, "ci": c.ci,
                             "source": c.source, "targetSha256": sha}
    if c.baseline_shown is not None:
        props["baseline"] = c.baseline_shown
    if c.change is not None:
        props["change"] = c.change
    return {
        "ruleId": info.id,
        "ruleIndex": rules.add(info),
        "level": "error",
        "kind": "fail",
        "message": {"text": text},
        "locations": [_location(target, c.target, root)],
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint(sha, c.threat, info.id)},
        "properties": {k: v for k, v in props.items() if v is not None},
    }


def _check_result(report: Report, r: Result, d: Finding, label: str, rules: _Rules, root: Path) -> dict[str, Any]:
    info = catalog.check_rule(d.check)
    target = report.target(r.target)
    sha = target.sha256 if target is not None else ""
    where = threat_words(r, target)
    props: dict[str, Any] = {"target": label, "threat": r.threat, "check": d.check, "targetSha256": sha,
                             "threatWords": where}
    if d.attack:
        props["attack"] = d.attack
    if target is not None:
        ident = identity(target)
        props.update({"kind": ident.kind, "access": ident.box})
    return {
        "ruleId": info.id,
        "ruleIndex": rules.add(info),
        "level": info.severity,
        "kind": "fail",
        "message": {"text": f"{d.message} ({label} at {r.threat}: {where})"},
        "locations": [_location(target, label, root)],
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint(sha, r.threat, info.id, d.attack or "")},
        "properties": props,
    }


def to_sarif_dict(report: Report, *, root: str | Path | None = None) -> dict[str, Any]:
    """The SARIF log as a dict. ``root``: the folder model paths are made relative to (default: the working
    folder, which is the repository root in a CI job)."""
    base = Path(os.path.normpath(Path(root if root is not None else os.getcwd()).absolute()))
    names = display_names(report)
    rules = _Rules()
    results: list[dict[str, Any]] = []
    if report.gate is not None:
        results += [_gate_result(report, c, rules, base) for c in report.gate.checks if c.status != "pass"]
    for r in report.results:
        label = names.get(r.target, r.target)
        results += [_check_result(report, r, d, label, rules, base) for d in r.failed_checks()]
    version = str(report.tool.get("version", "0"))
    driver: dict[str, Any] = {"name": "robust", "version": version, "rules": [_rule(i) for i in rules.infos]}
    run: dict[str, Any] = {
        "tool": {"driver": driver},
        "results": results,
        "columnKind": "unicodeCodePoints",
        "invocations": [{"executionSuccessful": report.complete is not False,
                         "properties": {"command": ["robust", *map(str, report.provenance.get("command", []))]}}],
        "properties": {
            "reportFormat": report.format, "created": report.created, "battery": report.battery_id,
            "seed": report.seed, "data": {"name": report.data.get("name"), "n": report.data.get("n"),
                                          "sha256": report.data.get("sha256")},
            "gate": None if report.gate is None else report.gate.status,
        },
    }
    return {"$schema": SCHEMA_URI, "version": VERSION, "runs": [run]}


def to_sarif(report: Report, *, root: str | Path | None = None) -> str:
    return json.dumps(to_sarif_dict(report, root=root), indent=1, allow_nan=False) + "\n"
