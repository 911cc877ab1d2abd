"""Square Attack (Linf): robust's ``square`` on an ONNX black box against ART's and torchattacks' SquareAttack.

Success rate and queries per sample at per-sample budgets of 1,000 and 5,000 queries, on MNIST (Linf 0.3 and 0.1)
and CIFAR-10 (Linf 8/255) models, all contestants in one process on the same samples (the first ``--n`` test
images each model classifies correctly), the order of the contestants rotated from one setting to the next.

* ``robust``: ``robustbench_cli.evaluation.cascade.evaluate`` with a one-entry battery ``square`` (its own defaults, p_init
  0.3) and ``queries=budget``, on ``load_target(model.onnx)``: the harness's clean pass, the attack and the
  verification query of every candidate.
* ``robust p0.8``: the same with ``p_init=0.8``, the peers' default.
* ``art``: ``art.attacks.evasion.SquareAttack(PyTorchClassifier(module), norm=inf, eps, max_iter=(budget-3)//3,
  nb_restarts=1)`` (its defaults otherwise: p_init 0.8, batch_size 128). ART spends three queries per iteration
  and three at the start (see the README), so this max_iter keeps it within the budget.
* ``torchattacks``: ``torchattacks.Square(module, norm="Linf", eps, n_queries=budget, n_restarts=1, seed)``
  (its defaults otherwise: p_init 0.8, margin loss).

Every row any contestant sends to the model is counted by the same outside wrapper, and attributed to the clean
sample whose eps-ball contains it (the balls are disjoint, checked), so the counts are exact per sample whatever
the batching. Run::

    python benchmarks/bench_square.py     # all models, budgets 1000,5000, --n 100 (MNIST) / 50 (CIFAR-10)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONTESTANTS = ("robust", "robust p0.8", "art", "torchattacks")
# lenet5-adv at 0.1 is left out of the default: nothing breaks it there, every contestant spends the whole budget
SETTINGS = ("mnist-onnx:0.3", "mnist-onnx:0.1", "lenet5:0.3", "lenet5:0.1", "lenet5-adv:0.3", "resnet20:8/255")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default=str(C.DEFAULT_SHARED), help="the shared data folder (default ../shared/data)")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated MODEL:EPS (Linf) pairs; models: {', '.join(C.MODELS)} "
                        f"(default {','.join(SETTINGS)})")
    p.add_argument("--budgets", default="1000,5000", help="per-sample query budgets (default 1000,5000)")
    p.add_argument("--n", type=int, default=50, help="first N correctly classified MNIST test images (default 50)")
    p.add_argument("--n-cifar", type=int, default=50, help="first N correctly classified CIFAR-10 images (default 50)")
    p.add_argument("--contestants", default=",".join(CONTESTANTS), help=f"comma-separated from {', '.join(CONTESTANTS)}")
    p.add_argument("--peer-backend", choices=("torch", "onnx"), default="torch",
                   help="what the peers query for exported models: the torch module (default) or the same ONNX export")
    p.add_argument("--batch-size", type=int, default=256, help="samples per attack batch, every contestant (default 256)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads and onnxruntime intra-op threads, every contestant (default 1; 0: each "
                        "library's default, i.e. all cores: timings of small calls then vary a lot on a 2-core VM)")
    p.add_argument("--seed", type=int, default=0, help="robust's seed, torchattacks' seed, numpy/random seed for ART")
    p.add_argument("--out", default=str(C.RESULTS / "bench_square.json"), help="JSON results file")
    return p.parse_args(argv)


def _median(a) -> float | None:
    a = [float(v) for v in a]
    return statistics.median(a) if a else None


def main(argv=None) -> int:
    args = parse_args(argv)
    load_start = C.loadavg()
    # versions and commit at the start: the code that is imported and measured
    versions = C.versions("adversarial-robustness-toolbox", "torchattacks", "foolbox")
    threads = C.set_threads(args.threads or None)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        import torchattacks
        from art.attacks.evasion import SquareAttack
        from art.estimators.classification import PyTorchClassifier
    except ImportError as e:
        print(f"bench_square: needs the bench extra ({e}); pip install -e \".[bench]\"", file=sys.stderr)
        return 2

    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate

    shared = Path(args.shared).expanduser()
    budgets = [int(b) for b in args.budgets.split(",")]
    wanted = [c.strip() for c in args.contestants.split(",") if c.strip()]
    bad = [c for c in wanted if c not in CONTESTANTS]
    if bad:
        print(f"bench_square: unknown contestants {bad}", file=sys.stderr)
        return 2
    try:
        from robustbench_cli.attacks import create

        create("square")
    except Exception as e:  # the attack is not there yet: run the peers only
        print(f"bench_square: robust's square is not available ({e}); running the peers only", file=sys.stderr)
        wanted = [c for c in wanted if not c.startswith("robust")]

    rows, settings = [], []
    order_k = 0
    plan: dict[str, list[str]] = {}
    for item in [t.strip() for t in args.settings.split(",") if t.strip()]:
        model, _, eps_text = item.partition(":")
        if model not in C.MODELS or not eps_text:
            print(f"bench_square: bad setting {item!r} (MODEL:EPS, models {', '.join(C.MODELS)})", file=sys.stderr)
            return 2
        plan.setdefault(model, []).append(eps_text)
    for name, eps_list in plan.items():
        built = C.build_model(name, shared, peer_backend=args.peer_backend, threads=args.threads or None)
        n_want = args.n if built.data == "mnist" else args.n_cifar
        probe = C.robust_target(built.onnx, args.threads or None)
        evalset, max_diff = C.load_clean_correct(built, shared, n_want, probe)
        x0 = torch.as_tensor(evalset.x)
        y0 = torch.as_tensor(evalset.y)
        n = len(evalset)
        for eps_text in eps_list:
            threat = ThreatModel.parse(f"linf:{eps_text}")
            eps = threat.epsilon
            log = C.BallLog(x0, y0, eps)
            target = C.robust_target(built.onnx, args.threads or None)
            C.attach_to_target(target, log)
            counted = C.Counted(built.module, log).eval()
            clf = PyTorchClassifier(model=counted, loss=torch.nn.CrossEntropyLoss(), input_shape=built.sample_shape,
                                    nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
            onehot = np.eye(10, dtype=np.float32)[evalset.y]
            batches = [slice(i, min(i + args.batch_size, n)) for i in range(0, n, args.batch_size)]

            def run(contestant: str, budget: int, ev=evalset):
                """Run one contestant; return the success mask (verified like the harness) and robust's own counts."""
                if contestant.startswith("robust"):
                    params = {"max_queries": budget}
                    if contestant == "robust p0.8":
                        params["p_init"] = 0.8
                    res = evaluate(target, ev, [threat], Battery("bench", 1, [Entry("square", "square", params)]),
                                   seed=args.seed, batch_size=args.batch_size, queries=budget).results[0]
                    return res.clean_correct & ~res.robust, res.queries + 1  # + the clean pass
                m = len(ev)
                xs, ys = x0[:m], y0[:m]
                if contestant == "torchattacks":
                    atk = torchattacks.Square(counted, norm="Linf", eps=eps, n_queries=budget, n_restarts=1,
                                              seed=args.seed, loss="margin")
                    adv = torch.cat([atk(xs[s], ys[s]) for s in batches if s.start < m])
                else:  # art
                    np.random.seed(args.seed)
                    random.seed(args.seed)
                    atk = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=max((budget - 3) // 3, 1), nb_restarts=1,
                                       verbose=False)
                    adv = torch.as_tensor(atk.generate(xs.numpy(), y=onehot[:m]))
                adv = threat.project(adv.float(), xs)  # the harness's verification, uncounted
                with torch.no_grad():
                    pred = built.module(adv).argmax(1)
                return (pred != ys).numpy(), None

            # warm-up (untimed, small budget, few samples): sessions, allocators
            from robustbench_cli.core.data import EvalSet

            few = EvalSet(x=evalset.x[:8], y=evalset.y[:8], ids=evalset.ids[:8], name="warm-up")
            for c in wanted:
                run(c, 30, few)

            for budget in budgets:
                order = wanted[order_k % len(wanted):] + wanted[: order_k % len(wanted)]
                order_k += 1
                results = {}
                for c in order:
                    log.reset()
                    t0 = time.perf_counter()
                    success, own = run(c, budget)
                    wall = time.perf_counter() - t0 - log.book_s
                    spent, first = log.spent.numpy().copy(), log.first_adv.numpy().copy()
                    results[c] = (success, own, spent, first, wall, log.model_s)
                base = results.get("torchattacks")
                for c in wanted:
                    success, own, spent, first, wall, model_s = results[c]
                    ok = np.asarray(success, bool)
                    row = {
                        "model": name, "eps": eps_text, "budget": budget, "contestant": c,
                        "p_init": {"robust": 0.3, "robust p0.8": 0.8, "art": 0.8, "torchattacks": 0.8}[c],
                        "n": n, "success_rate": float(ok.mean()),
                        "median_queries_first_adversarial": _median(first[ok]),
                        "median_queries_spent_successful": _median(spent[ok]),
                        "mean_queries_spent": float(spent.mean()),
                        "max_queries_spent": int(spent.max()),
                        "wall_s": wall, "model_s": model_s, "overhead_s": wall - model_s,
                        "wall_ratio_to_torchattacks": wall / base[4] if base else None,
                        "per_sample": {"success": ok.tolist(), "spent": spent.tolist(), "first_adversarial": first.tolist()},
                    }
                    if own is not None:  # robust's own ledger against the outside count
                        own = np.asarray(own)
                        row["own_count_matches"] = bool((own == spent).all())
                        row["own_count_mismatches"] = int((own != spent).sum())
                        row["per_sample"]["own_queries_plus_clean"] = own.tolist()
                    rows.append(row)
            settings.append({"model": name, "eps": eps_text, "description": built.description,
                             "onnx": str(built.onnx), "weights": str(built.weights), "data": evalset.name,
                             "ids": evalset.ids.tolist(), "n": n, "max_abs_output_diff_onnx_vs_peer_module": max_diff,
                             "separating_pixels": len(log.sel), **built.extra})

    meta = {
        "benchmark": "square", "budgets": budgets, "contestants": wanted, "threads": threads, "seed": args.seed,
        "batch_size": args.batch_size, "peer_backend": args.peer_backend,
        "art_max_iter": {b: max((b - 3) // 3, 1) for b in budgets},
        "versions": versions,
        "command": C.command_line(argv),
            "loadavg_start": load_start, "loadavg_end": C.loadavg(),
    }
    headers = ["model", "eps", "budget", "contestant", "p_init", "success", "median q to 1st adv",
               "median q spent (succ.)", "mean q spent", "max q spent", "wall s", "÷ torchattacks", "model s",
               "outside model s"]
    table = []
    for r in rows:
        f = lambda v, fmt="{:.0f}": "–" if v is None else fmt.format(v)  # noqa: E731
        table.append([r["model"], r["eps"], r["budget"], r["contestant"], r["p_init"], f"{r['success_rate']:.0%}",
                      f(r["median_queries_first_adversarial"]), f(r["median_queries_spent_successful"]),
                      f(r["mean_queries_spent"]), r["max_queries_spent"], f"{r['wall_s']:.1f}",
                      f(r["wall_ratio_to_torchattacks"], "{:.2f}"), f"{r['model_s']:.1f}",
                      f"{r['overhead_s']:.1f}"])
    print(f"Square Attack, Linf, untargeted; first N correctly classified test images per model "
          f"(MNIST {args.n}, CIFAR-10 {args.n_cifar}); {threads} thread(s); seed {args.seed}; peers on "
          f"{args.peer_backend} modules")
    print()
    print(C.md_table(headers, table, "llrllrrrrrrrrr"))
    mism = [r for r in rows if r.get("own_count_matches") is False]
    if mism:
        print(f"\nwarning: robust's own query count differs from the outside count in {len(mism)} runs")
    path = C.write_json(args.out, {"meta": meta, "settings": settings, "results": rows})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
