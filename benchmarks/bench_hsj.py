"""HopSkipJump (L2, untargeted, labels only): robust's ``hopskipjump`` against ART's and foolbox's HopSkipJump.

The median L2 distance of the adversarial each contestant has after 1,000 and 5,000 queries per sample, on MNIST
models, all contestants in one process on the same samples (the first ``--n`` test images the model classifies
correctly):

* ``robust``: ``robustbench_cli.evaluation.cascade.evaluate`` on ``LabelOnly(OnnxTarget(model.onnx))`` (``--access labels``),
  threat ``l2:<just under the box diagonal>`` (the projection does nothing; ``l2:1000`` is refused by the threat
  model's own check) and a one-entry battery ``hopskipjump`` with ``max_queries=Q, stop_at_epsilon=False``, run
  with ``queries=Q``: the distance is that of the candidate the harness verified (none: infinite).
* ``art``: ``art.attacks.evasion.HopSkipJump(PyTorchClassifier(module), norm=2, targeted=False)`` with its defaults
  (max_iter 50, max_eval 10000, init_eval 100, init_size 100), one sample per ``generate`` call. Its noise start
  comes from an unseeded ``np.random.RandomState()``; the benchmark seeds that (see ``_seeded_random_state``).
* ``foolbox``: ``foolbox.attacks.HopSkipJumpAttack()`` (L2; defaults: steps 64, 100 initial / 10000 max gradient
  evaluations, gamma 1.0, geometric step-size search, blended-noise initialisation) through
  ``foolbox.PyTorchModel(module, bounds=(0, 1))``, one sample per ``run`` call.

The peers see only labels: the module they call answers a one-hot of its decision. Their queries are counted by a
wrapper around that module, in order; each peer is stopped by the wrapper once it has spent the largest budget. A
peer's "distance after Q queries" is the smallest L2 distance of any adversarial input (inside [0,1]) among the
first Q rows it sent: at least as good as what the peer itself would return after Q queries. Run::

    python benchmarks/bench_hsj.py        # lenet5 and mnist-onnx, budgets 1000,5000, --n 50
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONTESTANTS = ("robust", "robust b1", "art", "foolbox")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default=str(C.DEFAULT_SHARED), help="the shared data folder (default ../shared/data)")
    p.add_argument("--models", default="lenet5,mnist-onnx", help=f"comma-separated, from {', '.join(C.MODELS)}")
    p.add_argument("--budgets", default="1000,5000", help="per-sample query budgets (default 1000,5000)")
    p.add_argument("--n", type=int, default=50, help="first N correctly classified test images (default 50)")
    p.add_argument("--contestants", default=",".join(CONTESTANTS), help=f"comma-separated from {', '.join(CONTESTANTS)}")
    p.add_argument("--peer-backend", choices=("torch", "onnx"), default="torch",
                   help="what the peers query for exported models: the torch module (default) or the same ONNX export")
    p.add_argument("--batch-size", type=int, default=256, help="robust's attack batch (default 256)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads and onnxruntime intra-op threads (default 1; 0: the libraries' defaults)")
    p.add_argument("--seed", type=int, default=0,
                   help="robust's seed; the peers' global numpy/torch seeds are seed + sample id")
    p.add_argument("--out", default=str(C.RESULTS / "bench_hsj.json"), help="JSON results file")
    return p.parse_args(argv)


class RowCount:
    """A total count of the rows robust sends (robust counts them per sample itself; this checks the sum)."""

    def __init__(self):
        self.rows, self.model_s, self.book_s = 0, 0.0, 0.0

    def record(self, x, out):
        self.rows += len(x)


@contextlib.contextmanager
def _seeded_random_state(seed: int):
    """ART's HopSkipJump draws its noise start from ``np.random.RandomState()``, seeded from the OS, so
    ``np.random.seed`` does not reach it; while it runs, an unseeded ``RandomState()`` gets ``seed`` instead.
    The algorithm is untouched; only its run becomes reproducible."""
    orig = np.random.RandomState

    def seeded(*a, **k):
        return orig(*a, **k) if (a or k) else orig(seed)

    np.random.RandomState = seeded
    try:
        yield
    finally:
        np.random.RandomState = orig


def main(argv=None) -> int:
    args = parse_args(argv)
    load_start = C.loadavg()
    # versions and commit at the start: the code that is imported and measured
    versions = C.versions("adversarial-robustness-toolbox", "foolbox", "eagerpy", "torchattacks")
    threads = C.set_threads(args.threads or None)
    warnings.filterwarnings("ignore")
    try:
        import foolbox as fb
        from art.attacks.evasion import HopSkipJump
        from art.estimators.classification import PyTorchClassifier
    except ImportError as e:
        print(f"bench_hsj: needs the bench extra ({e}); pip install -e \".[bench]\"", file=sys.stderr)
        return 2
    import logging

    logging.getLogger("art").setLevel(logging.ERROR)

    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate
    from robustbench_cli.targets.base import LabelOnly

    shared = Path(args.shared).expanduser()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    cap = max(budgets)
    wanted = [c.strip() for c in args.contestants.split(",") if c.strip()]
    if any(c not in CONTESTANTS for c in wanted):
        print(f"bench_hsj: contestants must come from {CONTESTANTS}", file=sys.stderr)
        return 2
    try:
        from robustbench_cli.attacks import create

        create("hopskipjump")
    except Exception as e:  # the attack is not there yet: run the peers only
        print(f"bench_hsj: robust's hopskipjump is not available ({e}); running the peers only", file=sys.stderr)
        wanted = [c for c in wanted if not c.startswith("robust")]

    rows, settings = [], []
    for k, name in enumerate([m.strip() for m in args.models.split(",") if m.strip()]):
        built = C.build_model(name, shared, peer_backend=args.peer_backend, threads=args.threads or None)
        probe = C.robust_target(built.onnx, args.threads or None)
        evalset, max_diff = C.load_clean_correct(built, shared, args.n, probe)
        n = len(evalset)
        x0, y0 = torch.as_tensor(evalset.x), torch.as_tensor(evalset.y)
        dim = int(np.prod(evalset.sample_shape))
        big = math.floor(math.sqrt(dim)) - 1  # just under the box diagonal: check_against_dim refuses more
        threat = ThreatModel.parse(f"l2:{big}")
        onehot = np.eye(10, dtype=np.float32)[evalset.y]

        dist: dict[str, dict[int, np.ndarray]] = {c: {} for c in wanted}
        wall: dict[str, dict[int, float]] = {c: {} for c in wanted}
        spent: dict[str, list[int]] = {}
        extra: dict[str, dict] = {c: {} for c in wanted}

        def run_robust(budget: int, ev=evalset, batch_size=args.batch_size):
            count = RowCount()
            inner = C.robust_target(built.onnx, args.threads or None)
            C.attach_to_target(inner, count)
            target = LabelOnly(inner)
            battery = Battery("bench", 1, [Entry("hopskipjump", "hopskipjump",
                                                 {"max_queries": budget, "stop_at_epsilon": False})])
            t0 = time.perf_counter()
            res = evaluate(target, ev, [threat], battery, seed=args.seed, batch_size=batch_size,
                           queries=budget).results[0]
            secs = time.perf_counter() - t0
            d = np.where(res.clean_correct & ~res.robust, res.distance, np.inf)
            return d, secs, {"rows_sent": count.rows, "own_queries_sum": int(res.queries.sum()),
                             "rows_match_own_count": count.rows == len(ev) + int(res.queries.sum()),
                             "max_queries_per_sample": int(res.queries.max()),
                             "per_sample_queries": res.queries.tolist()}

        def run_peer(peer: str, idx) -> tuple[dict[int, np.ndarray], dict[int, float], list[int]]:
            out = {q: np.full(len(idx), np.inf) for q in budgets}
            secs, used = {q: 0.0 for q in budgets}, []
            counted = C.Counted(built.module, None, labels_only=True).eval()
            if peer == "art":
                clf = PyTorchClassifier(model=counted, loss=torch.nn.CrossEntropyLoss(), input_shape=built.sample_shape,
                                        nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
            else:
                fmodel = fb.PyTorchModel(counted, bounds=(0.0, 1.0), device="cpu")
            for j, i in enumerate(idx):
                log = C.SequenceLog(x0[i], int(y0[i]), cap=cap, marks=budgets)
                counted.log = log
                sid = int(evalset.ids[i])
                try:
                    if peer == "art":
                        np.random.seed(args.seed + sid)
                        random.seed(args.seed + sid)
                        atk = HopSkipJump(clf, targeted=False, norm=2, verbose=False)
                        with _seeded_random_state(args.seed + sid):
                            atk.generate(x0[i: i + 1].numpy(), y=onehot[i: i + 1])
                    else:
                        torch.manual_seed(args.seed + sid)
                        fb.attacks.HopSkipJumpAttack().run(fmodel, x0[i: i + 1], fb.criteria.Misclassification(y0[i: i + 1]))
                except C.BudgetSpent:
                    pass
                except ValueError:  # foolbox: its initialisation found no adversarial; nothing to report
                    pass
                used.append(log.rows)
                for q in budgets:
                    out[q][j] = log.best_within(q)
                    secs[q] += log.seconds_to(q)
            return out, secs, used

        # warm-up (untimed): two samples, small budget
        from robustbench_cli.core.data import EvalSet

        few = EvalSet(x=evalset.x[:2], y=evalset.y[:2], ids=evalset.ids[:2], name="warm-up")
        if any(c.startswith("robust") for c in wanted):
            run_robust(100, few)

        order = wanted[k % len(wanted):] + wanted[: k % len(wanted)]
        for c in order:
            if c.startswith("robust"):
                for q in budgets:
                    d, secs, info = run_robust(q, batch_size=1 if c == "robust b1" else args.batch_size)
                    dist[c][q], wall[c][q] = d, secs
                    extra[c][q] = info
            else:
                res, secs, used = run_peer(c, range(n))
                for q in budgets:
                    dist[c][q] = res[q]
                    wall[c][q] = secs[q]  # one run to the largest budget, timed at each budget
                spent[c] = used

        for q in budgets:
            for c in wanted:
                d = dist[c][q]
                found = np.isfinite(d)
                row = {"model": name, "budget": q, "contestant": c, "n": n, "found": float(found.mean()),
                       "median_l2": C.finite_or_none(np.median(d)),
                       "mean_l2_found": float(d[found].mean()) if found.any() else None,
                       "wall_s": wall[c][q],
                       "wall_note": "one evaluate() per budget" if c.startswith("robust") else
                                    "one run to the largest budget; time until the budget-th query was answered",
                       "per_sample_l2": [C.finite_or_none(v) for v in d]}
                if c.startswith("robust"):
                    row.update({k2: v for k2, v in extra[c][q].items()})
                    for peer in wanted:
                        if not peer.startswith("robust"):
                            other = dist[peer][q]
                            row[f"shorter_than_{peer}"] = int((d < other).sum())
                            row[f"longer_than_{peer}"] = int((d > other).sum())
                else:
                    row["rows_sent_per_sample"] = spent[c]
                rows.append(row)
        settings.append({"model": name, "description": built.description, "onnx": str(built.onnx),
                         "data": evalset.name, "ids": evalset.ids.tolist(), "n": n, "threat": threat.name,
                         "max_abs_output_diff_onnx_vs_peer_module": max_diff, **built.extra})

    meta = {"benchmark": "hopskipjump", "budgets": budgets, "contestants": wanted, "threads": threads,
            "seed": args.seed, "peer_backend": args.peer_backend, "batch_size": args.batch_size,
            "versions": versions,
            "command": C.command_line(argv),
            "loadavg_start": load_start, "loadavg_end": C.loadavg()}
    headers = ["model", "budget", "contestant", "adversarial found", "median L2", "mean L2 (found)",
               "robust shorter / longer", "wall s"]
    table = []
    for r in rows:
        vs = "–"
        if r["contestant"].startswith("robust"):
            vs = ", ".join(f"{r[f'shorter_than_{p}']}/{r[f'longer_than_{p}']} vs {p}" for p in wanted
                           if not p.startswith("robust")) or "–"
        f = lambda v: "∞" if v is None else f"{v:.3f}"  # noqa: E731
        table.append([r["model"], r["budget"], r["contestant"], f"{r['found']:.0%}", f(r["median_l2"]),
                      "–" if r["mean_l2_found"] is None else f"{r['mean_l2_found']:.3f}", vs, f"{r['wall_s']:.1f}"])
    print(f"HopSkipJump, L2, untargeted, labels only; first {args.n} correctly classified MNIST test images; "
          f"{threads} thread(s); seed {args.seed}; peers on {args.peer_backend} modules")
    print()
    print(C.md_table(headers, table, "lrlrrrlr"))
    path = C.write_json(args.out, {"meta": meta, "settings": settings, "results": rows})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
