"""The ``robust`` command line: ``scan``, ``demo``, ``attacks``, ``compare``, ``gate``, ``train``, ``generator``,
``surrogate``: a thin layer over the Python API (``robustbench_cli.api``).

Exit codes are a contract (``core.errors.ExitCode``): 0 done, 1 a gate failed (reserved for gates), 2 could not
judge (bad usage, unreadable model or data, internal error), 130 interrupted. Errors are one line on stderr;
``--debug`` shows the traceback.
"""

from robustbench_cli.cli.main import app, main

__all__ = ["app", "main"]
