"""Reports: the versioned model (``model``), tables (``frames``), file writers by suffix (``writers``), terminal (``console``)."""

from robustbench_cli.reports.model import FORMAT, build_report, load_report
from robustbench_cli.reports.writers import WRITERS, check_outputs, write_reports

__all__ = ["FORMAT", "WRITERS", "build_report", "check_outputs", "load_report", "write_reports"]
