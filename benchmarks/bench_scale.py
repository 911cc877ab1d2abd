"""Scale-out on this machine: the same scan in one process (1 and 2 threads), as 2 Ray workers (one thread each),
and as 8 shards on 1 worker (the overhead of sharding).

Each configuration runs as one ``robust scan`` subprocess (wall time includes process start, data loading and, for
Ray, starting the local Ray instance); the per-sample results of every configuration are compared with the single
process's. The configurations alternate over ``--repeats`` rounds, so load changes hit them alike; the table gives
each configuration's median and its ratio to the single process within each round.

    python benchmarks/bench_scale.py                      # default: the embedded CNN, `default` preset, 400 images
    python benchmarks/bench_scale.py --n 200 --repeats 1

Results: benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _results(path: Path) -> list[dict]:
    from robustbench_cli.reports.model import timeless

    return timeless(json.loads(path.read_text())["results"])


def main() -> None:
    from robustbench_cli import zoo

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    args = ap.parse_args()
    scan = ["scan", zoo.SPEC, "--weights", str(zoo.DEFENCES["pgd"]), "--no-fast-forward", "--data", "mnist:test",
            "--n", str(args.n), "--eps", args.eps, "--preset", args.preset, "--batch-size", "64"]
    # Ray gives each task one CPU and one thread; the single process is measured with one thread and with two
    configs = {"1 process": ["--threads", "1"], "1 process, 2 threads": ["--threads", "2"],
               "2 Ray workers (8 shards)": ["--workers", "2"],
               "8 shards on 1 Ray worker": ["--workers", "1", "--shards", "8"]}
    times: dict[str, list[float]] = {k: [] for k in configs}
    same: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for name in order:
                out = Path(tmp) / f"{abs(hash(name))}-{r}.json"
                t0 = time.perf_counter()
                res = subprocess.run([sys.executable, "-m", "robustbench_cli", *scan, *configs[name], "-o", str(out)],
                                     capture_output=True, text=True)
                times[name].append(time.perf_counter() - t0)
                if res.returncode != 0:
                    raise SystemExit(f"{name}: exit {res.returncode}\n{res.stderr[-2000:]}")
                got = _results(out)
                base = Path(tmp) / f"{abs(hash('1 process'))}-{r}.json"
                if base.exists():
                    same[name] = same.get(name, True) and got == _results(base)
            # ratios only within a round: the same load for all
    ratios = {k: [t / b for t, b in zip(v, times["1 process"])] for k, v in times.items()}
    load = os.getloadavg()
    rows = [{"configuration": k, "median_s": round(statistics.median(v), 1), "ratio_to_1_process":
             round(statistics.median(ratios[k]), 2), "same_per_sample_results": same.get(k, True)}
            for k, v in times.items()]
    record = {"command": " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]]), "scan": scan,
              "cpus": os.cpu_count(), "load_after": [round(x, 2) for x in load], "platform": platform.platform(),
              "rows": rows, "times": times}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{os.cpu_count()} CPUs, load average after the run {load[0]:.2f}")
    print("| configuration | median s | ratio to 1 process | same per-sample results |")
    print("|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['configuration']} | {row['median_s']} | {row['ratio_to_1_process']} | "
              f"{'yes' if row['same_per_sample_results'] else 'NO'} |")


if __name__ == "__main__":
    main()
