"""Query throughput: robust's query path against a bare onnxruntime loop on the same session and the same inputs.

Queries (input rows) per second at batch sizes 1, 32 and 256 through

* ``bare``: ``session.run([output], {input: a})`` in a loop, ``a`` a ready numpy array in the model's own layout
  (NHWC for the Marabou net); for the fixed-batch-1 model one ``run`` per row. ``session`` is the very
  ``InferenceSession`` robust's target holds, so both sides run with identical session options.
* ``robust Oracle``: ``Oracle(target, n).scores(x)`` on ``x`` a torch tensor (N, C, H, W) in [0,1], the path every
  black-box attack takes (ledger without a budget);
* ``robust Oracle+budget``: the same with a per-sample budget (the path of ``robust scan --queries``);
* ``robust target.scores``: the target alone, without the ledger.

Models: the advertorch LeNet5 exported with a dynamic batch (NCHW), the same exported with a fixed batch of 1 (robust
feeds it in chunks of one row), and the Marabou MNIST net (NHWC, dynamic batch). Every timing runs enough calls for
about ``--seconds``; the repeats are interleaved (the order rotates), the table reports medians. If robust's rate is
below 0.9 of bare anywhere, that case is profiled (cProfile) and the top functions are printed. Run::

    python benchmarks/bench_throughput.py
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CASES = {  # name: (model, fixed batch 1?)
    "lenet5 dynamic NCHW": ("lenet5", False),
    "lenet5 fixed batch 1": ("lenet5", True),
    "mnist-onnx dynamic NHWC": ("mnist-onnx", False),
}
PATHS = ("bare", "robust Oracle", "robust Oracle+budget", "robust target.scores")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default=str(C.DEFAULT_SHARED), help="the shared data folder (default ../shared/data)")
    p.add_argument("--batch-sizes", default="1,32,256", help="rows per call (default 1,32,256)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated from: {', '.join(CASES)}")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed repeats per path (default 7)")
    p.add_argument("--seconds", type=float, default=0.25, help="target length of one timing (default 0.25)")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime intra-op threads of the session, and torch threads (default 1; 0: defaults)")
    p.add_argument("--out", default=str(C.RESULTS / "bench_throughput.json"), help="JSON results file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    load_start = C.loadavg()
    # versions and commit at the start: the code that is imported and measured
    versions = C.versions()
    threads = C.set_threads(args.threads or None)
    warnings.filterwarnings("ignore", category=UserWarning)
    from robustbench_cli.core.data import load_eval_set
    from robustbench_cli.targets.base import Oracle

    shared = Path(args.shared).expanduser()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    data = load_eval_set(str(shared / "mnist" / "mnist_test.npz"), n=max(sizes))
    rows, profiles = [], {}
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        model, static = CASES[case]
        built = C.build_model(model, shared, static_batch1=static)
        target = C.robust_target(built.onnx, args.threads or None)
        session = target.session
        in_name, out_name = target.input_name, target.output_name
        for bs in sizes:
            x = torch.as_tensor(data.x[:bs]).contiguous()
            a = x.numpy()
            if target.layout == "nhwc":
                a = a.transpose(0, 2, 3, 1)
            a = np.ascontiguousarray(a, dtype=np.float32)
            singles = [np.ascontiguousarray(a[i: i + 1]) for i in range(bs)]

            def bare(calls):
                if static:
                    for _ in range(calls):
                        for s in singles:
                            session.run([out_name], {in_name: s})
                else:
                    for _ in range(calls):
                        session.run([out_name], {in_name: a})

            def oracle(calls):
                o = Oracle(target, bs)
                for _ in range(calls):
                    o.scores(x)

            def oracle_budget(calls):
                o = Oracle(target, bs, budget=10**9)
                for _ in range(calls):
                    o.scores(x)

            def scores(calls):
                for _ in range(calls):
                    target.scores(x)

            fns = dict(zip(PATHS, (bare, oracle, oracle_budget, scores)))
            # same outputs? (the check is outside the timing)
            ref = session.run([out_name], {in_name: singles[0] if static else a})[0]
            got = Oracle(target, bs).scores(x).numpy()
            same = float(np.abs(got[: len(ref)] - ref).max())
            # calibrate: calls per timing for about --seconds on the bare path, warm everything once
            for f in fns.values():
                f(1)
            t0 = time.perf_counter()
            bare(3)
            per_call = (time.perf_counter() - t0) / 3
            calls = max(3, int(round(args.seconds / max(per_call, 1e-6))))
            times = {p: [] for p in PATHS}
            for r in range(args.repeats):
                order = PATHS[r % len(PATHS):] + PATHS[: r % len(PATHS)]
                for p in order:
                    t0 = time.perf_counter()
                    fns[p](calls)
                    times[p].append(time.perf_counter() - t0)
            med = {p: statistics.median(v) for p, v in times.items()}
            for p in PATHS:
                rate = bs * calls / med[p]
                rows.append({"case": case, "batch": bs, "path": p, "calls_per_timing": calls,
                             "queries_per_s": rate, "ratio_to_bare": med["bare"] / med[p],
                             "us_per_call": med[p] / calls * 1e6, "seconds_all": times[p],
                             "max_abs_diff_to_bare": same})
            worst = min((med["bare"] / med[p], p) for p in PATHS if p.startswith("robust"))
            if worst[0] < 0.9:  # profile the slowest robust path of this case
                pr = cProfile.Profile()
                pr.enable()
                fns[worst[1]](calls)
                pr.disable()
                buf = io.StringIO()
                pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(14)
                profiles[f"{worst[1]}, {case}, batch {bs}"] = buf.getvalue()

    meta = {"benchmark": "throughput", "threads": threads, "repeats": args.repeats, "seconds": args.seconds,
            "batch_sizes": sizes, "versions": versions, "command": C.command_line(argv),
            "loadavg_start": load_start, "loadavg_end": C.loadavg()}
    print(f"Query throughput, MNIST inputs, {threads} onnxruntime/torch thread(s), median of {args.repeats} interleaved "
          f"repeats")
    print()
    headers = ["case", "batch", "path", "queries/s", "µs per call", "÷ bare"]
    table = [[r["case"], r["batch"], r["path"], f"{r['queries_per_s']:,.0f}", f"{r['us_per_call']:,.0f}",
              f"{r['ratio_to_bare']:.2f}"] for r in rows]
    print(C.md_table(headers, table, "lrlrrr"))
    for k, v in profiles.items():
        print(f"\n### profile: {k} (below 0.9 of bare)\n")
        print("```")
        print("\n".join(v.strip().splitlines()[:28]))
        print("```")
    path = C.write_json(args.out, {"meta": meta, "results": rows, "profiles": profiles})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
