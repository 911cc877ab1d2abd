"""What the fast route costs and saves: the onnxruntime export of a PyTorch target against the queries it answers.

A scan makes the export only when its battery can ask enough forward-only queries to repay it
(``FAST_ROUTE_MIN`` in ``robustbench_cli/evaluation/cascade.py``). This measures the two sides on the embedded MNIST
CNN (``robust demo``'s white box), or on any ``--model`` the CLI loads: the export with its check against the module,
timed once per run over ``--runs`` fresh targets (the first in the process also pays for importing the exporter and
onnxruntime's session machinery, which is what a scan's one export costs); and one forward pass of torch and of onnxruntime at batch sizes 1,
16 and 256, ``--reps`` each, in turns. The break-even is the first export's time over the saving per sample-query; the load
average is recorded before and after, as the timings swing with it.

    python benchmarks/bench_fast_route.py                 # writes benchmarks/results/fast_route.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, command_line, loadavg, set_threads, versions, write_json  # noqa: E402


def _target(model: str | None):
    from robustbench_cli import zoo
    from robustbench_cli.targets import TargetSpec, load_target

    spec = TargetSpec(model, device="cpu") if model else TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), device="cpu")
    return load_target(spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a model the CLI loads (default: the embedded MNIST CNN)")
    p.add_argument("--shape", default="1,28,28", help="one input's shape, for a --model")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "fast_route.json"))
    a = p.parse_args(argv)
    set_threads(a.threads)
    from robustbench_cli.evaluation.cascade import FAST_ROUTE_MIN

    shape = tuple(int(s) for s in a.shape.split(","))
    x = torch.rand(256, *shape, generator=torch.Generator().manual_seed(0))
    load_before = loadavg()
    exports = []
    for _ in range(a.runs):
        t = _target(a.model)
        t0 = time.perf_counter()
        session = t._export_onnx(x)
        exports.append(time.perf_counter() - t0)
        if session is None:
            print(f"bench_fast_route: the export was refused ({t.details.get('fast_forward')})", file=sys.stderr)
            return 1
    rows = []
    for bs in (1, 16, 256):
        xb = x[:bs]
        xs = xb.numpy()
        ort_s, torch_s = [], []
        for _ in range(a.reps):  # in turns, so that a change of load hits both
            t0 = time.perf_counter()
            session.run(None, {"x": xs})
            ort_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            t._scores_batch(xb)
            torch_s.append(time.perf_counter() - t0)
        o, m = statistics.median(ort_s), statistics.median(torch_s)
        rows.append({"batch": bs, "onnxruntime_ms": 1e3 * o, "torch_ms": 1e3 * m, "speedup": m / o,
                     "saved_ms_per_sample_query": 1e3 * (m - o) / bs})
    export_s = exports[0]
    saved = [r["saved_ms_per_sample_query"] for r in rows]
    out = {"model": a.model or "embedded MNIST CNN", "export_seconds_first": export_s, "export_seconds": exports,
           "passes": rows, "break_even_queries": [int(1e3 * export_s / s) if s > 0 else None for s in saved],
           "fast_route_min": FAST_ROUTE_MIN, "threads": a.threads, "load_1min": [load_before, loadavg()],
           "command": command_line(argv), "versions": versions()}
    write_json(a.out, out)
    print(f"export and check: {export_s:.2f} s the first in this process, then "
          f"{min(exports[1:], default=export_s):.2f}-{max(exports[1:], default=export_s):.2f} s")
    for r, be in zip(rows, out["break_even_queries"]):
        print(f"batch {r['batch']:>3}: torch {r['torch_ms']:.3f} ms, onnxruntime {r['onnxruntime_ms']:.3f} ms "
              f"({r['speedup']:.1f}x), {r['saved_ms_per_sample_query']:.3f} ms saved a sample-query, "
              f"break-even {be:,} queries")
    print(f"FAST_ROUTE_MIN = {FAST_ROUTE_MIN:,}; load average {load_before} -> {out['load_1min'][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
