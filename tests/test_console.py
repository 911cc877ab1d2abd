"""The terminal view at 100 columns: targets named apart, a main table and a cascade table, "not finished" where a
stopped scan left the battery, and the progress display (one overall row, the step running now)."""

from __future__ import annotations

import io

import pytest
from report_factory import synthetic_report
from rich.console import Console

from robustbench_cli.reports.console import render_summary


def test_targets_are_named_apart_and_never_cut_at_100_columns():
    names = ("robustbench_cli.zoo:mnist_cnn@mnist_cnn.pt", "robustbench_cli.zoo:mnist_cnn@mnist_cnn_pgd.pt",
             "/models/exported/mnist_cnn.onnx")
    rep = synthetic_report(targets=tuple((n, 0.4) for n in names), threats=("linf:0.3",))
    buf = io.StringIO()
    render_summary(rep, Console(file=buf, width=100, color_system=None))
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 100
    # the target column, read down: a folded name continues on the next line of its row
    column = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│"))
    assert "…" not in column
    for label in ("mnist_cnn@mnist_cnn.pt", "mnist_cnn@mnist_cnn_pgd.pt", "mnist_cnn.onnx"):
        assert label in column, (label, column)


# --- a stopped scan: "not finished", never a partial robust accuracy ---------------------------------------------
def _stopped_report():
    """Ctrl-C during pgd on model-a at linf:8/255: 50 of its 169 samples done; model-b never started."""
    from report_factory import interrupted

    rep = interrupted(synthetic_report(threats=("linf:8/255", "l2:0.5")), "model-a.onnx", "linf:8/255", "pgd", 50)
    row = rep.results[0]
    assert row.attack("pgd").robust_accuracy_after is not None  # the partial number is in the JSON, for --resume
    return rep


