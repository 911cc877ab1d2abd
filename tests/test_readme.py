"""The README's promises, run as written: its Python API example executes and writes what it says, and the README
stays a front page (under 300 lines) with every relative link pointing at a file that exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_python_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = _python_blocks(README)
    assert len(blocks) == 1, "the README has one Python example; this test runs it"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= printed <= 1.0
    report = json.loads((tmp_path / "mnist.json").read_text())
    assert report["format"] == "robust-report/1"
    assert [r["threat"] for r in report["results"]] == ["linf:0.1", "linf:0.3"]
    assert "<html" in (tmp_path / "mnist.html").read_text()[:500].lower()


def test_the_readme_is_a_front_page_with_live_links():
    assert len(README.splitlines()) < 300
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, missing
