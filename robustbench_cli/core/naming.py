"""How a model is named where space is short: the file name of a path, the attribute of a module spec."""

from __future__ import annotations

from pathlib import Path


def short_name(name: str) -> str:
    """A file path shows as its file name, a module spec as its attribute; reports keep the full name."""
    if ":" in name and not name.startswith("timm:"):
        head, _, attr = name.rpartition(":")
        if not head.endswith((".onnx", ".pt", ".pth")) and len(head) > 1:
            return f"{Path(head).name}:{attr}" if head.endswith(".py") else attr
    return Path(name).name if ("/" in name or "\\" in name) else name
