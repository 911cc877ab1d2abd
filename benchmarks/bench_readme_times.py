"""The times the top-level README states, measured: each of its timed commands run once, as a user runs it.

Every command is the README's own, run as a whole process (start-up, imports, data and models included) in a fresh
temporary folder, timed with ``time.perf_counter``, one run each. The table says on what: the cores this process
may use, the load average before and after each run, and the versions of Python, torch and robust. On a shared
machine the seconds swing with the load, so quote them with it. It also reads what each run scanned from its
JSON reports (data, images per target, targets), so the README's description of the demo can be checked too.

    python benchmarks/bench_readme_times.py                  # writes benchmarks/results/readme_times.json
    python benchmarks/bench_readme_times.py --only "robust demo"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, command_line, cores, loadavg, versions, write_json  # noqa: E402

# (the command as the README writes it, what the README says of its time)
COMMANDS: list[tuple[str, str]] = [
    ("robust demo", "Quick start"),
    ("robust demo --defences", "Quick start, the defence zoo"),
]


def _argv(command: str) -> list[str]:
    """The README's command; `robust` is the installed entry point, or this Python's module when it is missing."""
    words = command.split()
    robust = shutil.which("robust")
    return ([robust] if robust else [sys.executable, "-m", "robustbench_cli"]) + words[1:]


def _scanned(folder: Path) -> list[dict]:
    """What each JSON report in ``folder`` scanned: data, images, targets, threats."""
    out = []
    for p in sorted(folder.rglob("*.json")):
        try:
            rep = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not str(rep.get("format", "")).startswith("robust-report/"):
            continue
        out.append({"report": p.name, "data": rep["data"]["name"], "images": rep["data"]["n"],
                    "targets": [t["name"] for t in rep["targets"]],
                    "threats": sorted({r["threat"] for r in rep["results"]})})
    return out


def run(command: str, where: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="robust-readme-") as tmp:
        before = loadavg()
        t0 = time.perf_counter()
        done = subprocess.run(_argv(command), cwd=tmp, capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "100"})
        seconds = time.perf_counter() - t0
        after = loadavg()
        return {"command": command, "readme": where, "seconds": round(seconds, 1), "exit_code": done.returncode,
                "load_before": before, "load_after": after, "scanned": _scanned(Path(tmp)),
                "stderr_tail": done.stderr.strip().splitlines()[-3:] if done.returncode else []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="run only this README command (repeatable)")
    ap.add_argument("--out", default=str(RESULTS / "readme_times.json"))
    args = ap.parse_args(argv)
    todo = [(c, w) for c, w in COMMANDS if not args.only or c in args.only]
    machine = {**versions(), "cpu_count": os.cpu_count(), "cores_usable": cores()}
    rows = [run(c, w) for c, w in todo]
    print(f"machine: {machine['cores_usable']} usable cores (os.cpu_count {machine['cpu_count']}), "
          f"{machine['processor']}, {machine['platform']}")
    print(f"python {machine['python']}, torch {machine['torch']}, robust {machine['robust-scan']}, "
          f"commit {str(machine['commit'])[:12]}{' (robustbench_cli modified)' if machine['robustbench_cli_dirty'] else ''}")
    print()
    print("| command | wall s | load avg (1, 5, 15 min) before | after | exit | scanned |")
    print("|---|---:|---|---|---:|---|")
    for r in rows:
        scanned = "; ".join(f"{s['images']} images of {s['data']} x {len(s['targets'])} targets, {', '.join(s['threats'])}"
                            f" ({s['report']})" for s in r["scanned"])
        print(f"| `{r['command']}` | {r['seconds']:.1f} | {r['load_before']} | {r['load_after']} | {r['exit_code']} "
              f"| {scanned} |")
        for line in r["stderr_tail"]:
            print(f"    {line}")
    write_json(args.out, {"command": command_line(argv), "machine": machine, "runs": rows})
    print(f"\nwritten: {args.out}")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
