"""docs/bad-inputs.md and the CLI error tests name the same cases, so neither can drift from the other.

Each row of the table is one test case: its id, the command it runs, and the key words its test requires in the
message. A case added to a test table needs its row, and a row needs its case.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"

# (test module, table, command): each table maps id -> (..., words the message must contain)
SOURCES = [
    ("test_cli_errors", "CASES", "scan"),
    ("test_cli_errors", "DEMO_CASES", "demo"),
    ("test_compare_cli", "COMPARE_CASES", "compare"),
    ("test_gate_cli", "GATE_CASES", "gate"),
    ("test_gate_cli", "SCAN_GATE_CASES", "scan"),
    ("test_shards", "SCALE_CASES", "scan"),
    ("test_shards", "MERGE_CASES", "merge"),
]


def _cases() -> dict[str, tuple[str, tuple[str, ...]]]:
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for module, table, command in SOURCES:
        for case, value in getattr(importlib.import_module(module), table).items():
            assert case not in out, f"case id {case!r} is used twice"
            words = value[-1] if isinstance(value[-1], tuple) else (value[-1],)
            out[case] = (command, tuple(words))
    return out


def _rows() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """id -> (command, key words, exit code) from the one table of the document."""
    rows: dict[str, tuple[str, tuple[str, ...], str]] = {}
    lines = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    assert lines[0].split("|")[1:-1] == [" id ", " command ", " what is wrong ", " the message says ", " exit "], lines[0]
    for line in lines[2:]:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert len(cells) == 5, line
        case = cells[0].strip("`")
        assert case not in rows, f"row {case!r} appears twice"
        assert cells[2], f"row {case!r} does not say what is wrong"
        rows[case] = (cells[1], tuple(re.findall(r"`([^`]*)`", cells[3])), cells[4])
    return rows


def test_every_case_has_a_row_and_every_row_a_case():
    cases, rows = _cases(), _rows()
    assert sorted(set(cases) - set(rows)) == [], "cases without a row in docs/bad-inputs.md"
    assert sorted(set(rows) - set(cases)) == [], "rows in docs/bad-inputs.md without a test case"


@pytest.mark.parametrize("case", sorted(_cases()))
def test_row_matches_its_case(case):
    command, words = _cases()[case]
    rows = _rows()
    if case not in rows:
        pytest.fail(f"{case!r} has no row in {DOC.name}")
    doc_command, doc_words, code = rows[case]
    assert doc_command == command
    assert sorted(doc_words) == sorted(words), "the row's key words differ from those the test checks"
    assert code == "2"


def test_the_table_covers_the_kinds_the_issue_asks_for():
    rows = _rows()
    assert len(rows) >= 60
    for case in ("data-empty-file", "weights-truncated", "model-is-folder", "shape-rgb-into-grey", "data-float-0-255",
                 "data-nan", "labels-outside-classes", "model-nan-outputs", "eps-zero", "threat-l2-beyond-diagonal",
                 "threat-unknown-norm", "attacks-unknown", "image-folder-empty", "image-corrupt", "npz-without-x-y",
                 "compare-different-data", "report-under-a-file", "onnx-unknown-operator", "onnx-external-data-missing"):
        assert case in rows, case


def test_readme_links_the_table():
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "(docs/bad-inputs.md)" in readme
