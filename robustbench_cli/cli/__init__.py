"""The ``robust`` command line: ``scan``, ``demo``, ``attacks``, ``compare``, ``gate``.

Exit codes are a contract: 0 done, 1 a gate failed (reserved for gates), 2 could not judge (bad usage, unreadable
model or data, internal error). Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from robustbench_cli.cli.app import app, main

__all__ = ["app", "main"]
