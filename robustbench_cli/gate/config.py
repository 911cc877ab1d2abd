"""``[tool.robust.gate]`` of a pyproject.toml: gate rules kept with the project, read where a gate option is given."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from robustbench_cli.core.errors import UserError


@dataclass
class GateConfig:
    fail_under: list[str]
    max_drop: list[str]
    paired: bool | None = None
    alpha: float | None = None
    source: str = ""


_CONFIG_KEYS = {"fail-under": "fail_under", "fail_under": "fail_under", "max-drop": "max_drop", "max_drop": "max_drop",
                "paired": "paired", "alpha": "alpha"}


def load_config(path: str | Path | None) -> GateConfig:
    """``[tool.robust.gate]`` of a pyproject.toml: the given file, or ./pyproject.toml when it exists."""
    explicit = path is not None
    p = Path(path) if path is not None else Path("pyproject.toml")
    if not p.is_file():
        if explicit:
            raise UserError(f"config {str(p)!r} not found")
        return GateConfig([], [])
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not valid TOML ({e})") from None
    table = doc.get("tool", {}).get("robust", {}).get("gate")
    cfg = GateConfig([], [], source=f"{p} [tool.robust.gate]")
    if table is None:
        return cfg
    if not isinstance(table, dict):
        raise UserError(f"{p}: [tool.robust.gate] must be a table")
    for key, value in table.items():
        attr = _CONFIG_KEYS.get(key)
        if attr is None:
            raise UserError(f"{p}: unknown key {key!r} in [tool.robust.gate] (known: fail-under, max-drop, paired, alpha)")
        if attr in ("fail_under", "max_drop"):
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(i, (str, int, float)) and not isinstance(i, bool) for i in items):
                raise UserError(f"{p}: [tool.robust.gate] {key} must be a rule or a list of rules (strings)")
            getattr(cfg, attr).extend(str(i) for i in items)
        elif attr == "paired":
            if not isinstance(value, bool):
                raise UserError(f"{p}: [tool.robust.gate] paired must be true or false")
            cfg.paired = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise UserError(f"{p}: [tool.robust.gate] alpha must be a number between 0 and 1")
            cfg.alpha = float(value)
    return cfg
