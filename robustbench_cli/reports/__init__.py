"""Reports: the typed report model (``model``), built from evaluations (``build``), as tables (``frames``), in the
terminal (``console``), compared (``compare``), and written by file suffix (``writers``: JSON, CSV, Markdown, HTML,
JUnit XML)."""

from robustbench_cli.reports.model import FORMAT, Report, Verdict, load_report

__all__ = ["FORMAT", "Report", "Verdict", "load_report"]
