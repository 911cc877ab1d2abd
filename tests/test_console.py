"""The terminal table names every target so that two of them can be told apart, at 100 columns."""

from __future__ import annotations

import io

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
