"""`robust compare`: side by side, the paired view, and refusing reports that measure different things."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_factory import only_target, set_robust, synthetic_report, write

from robustbench_cli.reports import compare as C


@pytest.fixture
def pair(tmp_path):
    rep = synthetic_report(n=100, threats=("linf:8/255",))
    set_robust(rep, "model-a.onnx", "linf:8/255", [True] * 50 + [False] * 50)
    set_robust(rep, "model-b.onnx", "linf:8/255", [False] * 7 + [True] * 43 + [True] * 2 + [False] * 48)
    a = write(only_target(rep, "model-a.onnx"), tmp_path / "a.json")
    b = write(only_target(rep, "model-b.onnx"), tmp_path / "b.json")
    both = write(rep, tmp_path / "both.json")
    return rep, a, b, both


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error:") and result.stdout.strip() == "", (lines[0], result.stdout)
    for f in fragments:
        assert f in lines[0], lines[0]


def test_two_reports_side_by_side_with_flips(run_cli, pair, tmp_path):
    _, a, b, _ = pair
    r = run_cli("compare", a, b, "-o", tmp_path / "c.json", "-o", tmp_path / "c.md", "-o", tmp_path / "c.html")
    assert r.exit_code == 0, r.stderr
    assert "model-a.onnx" in r.stdout and "model-b.onnx" in r.stdout and "robust→broken" in r.stdout
    cmp = json.loads((tmp_path / "c.json").read_text())
    assert cmp["format"] == "robust-comparison/1" and [c["label"] for c in cmp["columns"]] == ["model-a.onnx", "model-b.onnx"]
    th = cmp["threats"][0]
    rows = {row["key"]: row for row in th["rows"]}
    assert rows["robust_accuracy"]["display"] == ["50.0%", "45.0%"] and rows["robust_accuracy"]["diff"] == [None, "-5.0pp"]
    assert {"after:fgsm", "queries:square", "seconds:pgd", "queries_mean", "seconds"} <= set(rows)
    p = th["paired"][0]
    assert (p["robust_to_broken"], p["broken_to_robust"], p["both_robust"], p["both_broken"]) == (7, 2, 43, 48)
    assert p["p_value"] == pytest.approx(0.1796875)  # exact two-sided McNemar for 7 vs 2
    md = (tmp_path / "c.md").read_text()
    assert "| model-b.onnx | 100 | 43 | 7 | 2 | 48 | 0.1797 |" in md
    assert "<h2>Comparison</h2>" in (tmp_path / "c.html").read_text()


def test_one_report_with_several_targets_compares_them(run_cli, pair):
    rep, a, _, both = pair
    r = run_cli("compare", both)
    assert r.exit_code == 0, r.stderr
    assert "robust→broken" in r.stdout
    _one_line_error(run_cli("compare", a), "nothing to compare")


def test_same_checkpoint_name_is_labelled_by_its_report(tmp_path):
    rep = synthetic_report(n=50, threats=("linf:8/255",), targets=(("model.onnx", 0.5),))
    (tmp_path / "main").mkdir()
    (tmp_path / "pr").mkdir()
    sources = [(str(tmp_path / "main" / "report.json"), rep), (str(tmp_path / "pr" / "report.json"), rep)]
    merged, _ = C.merge_reports(sources)
    labels = [t.name for t in merged.targets]
    assert len(set(labels)) == 2 and all(label.startswith("model.onnx [") for label in labels)
    assert C.compare(merged).threats[0].paired[0].robust_to_broken == 0


def _variant(tmp_path, name, change):
    """The second report, changed in its JSON form (as a file written elsewhere would be)."""
    rep = only_target(synthetic_report(n=100), "model-b.onnx").to_dict()
    change(rep)
    return write(rep, tmp_path / name)


def _drop_threat(rep):
    rep["results"] = rep["results"][:1]


def _other_battery(rep):
    rep["battery"] = {**rep["battery"], "version": 2}


def _other_settings(rep):
    rep["battery"] = json.loads(json.dumps(rep["battery"]))
    rep["battery"]["attacks"][0]["steps"] = 5


def _other_n(rep):
    for r in rep["results"]:  # the last sample left out (as a targeted scan leaves out the target class)
        s = r["samples"]
        s["eligible"][-1] = False
        r["n"] = sum(s["eligible"])
        r["clean_accuracy"] = sum(p == y and e for p, y, e in zip(s["clean_pred"], s["label"], s["eligible"])) / r["n"]
        r["robust_accuracy"] = sum(x and e for x, e in zip(s["robust"], s["eligible"])) / r["n"]


def _other_budget(rep):
    rep["options"] = {**rep["options"], "queries": 1000}


# id: (how the second report differs, words of the message); ids are the rows of docs/bad-inputs.md
INCOMPARABLE = {
    "compare-different-data": (lambda rep: rep["data"].update(sha256="cd" * 32), ("cannot compare", "different data")),
    "compare-different-threats": (_drop_threat, ("cannot compare", "different threat models")),
    "compare-different-battery": (_other_battery, ("cannot compare", "battery synthetic@1 vs synthetic@2")),
    "compare-different-attack-settings": (_other_settings, ("cannot compare", "different attack settings")),
    "compare-different-n": (_other_n, ("cannot compare", "different n")),
    "compare-different-query-budget": (_other_budget, ("cannot compare", "query budget")),
}


@pytest.mark.parametrize("case", list(INCOMPARABLE))
def test_incomparable_reports_are_refused(run_cli, tmp_path, case):
    change, words = INCOMPARABLE[case]
    a = write(only_target(synthetic_report(n=100), "model-a.onnx"), tmp_path / "a.json")
    b = _variant(tmp_path, "b.json", change)
    out = tmp_path / "c.md"
    r = run_cli("compare", a, b, "-o", out)
    _one_line_error(r, *words)
    assert not out.exists()


def test_a_different_seed_is_a_warning(run_cli, tmp_path):
    a = write(only_target(synthetic_report(n=100), "model-a.onnx"), tmp_path / "a.json")
    b = _variant(tmp_path, "b.json", lambda rep: rep.update(seed=7))
    r = run_cli("compare", a, b)
    assert r.exit_code == 0
    assert "warning" in r.stderr and "different seeds (0 vs 7)" in r.stderr


def _no_targets(d):
    rep = only_target(synthetic_report(n=100), "model-b.onnx").to_dict()
    rep["targets"], rep["results"] = [], []
    return write(rep, d / "none.json")


def _incomplete(d):
    rep = only_target(synthetic_report(n=100), "model-b.onnx").to_dict()
    del rep["results"]
    return write(rep, d / "incomplete.json")


def _text(name: str, text: str):
    def make(d):
        (d / name).write_text(text)
        return d / name
    return make


def _folder(d):
    (d / "f.json").mkdir()
    return d / "f.json"


# id: (the second report, made in a folder; words of the message)
UNREADABLE = {
    "compare-report-missing": (lambda d: d / "missing.json", ("not found",)),
    "compare-report-is-folder": (_folder, ("is a folder",)),
    "compare-report-empty": (_text("e.json", ""), ("empty file", "not a JSON report")),
    "compare-report-not-json": (_text("x.json", "{no"), ("not a JSON report",)),
    "compare-report-unsupported-version": (_text("y.json", '{"format": "robust-report/9"}'), ("robust-report/9", "not supported")),
    "compare-not-a-robust-report": (_text("z.json", "[1, 2]"), ("not a robust report",)),
    "compare-report-incomplete": (_incomplete, ("not a complete robust report", "missing results")),
    "compare-report-without-targets": (_no_targets, ("the report has no targets",)),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_reports(run_cli, pair, tmp_path, case):
    setup, words = UNREADABLE[case]
    _, a, _, _ = pair
    _one_line_error(run_cli("compare", a, setup(tmp_path)), *words)


# id: (arguments after `compare`, with {a} {b} the two reports and {dir} a folder; words of the message)
OUTPUTS = {
    "compare-unknown-output-format": (["{a}", "{b}", "-o", "{dir}/c.pdf"], ("unknown comparison format", ".pdf")),
    "compare-output-under-a-file": (["{a}", "{b}", "-o", "{a}/c.md"], ("cannot create folder", "is a file, not a folder")),
    "compare-output-is-folder": (["{a}", "{b}", "-o", "{dir}/folder.md"], ("is a folder",)),
    "compare-nothing-to-compare": (["{a}"], ("nothing to compare",)),
}


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_bad_outputs_are_refused_first(run_cli, pair, tmp_path, case):
    args, words = OUTPUTS[case]
    _, a, b, _ = pair
    (tmp_path / "folder.md").mkdir()
    _one_line_error(run_cli("compare", *[x.format(a=a, b=b, dir=tmp_path) for x in args]), *words)


COMPARE_CASES = {**INCOMPARABLE, **UNREADABLE, **OUTPUTS}  # every bad input of `robust compare`


def test_the_same_epsilon_written_two_ways_lines_up():
    rep = synthetic_report(n=50, threats=("linf:8/255",))
    a, b = only_target(rep, "model-a.onnx"), only_target(rep, "model-b.onnx")
    b.results[0].threat = "linf:0.03137254901960784"
    merged, _ = C.merge_reports([("a.json", a), ("b.json", b)])
    assert {r.threat for r in merged.results} == {"linf:8/255"}
    assert len(C.compare(merged).threats) == 1


def test_two_checkpoints_of_one_architecture_scan_side_by_side(tmp_path, run_cli):
    """`net.py:Net --weights a.pt --weights b.pt`: the targets are told apart by their weights, not refused."""
    import shutil

    from robustbench_cli import zoo

    other = tmp_path / "copy_of_the_same_weights.pt"
    shutil.copy(zoo.WEIGHTS, other)
    out = tmp_path / "two.json"
    res = run_cli("scan", zoo.SPEC, zoo.SPEC, "--weights", zoo.WEIGHTS, "--weights", other, "--data", "mnist:test",
                  "--n", "20", "--eps", "0.1", "--attacks", "fgsm", "--device", "cpu", "-o", out)
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    names = [t["name"] for t in rep["targets"]]
    assert names == [f"{zoo.SPEC}@{Path(zoo.WEIGHTS).name}", f"{zoo.SPEC}@{other.name}"]
    # same weights, same seed: the per-sample results agree, and the paired view has no flips
    a, b = rep["results"]
    assert a["samples"]["robust"] == b["samples"]["robust"]
    res = run_cli("compare", out)
    assert res.exit_code == 0, res.output
