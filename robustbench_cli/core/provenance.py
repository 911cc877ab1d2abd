"""Where a result came from: the versions of the libraries that produced it."""

from __future__ import annotations

import platform
from importlib import metadata

_LIBS = ("torch", "onnxruntime", "numpy", "timm", "pandas")


def library_versions() -> dict:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out
