"""PGD wall time: robust's PGD against torchattacks' PGD and against the floor, in one process.

PGD-40, Linf eps 0.3, step 2.5 * eps / 40 = 0.01875, random start, batch 256, on the standard advertorch LeNet5
(``advertorch__mnist_lenet5_clntrained.pt``) and the first ``--n`` MNIST test images from ../shared/data.

Contestants (all on the same model, data and batches; timed in the same process, the order rotated on every
repeat, the median of ``--repeats`` reported):

* ``floor``: per 256-batch, a random start and 40 bare forward + backward passes of cross-entropy with a sign
  step and a clamp, in a plain torch loop: the irreducible work of PGD-40.
* ``torchattacks``: ``torchattacks.PGD(model, eps=0.3, alpha=0.01875, steps=40, random_start=True)`` per batch.
* ``robust attack``: robust's ``PGD(steps=40).run`` per batch through an ``Oracle`` (the attack alone).
* ``robust evaluate``: ``robustbench_cli.evaluation.cascade.evaluate`` with a one-entry battery (pgd, 40 steps): the
  attack plus the harness's clean pass, its bookkeeping and the verification query of every candidate.

Robust accuracy is the fraction of the ``n`` samples that are classified correctly clean and still correctly
after the attack (``model(adv).argmax == y``), the harness's own definition. Run::

    python benchmarks/bench_pgd.py            # --n 1024 --repeats 3 --threads <all cores>
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "examples" / "architectures.py"
MODELS = {  # --model: the benchmark uses the standard one
    "standard": ("models_mnist", "advertorch__mnist_lenet5_clntrained.pt"),
    "pgd-trained": ("models_mnist", "advertorch__mnist_lenet5_advtrained.pt"),
}
DATA = ("mnist", "mnist_test.npz")
EPS, STEPS = 0.3, 40
ALPHA = 2.5 * EPS / STEPS  # robust's default step (2.5 / steps of eps), given to torchattacks as well


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"),
                   help="the shared data folder (default: ../shared/data beside the repository)")
    p.add_argument("--model", choices=sorted(MODELS), default="standard",
                   help="which advertorch LeNet5: standard (default; PGD breaks almost every sample early) or "
                        "pgd-trained (few break, so robust's PGD runs nearly every step: shows its per-step cost)")
    p.add_argument("--n", type=int, default=1024, help="first N MNIST test images (default 1024)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size for every contestant (default 256)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per contestant; the median is reported (default 3)")
    p.add_argument("--threads", type=int, default=None, help=f"torch.set_num_threads (default: all cores, here {_cores()})")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed for torchattacks' random start (torch.manual_seed) and robust's")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_pgd.json"),
                   help="JSON results file (default benchmarks/results/bench_pgd.json)")
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = args.threads or _cores()
    torch.set_num_threads(threads)
    device = torch.device(args.device)

    try:
        import torchattacks
    except ImportError:
        print("bench_pgd: needs torchattacks; install it with  pip install -e \".[bench]\"", file=sys.stderr)
        return 2

    from robustbench_cli.attacks import Goal
    from robustbench_cli.attacks.pgd import PGD
    from robustbench_cli.attacks.rng import SampleRng
    from robustbench_cli.core.data import load_eval_set
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, check_compatible, evaluate
    from robustbench_cli.targets import TargetSpec, load_target
    from robustbench_cli.targets.base import Oracle

    shared = Path(args.shared).expanduser()
    weights, data_path = shared.joinpath(*MODELS[args.model]), shared.joinpath(*DATA)
    for f in (weights, data_path):
        if not f.is_file():
            print(f"bench_pgd: {f} not found (pass --shared pointing at the shared data folder)", file=sys.stderr)
            return 2

    target = load_target(TargetSpec(f"{ARCH}:LeNet5", weights=str(weights), device=str(device),
                                                         batch_size=args.batch_size))
    data = load_eval_set(str(data_path), n=args.n)
    check_compatible(target, data)  # sets num_classes, as evaluate does
    model = target.model  # the bare nn.Module (no preprocessing for this model), eval mode
    n, bs = len(data), args.batch_size
    x_all = torch.as_tensor(data.x).to(device)
    y_all = torch.as_tensor(data.y).to(device)
    batches = [slice(i, min(i + bs, n)) for i in range(0, n, bs)]
    threat = ThreatModel.parse(f"linf:{EPS}")
    battery = Battery("bench", 1, [Entry("pgd", "pgd", {"steps": STEPS})])
    with torch.no_grad():
        clean_correct = (model(x_all).argmax(1) == y_all).cpu().numpy()
    target.detect_output_kind(target.scores(x_all[:512]))

    # --- the contestants: each takes the batches and the eval set, returns (result, info) -----------------
    def floor(batches, evalset):
        for s in batches:
            x0, y = x_all[s], y_all[s]
            x = (x0 + torch.empty_like(x0).uniform_(-EPS, EPS)).clamp(0, 1)
            for _ in range(STEPS):
                x.requires_grad_(True)
                loss = F.cross_entropy(model(x), y)
                (g,) = torch.autograd.grad(loss, x)
                x = torch.min(torch.max(x.detach() + ALPHA * g.sign(), x0 - EPS), x0 + EPS).clamp(0, 1)
        return None, {"passes_per_sample": STEPS}

    def ta(batches, evalset):
        torch.manual_seed(args.seed)
        atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        return torch.cat([atk(x_all[s], y_all[s]) for s in batches]), {"passes_per_sample": STEPS}

    def robust_attack(batches, evalset):
        attack = PGD(steps=STEPS)
        outs, used = [], 0
        for s in batches:
            x0 = x_all[s]
            oracle = Oracle(target, len(x0))
            # the stream evaluate uses for this threat and entry: the same random starts per sample
            rng = SampleRng(args.seed, f"{threat.name}/pgd", evalset.ids[s], device)
            outs.append(attack.run(oracle, x0, Goal(y_all[s], False), threat, rng))
            used += int(oracle.used.sum())
        return torch.cat(outs), {"passes_per_sample": used / len(evalset)}

    def robust_evaluate(batches, evalset):
        ev = evaluate(target, evalset, [threat], battery, seed=args.seed, batch_size=bs)
        (res,) = ev.results
        # forward passes per sample: the clean pass + what the oracle counted (attack steps, verification)
        return res, {"passes_per_sample": 1 + float(res.queries.sum()) / len(evalset)}

    contestants = {"floor": floor, "torchattacks": ta, "robust attack": robust_attack, "robust evaluate": robust_evaluate}

    # --- warm-up on one batch each (allocator, oneDNN primitives), then timed repeats in rotated order -------
    warm = load_eval_set(str(data_path), n=min(bs, n))
    for fn in contestants.values():
        fn(batches[:1], warm)

    times: dict[str, list[float]] = {k: [] for k in contestants}
    last: dict[str, tuple] = {}
    names = list(contestants)
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            _sync(device)
            t0 = time.perf_counter()
            out = contestants[name](batches, data)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            last[name] = out

    # --- robust accuracy (outside the timing), the harness's definition ---------------------------------------
    def acc_of(adv: torch.Tensor) -> float:
        adv = threat.project(adv, x_all, target.bounds)
        with torch.no_grad():
            pred = torch.cat([model(adv[s]) for s in batches]).argmax(1)
        return float((clean_correct & (pred == y_all).cpu().numpy()).mean())

    rows = []
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in names:
        out, info = last[name]
        if name == "floor":
            acc = None
        elif name == "robust evaluate":
            acc = out.robust_accuracy
        else:
            acc = acc_of(out)
        rows.append({
            "contestant": name,
            "robust_accuracy": acc,
            "seconds_median": med[name],
            "seconds_min": min(times[name]),
            "seconds_all": times[name],
            "ratio_to_torchattacks": med[name] / med["torchattacks"],
            "ratio_to_floor": med[name] / med["floor"],
            "passes_per_sample": info["passes_per_sample"],
        })

    meta = {
        "benchmark": "pgd", "model": f"examples/architectures.py:LeNet5 + {MODELS[args.model][1]}", "data": f"{DATA[1]} first {n}",
        "n": n, "clean_accuracy": float(clean_correct.mean()), "threat": threat.name, "steps": STEPS,
        "alpha": ALPHA, "random_start": True, "batch_size": bs, "repeats": args.repeats, "threads": threads,
        "device": str(device), "seed": args.seed, "torch": torch.__version__,
        "torchattacks": getattr(torchattacks, "__version__", None), "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]) if argv is None else argv,
    }
    print(f"PGD-{STEPS}, {threat.name}, step {ALPHA:g}, random start; LeNet5 (advertorch, {args.model}); "
          f"MNIST test first {n}, clean acc {meta['clean_accuracy']:.2%}; batch {bs}; {device}, {threads} threads; "
          f"median of {args.repeats}")
    print()
    print("| contestant | robust acc | wall s (median) | wall s (min) | ÷ torchattacks | ÷ floor | model passes / sample |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        acc = "–" if row["robust_accuracy"] is None else f"{row['robust_accuracy']:.2%}"
        print(f"| {row['contestant']} | {acc} | {row['seconds_median']:.2f} | {row['seconds_min']:.2f} | {row['ratio_to_torchattacks']:.2f} | "
              f"{row['ratio_to_floor']:.2f} | {row['passes_per_sample']:.1f} |")

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print()
    print(f"results: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
