"""The AutoAttack benchmark at its full sizes, every setting, by one command; then the README's table from its JSON.

Runs the 14 settings of ``bench_autoattack.py`` (7 models x 2 epsilons; 1,000 MNIST and 500 CIFAR-10 images) as two
``bench_autoattack.py`` processes side by side, one per core, each with one thread; inside each process the two tools
alternate which goes first from one setting to the next. The two groups are balanced by AutoAttack's measured time.
While they run, the machine's load average is sampled every 30 s. The merged JSON keeps every setting's result, the
machine (CPU model, cores, memory), the load samples, the package versions and the commit; the tables between the
``autoattack-table`` markers of benchmarks/README.md and the ``autoattack-summary`` markers of README.md are rewritten
from it.

    pip install -e ".[bench]"
    python benchmarks/bench_autoattack_all.py                 # about 1.5 h on 2 cores
    python benchmarks/bench_autoattack_all.py --render-only   # the tables again, from the last JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402
from bench_autoattack import result_table  # noqa: E402

# Balanced by AutoAttack's one-thread time at full size (benchmarks/README.md): about 4,200 s and 4,000 s.
GROUPS = [
    ["lenet5-adv@0.1", "wk-mnist-0.1@0.1", "wk-mnist-0.1@0.3", "wk-mnist-0.3@0.1", "wk-mnist-0.3@0.3", "lenet5@0.3",
     "resnet20@2/255", "resnet20@8/255", "eran-cifar-pgd@2/255", "eran-cifar-pgd@8/255", "wk-cifar-8px@2/255",
     "wk-cifar-8px@8/255"],
    ["lenet5-adv@0.3", "lenet5@0.1"],
]
TABLE_ORDER = ["lenet5@0.1", "lenet5@0.3", "lenet5-adv@0.1", "lenet5-adv@0.3", "wk-mnist-0.1@0.1", "wk-mnist-0.1@0.3",
               "wk-mnist-0.3@0.1", "wk-mnist-0.3@0.3", "resnet20@2/255", "resnet20@8/255", "eran-cifar-pgd@2/255",
               "eran-cifar-pgd@8/255", "wk-cifar-8px@2/255", "wk-cifar-8px@8/255"]
OUT = C.RESULTS / "bench_autoattack_full.json"
MARKS = {"table": ("<!-- autoattack-table:start -->", "<!-- autoattack-table:end -->"),
         "summary": ("<!-- autoattack-summary:start -->", "<!-- autoattack-summary:end -->")}


def machine() -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": C.cores(), "memory_gib": mem,
            "platform": platform.platform()}


class LoadSampler(threading.Thread):
    def __init__(self, every: float = 30.0):
        super().__init__(daemon=True)
        self.every, self.samples, self.halt = every, [], threading.Event()

    def run(self):
        while not self.halt.is_set():
            load = C.loadavg()
            if load:
                self.samples.append(load[0])
            self.halt.wait(self.every)


def run(args) -> dict:
    at_start = C.git_state()  # the code measured: the processes load it now, whatever is committed later
    sampler = LoadSampler()
    sampler.start()
    t0 = time.time()
    procs = []
    for k, group in enumerate(GROUPS):
        part = OUT.with_name(f"{OUT.stem}_part{k + 1}.json")
        log = open(part.with_suffix(".log"), "w")
        cmd = [sys.executable, str(HERE / "bench_autoattack.py"), "--settings", ",".join(group), "--threads", "1",
               "--seed", str(args.seed), "--out", str(part)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), part, log, cmd))
    codes = []
    for p, _part, log, _ in procs:
        codes.append(p.wait())
        log.close()
    sampler.halt.set()
    rows, problems, metas = [], [], []
    for (_, part, _, cmd), code in zip(procs, codes):
        if not part.exists():
            raise SystemExit(f"bench_autoattack_all: {' '.join(cmd)} wrote no results (exit {code}); see {part.with_suffix('.log')}")
        d = json.loads(part.read_text())
        rows += d["results"]
        metas.append(d["meta"])
        problems += d["meta"].get("problems", [])
    by = {f"{r['model']}@{r['eps']}": r for r in rows}
    rows = [by[s] for s in TABLE_ORDER if s in by]
    s = sampler.samples
    meta = {
        "command": C.command_line(sys.argv), "machine": machine(), "wall_seconds": time.time() - t0,
        "groups": GROUPS, "threads_per_process": 1, "processes": len(GROUPS), "seed": args.seed,
        "load_1min": {"samples": s, "min": min(s) if s else None, "median": statistics.median(s) if s else None,
                      "max": max(s) if s else None},
        "preset": metas[0]["preset"], "autoattack": metas[0]["autoattack"], "versions": metas[0]["versions"],
        "exit_codes": codes, "problems": problems, "git_at_start": at_start,
    }
    C.write_json(OUT, {"meta": meta, "results": rows})
    return {"meta": meta, "results": rows}


def summary(d: dict) -> str:
    rows, meta = d["results"], d["meta"]
    ratios = [r["time_ratio_robust_over_autoattack"] for r in rows]
    le = sum(r["robust"]["robust_accuracy"] <= r["autoattack"]["robust_accuracy"] + 1e-12 for r in rows)
    lower = sum(r["robust"]["robust_accuracy"] < r["autoattack"]["robust_accuracy"] - 1e-12 for r in rows)
    missed = sum(len(r["robust_only_ids"]) for r in rows)  # robust left robust, AutoAttack broke
    load = meta["load_1min"]
    return (f"`{meta['preset']}` against AutoAttack on {len(rows)} settings at full size: robust accuracy at most "
            f"AutoAttack's in {le} of {len(rows)} (lower in {lower}); {missed} image(s) in all that AutoAttack broke "
            f"and robust left robust; wall time {min(ratios):.2f}-{max(ratios):.2f} of AutoAttack's (median "
            f"{statistics.median(ratios):.2f}), one thread each, {meta['machine']['cpu']} ({meta['machine']['cores']} "
            f"cores), load average {load['min']:.1f}-{load['max']:.1f} (`python benchmarks/bench_autoattack_all.py`).")


def render(d: dict) -> str:
    meta = d["meta"]
    headers, table = result_table(d["results"])
    v = meta["versions"]
    load = meta["load_1min"]
    lines = [
        f"`python benchmarks/bench_autoattack_all.py` (results in `results/{OUT.name}`, logs beside it), commit "
        f"`{((meta.get('git_at_start') or v).get('commit') or '?')[:7]}` (the code at the start of the run): robust `{meta['preset']}` against AutoAttack's standard version "
        f"(`pyautoattack` {meta['autoattack']['version']}), CPU, {meta['processes']} processes side by side with one "
        f"thread each, batch 256, seed {meta['seed']}. Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} "
        f"cores, {meta['machine']['memory_gib']} GiB; load average (1 min, every 30 s) {load['min']:.2f}-"
        f"{load['max']:.2f}, median {load['median']:.2f}; Python {v.get('python')}, torch {v.get('torch')}, "
        f"onnxruntime {v.get('onnxruntime')}, numpy {v.get('numpy')}; {meta['wall_seconds'] / 60:.0f} min in all.",
        "",
        C.md_table(headers, table, "llr" + "r" * (len(headers) - 3)),
        "",
        summary(d),
    ]
    return "\n".join(lines)


def replace_between(path: Path, marks: tuple[str, str], text: str) -> bool:
    body = path.read_text()
    a, b = marks
    pat = re.compile(re.escape(a) + r".*?" + re.escape(b), re.S)
    if not pat.search(body):
        print(f"bench_autoattack_all: {path} has no {a} ... {b} block; not rewritten", file=sys.stderr)
        return False
    path.write_text(pat.sub(lambda _: f"{a}\n{text}\n{b}", body))
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--render-only", action="store_true", help="rewrite the README tables from the last JSON")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.render_only:
        if not OUT.exists():
            print(f"bench_autoattack_all: no {OUT}; run without --render-only first", file=sys.stderr)
            return 2
        d = json.loads(OUT.read_text())
    else:
        d = run(args)
    print(render(d))
    replace_between(HERE / "README.md", MARKS["table"], render(d))
    replace_between(HERE.parent / "README.md", MARKS["summary"], summary(d))
    bad = [x for x in d["meta"]["problems"] if x.startswith(("BUG", "MISMATCH"))]
    for x in bad:
        print(x, file=sys.stderr)
    return 1 if bad or any(d["meta"]["exit_codes"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
