"""The SARIF report (``-o results.sarif``): valid against the official SARIF 2.1.0 schema (shipped in tests/schemas,
nothing downloaded), one result per failed gate check and per failed sanity check, located at the model file, with
fingerprints that stay put across runs and tell findings apart."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from report_factory import synthetic_report

from robustbench_cli.gate.judge import judge
from robustbench_cli.gate.rules import collect_rules
from robustbench_cli.reports import catalog
from robustbench_cli.reports.model import Check, Finding, Report, Verdict, load_report
from robustbench_cli.reports.sarif import FINGERPRINT_KEY, to_sarif, to_sarif_dict
from robustbench_cli.reports.writers import OutputSpec, write_reports

SCHEMAS = Path(__file__).parent / "schemas"
PINNED = {  # tests/schemas/README.md says where each came from
    "sarif-2.1.0-rtm.5.json": "2d99159ae54a3eea97f81781cff48780548657c35949f4b7f25e99a2ba4de4f8",
    "github-action.json": "224326cc5a334bdb97b56b6fc320cd4381ba7d61b477b425ed506e6a420b52ba",
}


def sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads((SCHEMAS / "sarif-2.1.0-rtm.5.json").read_text(encoding="utf-8"))
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)


def assert_valid_sarif(log: dict) -> None:
    errors = sorted(sarif_validator().iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def gated(report: Report, fail_under=("robust_accuracy@linf:8/255=0.44",), max_drop=("2pp",)) -> Report:
    return replace(report, gate=judge(report, collect_rules(list(fail_under), list(max_drop))))


@pytest.fixture()
def report() -> Report:
    rep = synthetic_report()
    rep.results[0].diagnostics.append(Finding(check="noise-vs-attack", attack="pgd", passed=False,
                                              message="noise broke 3 samples pgd left robust"))
    rep.results[0].diagnostics.append(Finding(check="noise-vs-attack", attack="fgsm", passed=False,
                                              message="noise broke 5 samples fgsm left robust"))
    rep.results[1].diagnostics.append(Finding(check="clean-accuracy", passed=False, message="at chance"))
    rep.results[1].diagnostics.append(Finding(check="gradients", passed=True, message="fine"))
    return gated(rep)


def test_the_shipped_schemas_are_the_pinned_files():
    for name, sha in PINNED.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == sha, name
    schema = json.loads((SCHEMAS / "sarif-2.1.0-rtm.5.json").read_text(encoding="utf-8"))
    jsonschema.Draft4Validator.check_schema(schema)
    assert schema["properties"]["version"]["enum"] == ["2.1.0"]


def test_one_result_per_failed_gate_check_and_failed_sanity_check(report):
    log = to_sarif_dict(report)
    assert_valid_sarif(log)
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    results = run["results"]
    failed_gate = [c for c in report.gate.checks if c.status != "pass"]
    failed_checks = [(r, d) for r in report.results for d in r.failed_checks()]
    assert failed_gate and len(failed_checks) == 3
    assert len(results) == len(failed_gate) + len(failed_checks)
    assert [x["ruleId"] for x in results[:len(failed_gate)]] == [f"gate/{c.kind}/{c.metric.replace('_', '-')}"
                                                                 for c in failed_gate]
    assert [x["ruleId"] for x in results[len(failed_gate):]] == [f"check/{d.check}" for _, d in failed_checks]
    # a passed check is no result; a gate check that passed is none either
    assert all(x["properties"].get("status", "fail") != "pass" for x in results)
    assert not any(x["ruleId"] == "check/gradients" for x in results)
    # levels: a failed gate rule and a scan that did not measure the model are errors, a suspect attack a warning
    levels = {x["ruleId"]: x["level"] for x in results}
    assert levels["check/clean-accuracy"] == "error" and levels["check/noise-vs-attack"] == "warning"
    assert all(x["level"] == "error" for x in results if x["ruleId"].startswith("gate/"))
    # the message says what failed, on which model and threat
    msg = next(x["message"]["text"] for x in results if x["ruleId"] == "check/clean-accuracy")
    assert "at chance" in msg and "model-a.onnx at l2:0.5" in msg and "L2 0.5 on [0,1] pixels" in msg


def test_the_driver_names_robust_and_every_rule_it_uses(report):
    run = to_sarif_dict(report)["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "robust" and driver["version"] == report.tool["version"]
    ids = [r["id"] for r in driver["rules"]]
    assert len(ids) == len(set(ids))
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
        assert rule["defaultConfiguration"]["level"] in catalog.SEVERITIES
    for x in run["results"]:
        assert driver["rules"][x["ruleIndex"]]["id"] == x["ruleId"]


def test_every_documented_check_has_a_rule():
    doc = (Path(__file__).parents[1] / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", doc, re.M))
    assert documented and documented <= set(catalog.CHECKS), documented - set(catalog.CHECKS)


def test_fingerprints_are_stable_and_tell_findings_apart(report):
    first = to_sarif_dict(report)["runs"][0]["results"]
    again = to_sarif_dict(gated(report))["runs"][0]["results"]  # judged again: a second run of the same scan
    prints = [x["partialFingerprints"][FINGERPRINT_KEY] for x in first]
    assert prints == [x["partialFingerprints"][FINGERPRINT_KEY] for x in again]
    assert len(set(prints)) == len(prints)  # two noise-vs-attack findings (pgd, fgsm) on one result stay two
    gate0 = first[0]
    sha = report.target("model-b.onnx").sha256
    expected = hashlib.sha256(f"{sha}\nlinf:8/255\n{gate0['ruleId']}".encode()).hexdigest()
    assert gate0["properties"]["target"] == "model-b.onnx" and gate0["partialFingerprints"][FINGERPRINT_KEY] == expected
    # another model (another sha256) under the same rule is another finding
    other = replace(report, targets=[replace(t, sha256="ff" * 32) for t in report.targets])
    assert to_sarif_dict(other)["runs"][0]["results"][0]["partialFingerprints"] != gate0["partialFingerprints"]


def test_locations_point_at_the_model_file(tmp_path):
    rep = synthetic_report(targets=((str(tmp_path / "models" / "net v2.onnx"), 0.45), ("/elsewhere/b.onnx", 0.40)),
                           threats=("linf:8/255",))
    rep.results[0].diagnostics.append(Finding(check="finite-scores", passed=False, message="NaN"))
    rep.results[1].diagnostics.append(Finding(check="finite-scores", passed=False, message="NaN"))
    results = to_sarif_dict(rep, root=tmp_path)["runs"][0]["results"]
    inside = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert inside == {"uri": "models/net%20v2.onnx", "uriBaseId": "%SRCROOT%"}  # relative, percent-encoded
    outside = results[1]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert outside == {"uri": "file:///elsewhere/b.onnx"}

    # a PyTorch model: the checkpoint is the model file; a hub model with no file gets a logical location only
    torch_rep = synthetic_report(targets=(("net.py:Net", 0.45), ("timm:resnet18", 0.40)), threats=("linf:8/255",),
                                 white_box=True)
    torch_rep.targets[0].details["weights"] = "ckpt/w.pt"
    torch_rep.targets[1].kind = "timm"
    for r in torch_rep.results:
        r.diagnostics.append(Finding(check="gradients", passed=False, message="zero gradients"))
    log = to_sarif_dict(torch_rep, root=tmp_path)
    assert_valid_sarif(log)
    first, second = log["runs"][0]["results"]
    assert first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "ckpt/w.pt"
    assert first["properties"]["access"] == "white box"
    assert "physicalLocation" not in second["locations"][0]
    assert "resnet18" in second["locations"][0]["logicalLocations"][0]["name"]


def test_a_clean_report_gives_an_empty_valid_log():
    rep = synthetic_report(threats=("linf:8/255",))
    log = to_sarif_dict(gated(rep, fail_under=("0.1",), max_drop=()))
    assert_valid_sarif(log)
    assert log["runs"][0]["results"] == []
    assert log["runs"][0]["properties"]["gate"] == "passed"


def test_unjudged_gate_check_is_reported(report):
    check = Check(kind="fail-under", rule="robust_accuracy@linf:8/255=40%", metric="robust_accuracy",
                  threat="linf:8/255", target="model-a.onnx", status="n/a", message="the value is missing")
    rep = replace(report, gate=Verdict(status="could not judge", exit_code=2, line="could not judge",
                                       checks=[check]))
    log = to_sarif_dict(rep)
    assert_valid_sarif(log)
    first = log["runs"][0]["results"][0]
    assert first["level"] == "error" and first["message"]["text"].startswith("could not judge")


def test_written_by_suffix_and_read_back(tmp_path, report, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert OutputSpec(reports=("out/results.sarif",)).reports == ("out/results.sarif",)
    paths = OutputSpec(reports=("out/r.json", "out/results.sarif")).paths()
    write_reports(report, paths)
    log = json.loads((tmp_path / "out" / "results.sarif").read_text(encoding="ascii"))  # pure ASCII: \u escapes
    assert_valid_sarif(log)
    # the JSON report read back gives the same SARIF (the gate travels in the report)
    assert to_sarif(load_report(tmp_path / "out" / "r.json")) == (tmp_path / "out" / "results.sarif").read_text()


def test_the_gate_plan_writes_sarif_of_the_judged_report(tmp_path, monkeypatch):
    """`robust gate REPORT --sarif out.sarif` (GateSpec.sarif): the verdict's checks with the report's own findings."""
    from robustbench_cli.gate.plan import GatePlan, GateSpec

    monkeypatch.chdir(tmp_path)
    rep = synthetic_report(threats=("linf:8/255",))
    rep.results[0].diagnostics.append(Finding(check="finite-scores", passed=False, message="NaN scores"))
    plan = GatePlan(GateSpec(fail_under=("robust_accuracy@linf:8/255=0.9",), sarif="ci/gate.sarif"), use_config=False)
    verdict = plan.judge(rep, "r.json")
    written, _ = plan.write(verdict, rep)
    out = tmp_path / "ci" / "gate.sarif"
    assert [p.resolve() for p in written] == [out.resolve()]
    log = json.loads(out.read_text(encoding="utf-8"))
    assert_valid_sarif(log)
    ids = [x["ruleId"] for x in log["runs"][0]["results"]]
    assert ids.count("gate/fail-under/robust-accuracy") == 2 and "check/finite-scores" in ids
