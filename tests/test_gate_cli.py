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


def _error(result, fragment):
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr, result.stderr


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
    r = run_cli("gate", reports["b"], "--baseline", stripped, "--max-drop", "2pp", "--paired")
    assert r.exit_code == 2
    assert _last_line(r.stdout).startswith("gate could not judge")


@pytest.mark.parametrize("args, fragment", [
    (["--fail-under", "1.5"], "did you mean"),
    (["--max-drop", "0.02"], "unit"),
    (["--max-drop", "2pp"], "needs a baseline"),
    (["--fail-under", "@l2:1=0.4"], "no threat l2:1"),
    ([], "no gate rules"),
    (["--fail-under", "0.4", "--alpha", "1.5"], "--alpha"),
    (["--fail-under", "0.4", "--config", "nope.toml"], "not found"),
])
def test_bad_gates_are_exit_2_with_one_line(run_cli, reports, args, fragment):
    _error(run_cli("gate", reports["a"], *args), fragment)


def test_missing_report_and_incomparable_baseline(run_cli, reports, tmp_path):
    _error(run_cli("gate", tmp_path / "nope.json", "--fail-under", "0.4"), "not found")
    other = json.loads(reports["a"].read_text())
    other["data"]["sha256"] = "cd" * 32
    _error(run_cli("gate", reports["b"], "--baseline", write(other, tmp_path / "o.json"), "--max-drop", "2pp"),
           "different data")


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


def test_scan_refuses_a_bad_gate_before_any_work(run_cli, tiny, tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old report")
    for args, fragment in [(["--fail-under", "@linf:0.1=0.5"], "has no threat linf:0.1"),
                           (["--max-drop", "2pp"], "needs a baseline"),
                           (["--junit", str(tmp_path / "j.xml")], "need gate rules"),
                           (["--max-drop", "2"], "unit")]:
        r = _scan(run_cli, tiny, "-o", out, *args)
        _error(r, fragment)
        assert out.read_text() == "old report"


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


def test_the_github_actions_example_uses_real_options(run_cli):
    yaml = pytest.importorskip("yaml")
    from pathlib import Path

    from robustbench_cli.reports.gate import parse_rule

    wf = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "github-actions.yml").read_text())
    steps = wf["jobs"]["robust"]["steps"]
    script = next(s["run"] for s in steps if s.get("name") == "Scan and gate")
    words = script.replace("\\\n", " ").split()
    assert words[:2] == ["robust", "scan"]
    help_text = run_cli("scan", "--help").stdout
    for w in words:
        if w.startswith("--"):
            assert w in help_text, w
    for opt, kind in (("--max-drop", "max-drop"), ("--fail-under", "fail-under")):
        for i, w in enumerate(words):
            if w == opt:
                parse_rule(kind, words[i + 1])
