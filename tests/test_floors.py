"""The house rules of the package, read from the source: imports only point down the floors, no import cycles, and
imports inside functions only where they keep something heavy off a light path.

Floors, lowest first (docs/architecture.md draws them)::

    core  <-  zoo  <-  targets  <-  attacks  <-  evaluation  <-  training | reports  <-  gate  <-  config  <-  api
          <-  distributed  <-  cli

A module may import its own package and any lower floor; ``training`` and ``reports`` share a floor and never
import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robustbench_cli"

FLOORS = {"core": 0, "zoo": 0.5, "targets": 1, "attacks": 2, "evaluation": 3, "training": 4, "reports": 4,
          "gate": 5, "config": 6, "api": 7, "distributed": 7.5, "cli": 8, "__init__": 9, "__main__": 9}

# Imports inside function bodies that name our own modules are allowed only where they keep a light path light:
# the CLI loads the floors below it when a command runs (``robust --help`` imports neither torch nor pandas), the
# target loader picks its backend by kind, the report's views load pandas/matplotlib when asked for, and
# ``python -m robustbench_cli.zoo`` (the zoo's rebuild script) sits above everything.
LAZY_ALLOWED = ("robustbench_cli.cli.", "robustbench_cli.targets", "robustbench_cli.reports.model",
                "robustbench_cli.zoo.__main__", "robustbench_cli.__init__")


def _module(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts)


def _imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of our own package in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    module = _module(path, root)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module[: -len(".__init__")]
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            names = [f"{names[0]}.{a.name}" for a in node.names]  # ``from pkg import x``: x may be a module
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(n, node.lineno, id(node) in in_function) for n in names if n.split(".")[0] == "robustbench_cli"]
    return found


def _floor(module: str) -> tuple[float, str]:
    parts = module.split(".")
    if module == "robustbench_cli.zoo.__main__":
        return 9, "__main__"
    name = parts[1] if len(parts) > 1 else "__init__"
    if name not in FLOORS:
        pytest.fail(f"{module}: a package or module with no floor; add it to FLOORS and docs/architecture.md")
    return FLOORS[name], name


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _wrong_way(root: Path) -> list[str]:
    wrong = []
    for path in sorted(root.rglob("*.py")):
        module = _module(path, root)
        floor, package = _floor(module)
        for target, line, _ in _imports(path, root):
            to_floor, to_package = _floor(target if target.count(".") > 1 or target[16:] in FLOORS else "robustbench_cli")
            if to_floor > floor or (to_floor == floor and to_package != package):
                wrong.append(f"{path.relative_to(root.parent)}:{line} imports {target} ({package} -> {to_package})")
    return wrong


def test_every_import_points_down_or_stays_in_its_package():
    wrong = _wrong_way(PACKAGE)
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def _resolve(target: str) -> str | None:
    """The module file an import runs: ``a.b`` is ``a/b.py`` or ``a/b/__init__.py``; ``a.b.name`` falls back to a.b."""
    while target:
        for key in (target, f"{target}.__init__"):
            if key in MODULES:
                return key
        target = target.rpartition(".")[0]
    return None


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _, lazy in _imports(path):
            if not lazy:
                key = _resolve(target)
                if key is not None and key != module:
                    graph[module].add(key)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_inside_functions_only_where_they_keep_a_path_light():
    hidden = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function"
              for module, path in MODULES.items() if not module.startswith(LAZY_ALLOWED)
              for target, line, lazy in _imports(path) if lazy]
    assert not hidden, "\n".join(hidden)


def test_the_checker_sees_upward_and_sideways_imports(tmp_path):
    """The checker itself: an attack importing a terminal renderer, and training importing a report, are caught."""
    root = tmp_path / "robustbench_cli"
    (root / "attacks").mkdir(parents=True)
    (root / "training").mkdir()
    (root / "attacks" / "bad.py").write_text("from robustbench_cli.reports.console import render\n")
    (root / "training" / "side.py").write_text("def f():\n    from ..reports import model\n")
    (root / "core").mkdir()
    (root / "core" / "fine.py").write_text("import robustbench_cli.core.errors\n")
    wrong = _wrong_way(root)
    assert len(wrong) == 2
    assert "attacks -> reports" in wrong[0] and "training -> reports" in wrong[1]
