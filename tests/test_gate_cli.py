"""`robust gate` and the gate options of `robust scan`: every exit code, the config table, the CI outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from report_factory import only_target, synthetic_report, tiny_cli_files, write


@pytest.fixture(autouse=True)
def _not_on_github(monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture
def reports(tmp_path):
    rep = synthetic_report(n=200)  # model-a: 44.5% / 34.5% robust; model-b lower
    return {
        "a": write(only_target(rep, "model-a.onnx"), tmp_path / "a.json"),
        "b": write(only_target(rep, "model-b.onnx"), tmp_path / "b.json"),
        "both": write(rep, tmp_path / "both.json"),
        "rep": rep,
    }


def _last_line(text: str) -> str:
    return text.rstrip().splitlines()[-1]


def _error(result, *fragments):
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error:") and all(f in lines[0] for f in fragments), (fragments, lines[0])
    assert result.stdout.strip() == "", result.stdout  # nothing half-rendered


def test_exit_0_passed(run_cli, reports):
    r = run_cli("gate", reports["a"], "--fail-under", "0.30")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert _last_line(r.stdout) == "gate passed: 2 of 2 checks passed"
    assert "95% CI" in r.stdout and "pass/FAIL" in r.stdout  # the table and its legend


def test_exit_1_failed(run_cli, reports):
    r = run_cli("gate", reports["a"], "--fail-under", "robust_accuracy@linf:8/255=0.5")
    assert r.exit_code == 1
    assert _last_line(r.stdout).startswith("gate FAILED: 1 of 1 checks failed")
    r = run_cli("gate", reports["b"], "--baseline", reports["a"], "--max-drop", "1pp")
    assert r.exit_code == 1 and "dropped" in r.stdout


def test_exit_2_could_not_judge(run_cli, reports, tmp_path):
    base = json.loads(reports["a"].read_text())
    for r in base["results"]:
        r.pop("samples")
    stripped = write(base, tmp_path / "stripped.json")
    # a report without its per-sample columns cannot be checked against its own summary: refused, not judged
    r = run_cli("gate", reports["b"], "--baseline", stripped, "--max-drop", "2pp", "--paired")
    assert r.exit_code == 2 and "not a valid robust report" in r.stderr and "samples" in r.stderr
    # nothing the threat applies to (n = 0): the gate has no value to judge
    empty = json.loads(reports["a"].read_text())
    for res in empty["results"]:
        res["samples"]["eligible"] = [False] * len(res["samples"]["id"])
        res["n"], res["clean_accuracy"], res["robust_accuracy"] = 0, 0.0, 0.0
    r = run_cli("gate", write(empty, tmp_path / "empty.json"), "--fail-under", "0.4")
    assert r.exit_code == 2
    assert _last_line(r.stdout).startswith("gate could not judge")


# id: (arguments after `gate`, {name} filled by gate_files; words of the message); the rows of docs/bad-inputs.md
GATE_CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "gate-level-not-a-fraction": (["{a}", "--fail-under", "1.5"], ("not a fraction", "did you mean 1.5%?")),
    "gate-level-above-100": (["{a}", "--fail-under", "101%"], ("101% is above 100%",)),
    "gate-level-in-pp": (["{a}", "--fail-under", "40pp"], ("a fail-under level is a fraction or a percentage",)),
    "gate-level-not-a-number": (["{a}", "--fail-under", "0.4x"], ("'0.4x' is not a number",)),
    "gate-rule-empty": (["{a}", "--fail-under", ""], ("empty rule",)),
    "gate-unknown-metric": (["{a}", "--fail-under", "accuracy=0.4"], ("unknown metric 'accuracy'",)),
    "gate-two-threats-in-rule": (["{a}", "--fail-under", "robust_accuracy@linf:8/255@l2:1=0.4"], ("more than one '@'",)),
    "gate-unknown-threat": (["{a}", "--fail-under", "@l2:1=0.4"], ("no threat l2:1",)),
    "gate-rules-conflict": (["{a}", "--fail-under", "0.4", "--fail-under", "0.3"], ("both set robust_accuracy", "keep one")),
    "gate-drop-without-unit": (["{a}", "--max-drop", "0.02"], ("with a unit", "pp")),
    "gate-drop-over-100": (["{b}", "--baseline", "{a}", "--max-drop", "200pp"], ("more than 100pp",)),
    "gate-drop-negative": (["{b}", "--baseline", "{a}", "--max-drop", "-2pp"], ("is negative",)),
    "gate-drop-without-baseline": (["{a}", "--max-drop", "2pp"], ("needs a baseline",)),
    "gate-no-rules": (["{a}"], ("no gate rules",)),
    "gate-alpha-out-of-range": (["{a}", "--fail-under", "0.4", "--alpha", "1.5"], ("--alpha must be between 0 and 1",)),
    "gate-config-missing": (["{a}", "--fail-under", "0.4", "--config", "{dir}/nope.toml"], ("config", "not found")),
    "gate-config-not-toml": (["{a}", "--config", "{not_toml}"], ("not valid TOML",)),
    "gate-config-unknown-key": (["{a}", "--config", "{typo_toml}"], ("unknown key 'fail-unde'", "[tool.robust.gate]")),
    "gate-config-paired-not-bool": (["{a}", "--config", "{paired_toml}"], ("paired must be true or false",)),
    "gate-report-missing": (["{dir}/nope.json", "--fail-under", "0.4"], ("not found",)),
    "gate-report-is-folder": (["{dir}", "--fail-under", "0.4"], ("is a folder",)),
    "gate-baseline-incomparable": (["{b}", "--baseline", "{other_data}", "--max-drop", "2pp"], ("different data",)),
    "gate-baseline-unsupported-version": (["{b}", "--baseline", "{v9}", "--max-drop", "2pp"],
                                          ("robust-report/9", "not supported")),
    "gate-baseline-not-a-robust-report": (["{b}", "--baseline", "{not_report}", "--max-drop", "2pp"],
                                          ("not a robust report",)),
    "gate-junit-is-folder": (["{a}", "--fail-under", "0.4", "--junit", "{dir}"], ("cannot write JUnit XML", "is a folder")),
    "gate-summary-under-a-file": (["{a}", "--fail-under", "0.4", "--summary", "{a}/gate.md"],
                                  ("cannot write summary", "is a file, not a folder")),
}


@pytest.fixture
def gate_files(reports, tmp_path) -> dict[str, str]:
    other = json.loads(reports["a"].read_text())
    other["data"]["sha256"] = "cd" * 32
    files = {"a": reports["a"], "b": reports["b"], "dir": tmp_path, "other_data": write(other, tmp_path / "o.json")}
    v9 = json.loads(reports["a"].read_text())
    v9["format"] = "robust-report/9"
    files["v9"] = write(v9, tmp_path / "v9.json")
    for name, text in (("not_report", '{"format": "something-else/1"}'), ("not_toml", "[tool.robust.gate\n"),
                       ("typo_toml", '[tool.robust.gate]\nfail-unde = ["0.4"]\n'),
                       ("paired_toml", '[tool.robust.gate]\nfail-under = ["0.4"]\npaired = "yes"\n')):
        (tmp_path / name).write_text(text)
        files[name] = tmp_path / name
    return {k: str(v) for k, v in files.items()}


@pytest.mark.parametrize("case", list(GATE_CASES))
def test_bad_gates_are_exit_2_with_one_line(run_cli, gate_files, case):
    args, words = GATE_CASES[case]
    _error(run_cli("gate", *[x.format(**gate_files) for x in args]), *words)


def test_several_targets_are_judged_against_the_first(run_cli, reports):
    r = run_cli("gate", reports["both"], "--max-drop", "50pp")
    assert r.exit_code == 0, r.stdout
    assert "first target" in r.stdout


def test_pyproject_rules_and_command_line_wins(run_cli, reports, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.robust.gate]\nfail-under = ["0.9"]\n')
    monkeypatch.chdir(tmp_path)
    r = run_cli("gate", reports["a"])  # ./pyproject.toml is read: 0.9 fails
    assert r.exit_code == 1 and "pyproject.toml [tool.robust.gate]" in r.stdout
    r = run_cli("gate", reports["a"], "--fail-under", "0.3")  # the command line replaces the config's 0.9
    assert r.exit_code == 0, r.stdout
    (tmp_path / "pyproject.toml").write_text('[tool.robust.gate]\nmax-drop = ["2pp"]\npaired = true\n')
    r = run_cli("gate", reports["b"], "--baseline", reports["a"], "--junit", tmp_path / "j.xml")
    assert "paired_alpha" in (tmp_path / "j.xml").read_text()
    run_cli("gate", reports["b"], "--baseline", reports["a"], "--junit", tmp_path / "j.xml", "--no-paired")
    assert "paired_alpha" not in (tmp_path / "j.xml").read_text()  # the command line turns the config's paired off


def test_ci_outputs(run_cli, reports, tmp_path, monkeypatch):
    junit, summary, step = tmp_path / "ci" / "gate.xml", tmp_path / "ci" / "gate.md", tmp_path / "step.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    r = run_cli("gate", reports["b"], "--baseline", reports["a"], "--max-drop", "2pp", "--fail-under", "0.1",
                "--junit", junit, "--summary", summary)
    assert r.exit_code == 1
    errors = [x for x in r.stdout.splitlines() if x.startswith("::error title=")]
    assert len(errors) == 3  # two failed checks and the verdict
    assert _last_line(r.stdout).startswith("gate FAILED")
    root = ET.parse(junit).getroot()
    assert root.get("tests") == "4" and root.get("failures") == "2"
    assert len(root.findall(".//testcase")) == 4 and len(root.findall(".//failure")) == 2
    assert summary.read_text().startswith("## ❌ robust gate: failed")
    assert step.read_text().startswith("earlier step\n## ❌ robust gate: failed")  # appended, as GitHub expects
    r = run_cli("gate", reports["a"], "--fail-under", "0.1", "--no-github-annotations")
    assert r.exit_code == 0 and "::" not in r.stdout



def test_gate_writes_sarif_that_validates(run_cli, reports, tmp_path):
    """`robust gate report.json --sarif out.sarif`: the judged report as SARIF 2.1.0, valid against the shipped schema."""
    from test_sarif import assert_valid_sarif

    sarif = tmp_path / "ci" / "out.sarif"
    r = run_cli("gate", reports["a"], "--fail-under", "robust_accuracy@linf:8/255=0.5", "--sarif", sarif)
    assert r.exit_code == 1, r.stdout + r.stderr
    assert str(sarif) in r.stdout  # listed with the gate files
    log = json.loads(sarif.read_text(encoding="utf-8"))
    assert_valid_sarif(log)
    results = log["runs"][0]["results"]
    assert [x["ruleId"] for x in results] == ["gate/fail-under/robust-accuracy"]
    assert "0.5" in results[0]["message"]["text"] or "50" in results[0]["message"]["text"], results[0]["message"]
    # a passing gate still writes a valid log, with no result to raise
    r = run_cli("gate", reports["a"], "--fail-under", "0.1", "--sarif", sarif)
    assert r.exit_code == 0, r.stdout + r.stderr
    log = json.loads(sarif.read_text(encoding="utf-8"))
    assert_valid_sarif(log)
    assert log["runs"][0]["results"] == []


def test_help_shows_bracketed_text_that_rich_would_read_as_markup(run_cli, monkeypatch):
    """`[tool.robust.gate]` and `[@THREAT]` are text in the help, not rich markup that vanishes."""
    import re

    monkeypatch.setenv("COLUMNS", "300")  # wide enough that no help text is cut with an ellipsis

    def flat(text: str) -> str:  # the help's boxes and line breaks out of the way
        return re.sub(r"[\s│]+", " ", text)

    scan_help = flat(run_cli("scan", "--help").stdout)
    assert "Apply the rules of [tool.robust.gate] in pyproject.toml" in scan_help
    assert ".sarif (SARIF 2.1.0 for code scanning)" in scan_help
    gate_help = flat(run_cli("gate", "--help").stdout)
    assert "Gate rule [METRIC][@THREAT]=LEVEL" in gate_help and "[METRIC][@THREAT]=AMOUNT" in gate_help
    assert "--sarif" in gate_help

# --- the same options on `robust scan` (a real, tiny model) ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_cli_files(tmp_path_factory.mktemp("tiny"))


def _scan(run_cli, tiny, *extra):
    return run_cli("scan", tiny["model"], "--weights", tiny["w0"], "--data", tiny["data"], "--eps", "0.05",
                   "--preset", "quick", *extra)


def test_scan_gate_fails_with_exit_1_and_keeps_its_reports(run_cli, tiny, tmp_path):
    out, junit = tmp_path / "r.json", tmp_path / "r.xml"
    r = _scan(run_cli, tiny, "-o", out, "-o", junit, "--fail-under", "0.99")
    assert r.exit_code == 1, r.stderr
    assert _last_line(r.stdout).startswith("gate FAILED")
    rep = json.loads(out.read_text())
    assert rep["gate"]["status"] == "failed" and rep["gate"]["exit_code"] == 1
    assert ET.parse(junit).getroot().get("failures") == "1"


# id: (gate options of `robust scan`, {dir} a folder; words of the message): refused before the scan starts
SCAN_GATE_CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "scan-gate-unknown-threat": (["--fail-under", "@linf:0.1=0.5"], ("has no threat linf:0.1",)),
    "scan-gate-drop-without-baseline": (["--max-drop", "2pp"], ("needs a baseline",)),
    "scan-junit-without-rules": (["--junit", "{dir}/j.xml"], ("need gate rules",)),
    "scan-gate-drop-without-unit": (["--max-drop", "2"], ("unit",)),
    "scan-gate-rules-conflict": (["--fail-under", "0.5", "--fail-under", "0.6"], ("both set robust_accuracy", "keep one")),
    "scan-baseline-unsupported-version": (["--baseline", "{dir}/v9.json", "--max-drop", "2pp"],
                                          ("robust-report/9", "not supported")),
}


def test_scan_refuses_a_bad_gate_before_any_work(run_cli, tiny, tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old report")
    (tmp_path / "v9.json").write_text('{"format": "robust-report/9"}')
    for args, words in SCAN_GATE_CASES.values():
        r = _scan(run_cli, tiny, "-o", out, *[a.format(dir=tmp_path) for a in args])
        _error(r, *words)
        assert out.read_text() == "old report"
        assert "robust ·" not in r.stdout  # no scan ran: its table never printed


def test_scan_two_checkpoints_gates_the_second_against_the_first(run_cli, tiny, tmp_path):
    out = tmp_path / "r.json"
    r = run_cli("scan", tiny["model"], tiny["model_b"], "--weights", tiny["w0"], "--weights", tiny["w1"],
                "--data", tiny["data"], "--eps", "0.05", "--preset", "quick", "-o", out, "--max-drop", "0pp")
    rep = json.loads(out.read_text())
    [check] = rep["gate"]["checks"]
    assert check["kind"] == "max-drop" and check["target"].startswith("factory_b.py")
    assert check["baseline_target"].startswith("factory.py")
    dropped = check["baseline_value"] > check["value"]
    assert r.exit_code == (1 if dropped else 0), r.stdout
    # the report compares too, and `robust gate` on it reaches the same verdict
    assert run_cli("compare", out).exit_code == 0
    assert run_cli("gate", out, "--max-drop", "0pp").exit_code == r.exit_code