def _table_rows(text: str) -> dict[str, list[str]]:
    """Each table row of the terminal output as its cells, keyed by the threat in its second cell."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[1]:
            rows.setdefault(cells[1], []).extend(cells)
    return rows


def test_a_stopped_scan_shows_not_finished_never_a_partial_robust_accuracy():
    from robustbench_cli.reports.frames import NOT_FINISHED

    rep = _stopped_report()
    buf = io.StringIO()
    render_summary(rep, Console(file=buf, width=100, color_system=None))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    main, cascade = text.split("robust accuracy after each attack")
    linf, l2 = _table_rows(main)["linf:8/255"], _table_rows(main)["l2:0.5"]
    assert linf[4] == NOT_FINISHED and l2[4] == NOT_FINISHED  # the robust column of both rows
    assert "clean" in main and linf[3] == "95.0%"  # what did finish is still shown
    header = [line for line in cascade.splitlines() if "fgsm" in line][0]
    assert [c.strip() for c in header.split("┃")[3:-1]] == ["fgsm", "pgd", "square", "noise"]
    linf, l2 = _table_rows(cascade)["linf:8/255"], _table_rows(cascade)["l2:0.5"]
    assert linf[2:] == ["84.5%", NOT_FINISHED, NOT_FINISHED, NOT_FINISHED]  # fgsm finished before the stop
    assert l2[2:] == [NOT_FINISHED] * 4
    partial = f"{100 * rep.results[0].attack('pgd').robust_accuracy_after:.1f}%"
    assert partial not in text and f"{100 * rep.results[1].robust_accuracy:.1f}%" not in text
    assert "not finished: the scan stopped (interrupted)" in " ".join(text.split())


def test_the_csv_and_markdown_summaries_say_not_finished_too():
    from robustbench_cli.reports.frames import NOT_FINISHED, attacks_frame, summary_frame
    from robustbench_cli.reports.writers import to_csv, to_markdown

    rep = _stopped_report()
    df = summary_frame(rep)
    assert df["robust_accuracy"].tolist() == [NOT_FINISHED, NOT_FINISHED]
    assert df["after:fgsm"].tolist() == [rep.results[0].attack("fgsm").robust_accuracy_after, NOT_FINISHED]
    assert df["after:pgd"].tolist() == [NOT_FINISHED, NOT_FINISHED]
    att = attacks_frame(rep)
    pgd = att[(att.threat == "linf:8/255") & (att.attack == "pgd")].iloc[0]
    assert pgd["status"] == NOT_FINISHED and pgd["robust_accuracy_after"] != pgd["robust_accuracy_after"]  # NaN
    assert (att["status"] == NOT_FINISHED).sum() == 7 and (att["status"] == "ran").sum() == 1
    csv_rows = to_csv(rep).splitlines()
    header = csv_rows[0].split(",")
    first = dict(zip(header, csv_rows[1].split(",")))
    assert first["robust_accuracy"] == NOT_FINISHED and first["after:pgd"] == NOT_FINISHED
    assert first["after:fgsm"] == "0.845"
    md = to_markdown(rep)
    summary = md.split("## Summary")[1].split("## Attacks")[0]
    assert summary.count(NOT_FINISHED) == 2 + 3 + 4  # robust of both rows, pgd/square/noise, all of l2
    pgd_line = next(x for x in md.splitlines() if x.startswith("| model-a.onnx | linf:8/255 | pgd |"))
    cells = [c.strip() for c in pgd_line.split("|")[1:-1]]
    assert cells[3] == NOT_FINISHED and cells[7] == "–"  # status, robust_accuracy_after


def test_a_finished_scan_shows_its_numbers_and_drops_attacks_skipped_everywhere():
    rep = synthetic_report(targets=(("model-a.pt", 0.45),), threats=("linf:8/255",), white_box=True)
    assert rep.results[0].attack("square").skipped  # the synthetic white box skips square
    buf = io.StringIO()
    render_summary(rep, Console(file=buf, width=100, color_system=None))
    text = buf.getvalue()
    main, cascade = text.split("robust accuracy after each attack")
    assert "not finished" not in text and "square" not in main
    header = [line for line in cascade.splitlines() if "fgsm" in line][0]
    assert [c.strip() for c in header.split("┃")[3:-1]] == ["fgsm", "pgd", "noise"]  # no column for square
    assert "skipped square on model-a.pt" in text  # its reason is a line of its own
    assert _table_rows(main)["linf:8/255"][4] == f"{100 * rep.results[0].robust_accuracy:.1f}%"


# --- the progress display -------------------------------------------------------------------------------------------
def _display(width: int = 100):
    from robustbench_cli.cli.app import make_progress

    buf = io.StringIO()
    return make_progress(Console(file=buf, width=width, color_system=None)), buf


def _visible(display) -> dict[str, tuple[float, float | None]]:
    return {t.description: (t.completed, t.total) for t in display.progress.tasks if t.visible}


def test_progress_sums_every_attack_into_one_overall_row_that_grows_as_attacks_start():
    from robustbench_cli.cli.app import ScanProgress

    display, buf = _display()
    assert _visible(display) == {ScanProgress.OVERALL: (0, 1), ScanProgress.SETUP: (0, 1)}  # before any work
    with display:
        # as cascade.py calls it: per batch of each attack, done of planned; (desc, 0, 0) when nothing is left to do
        display.update("model linf:0.3 fgsm", 64, 100)
        assert _visible(display) == {ScanProgress.OVERALL: (65, 101), "model linf:0.3 fgsm": (64, 100)}
        display.update("model linf:0.3 fgsm", 100, 100)
        display.update("model linf:0.3 certificate (ibp)", 4, 9)  # certify.py: stopped where it does not pay
        display.update("model linf:0.3 pgd", 10, 30)
        assert _visible(display) == {ScanProgress.OVERALL: (1 + 100 + 4 + 10, 1 + 100 + 9 + 30),
                                     "model linf:0.3 pgd": (10, 30)}  # one step on screen: the one running
        display.update("model linf:0.3 pgd", 30, 30)
        display.update("model linf:0.3 square", 0, 0)
        display.update("/a/very/long/path/to/the/exported/model.onnx linf:0.3 square", 3, 20)
        display.finish(None)
        assert _visible(display) == {ScanProgress.OVERALL: (1 + 100 + 4 + 30 + 3, 1 + 100 + 4 + 30 + 3)}
    text = buf.getvalue()
    assert "overall (total grows as attacks start)" in text and "eta" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_progress_of_a_sharded_run_is_the_overall_row():
    from robustbench_cli.cli.app import ScanProgress

    display, buf = _display()
    with display:
        display.update(ScanProgress.SHARDS, 0, 0)  # the driver's first ticks: no shard has started an attack
        assert _visible(display) == {ScanProgress.OVERALL: (0, 1), ScanProgress.SETUP: (0, 1)}
        display.update(ScanProgress.SHARDS, 40, 400)
        assert _visible(display) == {ScanProgress.OVERALL: (41, 401)}
        display.update(ScanProgress.SHARDS, 350, 420)
        assert _visible(display) == {ScanProgress.OVERALL: (351, 421)}
        display.finish("interrupted")  # stopped: the row stays where it was
        assert _visible(display) == {ScanProgress.OVERALL: (351, 421)}
    assert ScanProgress.SHARDS not in buf.getvalue() and "351/421" in buf.getvalue()


def test_progress_leaves_nothing_when_the_scan_fails():
    display, buf = _display()
    try:
        with display:
            display.update("model linf:0.3 fgsm", 5, 100)
            raise ValueError("the scan failed")
    except ValueError:
        pass
    assert buf.getvalue().strip() == ""  # the error's one line is all a failed scan leaves on stderr


def test_scan_shows_progress_before_any_data_or_model_loads(run_cli, monkeypatch, tmp_path):
    """The overall row and the setup step are on screen when api.run starts (it loads the data, then the models)."""
    from report_factory import tiny_cli_files

    from robustbench_cli import api
    from robustbench_cli.cli.app import ScanProgress
    from robustbench_cli.core.errors import UserError

    files = tiny_cli_files(tmp_path)
    seen = {}

    def run(cfg, progress=None, **kwargs):
        display = progress.__self__
        seen.update(live=display.progress.live.is_started, rows=_visible(display))
        raise UserError("the data cannot be read")

    monkeypatch.setattr(api, "run", run)
    r = run_cli("scan", files["model"], "--weights", files["w0"], "--data", files["data"], "--eps", "0.05",
                "-o", tmp_path / "r.json")
    assert seen == {"live": True, "rows": {ScanProgress.OVERALL: (0, 1), ScanProgress.SETUP: (0, 1)}}
    assert r.exit_code == 2
    assert [x for x in r.stderr.splitlines() if x.strip()] == ["error: the data cannot be read"]


# --- the real commands at 100 columns --------------------------------------------------------------------------------
def _at_100_columns(run_cli, monkeypatch, *args) -> tuple[str, str]:
    """Run a command with a 100-column terminal; (stdout, stderr), every line checked."""
    from robustbench_cli.cli import commands

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(commands, "out", Console(width=100))  # the module's consoles are made at import
    monkeypatch.setattr(commands, "err", Console(stderr=True, width=100))
    r = run_cli(*args)
    assert r.exit_code == 0, r.stdout + r.stderr
    for line in (r.stdout + r.stderr).splitlines():
        assert len(line) <= 100, line
    return r.stdout, r.stderr


def test_demo_fits_100_columns(run_cli, monkeypatch, tmp_path):
    out, err = _at_100_columns(run_cli, monkeypatch, "demo", "--n", "24", "--report-dir", tmp_path)
    main, cascade = out.split("robust accuracy after each attack")
    assert "robust" in main and "square" not in main and "skipped" not in main  # no attack column in the main table
    for attack in ("fgsm", "pgd", "square", "noise"):  # what ran on either target
        assert attack in cascade
    assert "hopskipjump" not in cascade.split("skipped")[0]  # skipped on both targets: a line, not a column
    assert "overall (total grows as attacks start)" in err


@pytest.mark.slow
def test_a_standard_scan_fits_100_columns(run_cli, monkeypatch, tmp_path):
    from robustbench_cli import zoo

    out, err = _at_100_columns(run_cli, monkeypatch, "scan", zoo.SPEC, "--weights", zoo.WEIGHTS, "--data", "mnist",
                               "--n", "4", "--eps", "0.1", "--preset", "standard", "-o", tmp_path / "r.json")
    main, cascade = out.split("robust accuracy after each attack")
    assert "certified" in main and "apgd" not in main
    assert "apgd-ce-" in cascade and "closest" in cascade  # a long label breaks after a hyphen, uncut
    assert "square-undecided" not in cascade.split("skipped")[0]
