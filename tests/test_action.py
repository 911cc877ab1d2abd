"""The GitHub Action (action.yml): valid action metadata, every input it names declared, real `robust scan` options
only, uploads that run when the gate fails, and its scan step run here as GitHub runs it (the same script, with the
inputs substituted), so the reports, a schema-valid SARIF and the gate's exit code come out as the action promises."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from test_sarif import SCHEMAS, assert_valid_sarif

from robustbench_cli.gate.rules import parse_rule

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
ACTION_TEXT = (ROOT / "action.yml").read_text(encoding="utf-8")
ACTION = yaml.safe_load(ACTION_TEXT)
INPUTS = ACTION["inputs"]
STEPS = ACTION["runs"]["steps"]
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
ZOO_ONNX = ROOT / "robustbench_cli" / "zoo" / "mnist_cnn.onnx"
REPORTS = ("report.json", "report.html", "report.md", "results.sarif", "junit.xml")


def step(name: str) -> dict:
    return next(s for s in STEPS if s.get("name") == name)


def _uncommented(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_the_action_metadata_is_valid():
    schema = json.loads((SCHEMAS / "github-action.json").read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(ACTION))
    assert not errors, [e.message for e in errors]
    assert ACTION["runs"]["using"] == "composite"


def test_every_input_it_names_is_declared_and_every_input_is_used():
    text = _uncommented(ACTION_TEXT)
    named = set(re.findall(r"\binputs\.([A-Za-z0-9_-]+)", text))
    assert named <= set(INPUTS), named - set(INPUTS)
    assert set(INPUTS) <= named, set(INPUTS) - named  # no input that does nothing
    for expr in EXPR.findall(text):  # the expressions use only inputs, the step's outputs and github's folders
        for ctx in re.findall(r"\b(inputs|steps|github|env|runner|secrets)\.", expr):
            assert ctx in {"inputs", "steps", "github"}, expr
    ids = {s.get("id") for s in STEPS}
    for sid, _ in re.findall(r"\bsteps\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)", text):
        assert sid in ids, sid
    for inp in INPUTS.values():
        assert inp["description"] and ("default" in inp or inp.get("required"))


def test_run_steps_are_scripts_that_read_inputs_from_the_environment():
    for s in STEPS:
        if "run" not in s:
            continue
        assert s["shell"] == "bash"
        assert not EXPR.search(s["run"]), "an input spliced into shell text could run commands"
        m = re.fullmatch(r'bash "\$\{ROBUST_ACTION_PATH\}/(action/[a-z_-]+\.sh)"', s["run"].strip())
        assert m, s["run"]
        script = (ROOT / m.group(1)).read_text(encoding="utf-8")
        assert s["env"]["ROBUST_ACTION_PATH"] == "${{ github.action_path }}"
        used = set(re.findall(r"\b(ROBUST_[A-Z_]+)\b", script))
        assert used <= set(s["env"]), used - set(s["env"])  # every variable the script reads, the step sets


def test_the_scan_uses_real_options_only(run_cli):
    script = (ROOT / "action" / "scan.sh").read_text(encoding="utf-8")
    help_text = run_cli("scan", "--help").stdout
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+|-o)\b", _uncommented(script)))
    assert {"--data", "--threat", "--fail-under", "--max-drop", "--summary", "-o"} <= options
    for opt in options:
        assert opt in help_text, opt
    # every report suffix the scan writes is one robust knows
    from robustbench_cli.reports.writers import WRITERS

    assert {Path(r).suffix for r in REPORTS} <= set(WRITERS)
    assert all(f'"$out/{r}"' in script for r in REPORTS)


def test_uploads_run_when_the_gate_fails():
    uploads = {s["uses"].split("@")[0]: s for s in STEPS if "uses" in s}
    artifact = uploads["actions/upload-artifact"]
    sarif = uploads["github/codeql-action/upload-sarif"]
    for s in (artifact, sarif):
        assert s["if"].startswith("always() && "), s["if"]
    assert artifact["with"]["path"] == "${{ inputs.output-dir }}"
    assert sarif["with"]["sarif_file"] == "${{ inputs.output-dir }}/results.sarif"  # the file scan.sh writes
    install = step("Install robust")
    assert "${ROBUST_ACTION_PATH}" in install["run"]
    assert "pip install \"${ROBUST_ACTION_PATH" in (ROOT / "action" / "install.sh").read_text(encoding="utf-8")


def substitute(value: str, inputs: dict[str, str], action_path: Path) -> str:
    def one(m: re.Match) -> str:
        expr = m.group(1)
        if expr.startswith("inputs."):
            name = expr.removeprefix("inputs.")
            return inputs.get(name, str(INPUTS[name].get("default", "")))
        if expr == "github.action_path":
            return str(action_path)
        raise AssertionError(f"this test cannot stand in for {expr}")

    return EXPR.sub(one, str(value))


def run_step(name: str, inputs: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """The step as GitHub runs it: its env with the inputs substituted, its `run` in bash, in the workspace."""
    s = step(name)
    missing = [k for k, v in INPUTS.items() if v.get("required") and k not in inputs]
    assert not missing, missing
    outputs = cwd / "github_output"
    outputs.write_text("")
    env = {**os.environ, **{k: substitute(v, inputs, ROOT) for k, v in s["env"].items()},
           "GITHUB_OUTPUT": str(outputs), "COLUMNS": "160"}
    env.pop("GITHUB_ACTIONS", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    proc = subprocess.run(["bash", "-c", s["run"]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    got = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return proc, got


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    if shutil.which("robust") is None:
        pytest.skip("the robust command is not installed (pip install -e .)")
    ws = tmp_path_factory.mktemp("workspace")
    shutil.copy(ZOO_ONNX, ws / "model.onnx")  # a model file in the "repository", as a user's would be
    return ws


BASE = {"model": "model.onnx\n", "data": "mnist:test", "threats": "linf:0.3", "preset": "quick", "n": "40"}


def _reports(folder: Path) -> dict:
    for name in REPORTS:
        assert (folder / name).is_file(), name
    log = json.loads((folder / "results.sarif").read_text(encoding="utf-8"))
    assert_valid_sarif(log)
    return log


def test_a_failing_gate_fails_the_step_and_still_writes_every_report(workspace):
    proc, out = run_step("Scan and gate", {**BASE, "fail-under": "robust_accuracy@linf:0.3=0.90\nclean_accuracy=0.5",
                                            "output-dir": "failing"}, workspace)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert out == {"exit-code": "1", "report-dir": "failing", "sarif": "failing/results.sarif"}
    folder = workspace / "failing"
    log = _reports(folder)
    [result] = log["runs"][0]["results"]  # the robust-accuracy rule failed, the clean-accuracy one passed
    assert result["ruleId"] == "gate/fail-under/robust-accuracy"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": "model.onnx",
                                                                              "uriBaseId": "%SRCROOT%"}
    assert "gate FAILED" in (folder / "gate.md").read_text(encoding="utf-8")
    assert 'failures="1"' in (folder / "junit.xml").read_text(encoding="utf-8")
    assert json.loads((folder / "report.json").read_text())["gate"]["exit_code"] == 1


def test_a_passing_gate_passes_the_step(workspace):
    proc, out = run_step("Scan and gate", {**BASE, "fail-under": "clean_accuracy=0.5", "args": "--batch-size\n64",
                                            "output-dir": "passing/"}, workspace)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["exit-code"] == "0" and out["sarif"] == "passing/results.sarif"
    log = _reports(workspace / "passing")
    assert log["runs"][0]["properties"]["gate"] == "passed"
    assert all(r["ruleId"].startswith("check/") for r in log["runs"][0]["results"])  # no gate result
    assert "--batch-size 64" in proc.stdout  # args reach robust, one word per line


def test_a_gate_that_cannot_judge_exits_2_before_any_work(workspace):
    proc, out = run_step("Scan and gate", {**BASE, "fail-under": "robust_accuracy@l2:1=0.5", "output-dir": "bad"},
                         workspace)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert out["exit-code"] == "2"
    assert not (workspace / "bad" / "results.sarif").exists()  # the upload steps' hashFiles() guard skips them


def test_the_example_workflow_uses_the_action_with_real_inputs(run_cli):
    wf = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text(encoding="utf-8"))
    steps = wf["jobs"]["robust"]["steps"]
    [use] = [s for s in steps if str(s.get("uses", "")).endswith("/robust@v1")]
    given = use["with"]
    assert set(given) <= set(INPUTS), set(given) - set(INPUTS)
    assert all(k in given for k, v in INPUTS.items() if v.get("required"))
    for key, kind in (("fail-under", "fail-under"), ("max-drop", "max-drop")):
        for rule in filter(None, map(str.strip, str(given.get(key, "")).splitlines())):
            parse_rule(kind, rule)
    help_text = run_cli("scan", "--help").stdout
    for word in str(given.get("args", "")).split():
        assert not word.startswith("-") or word in help_text, word
    assert wf["permissions"]["security-events"] == "write"  # upload-sarif needs it
