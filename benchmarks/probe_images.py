"""How reliably an attack breaks a few given images: one run per seed, each from its own random starts (issue 24).

The AutoAttack benchmark compares two stochastic tools image by image. An image that one of them breaks and the other
leaves can be a real gap in strength, or luck: a break that most random starts miss. This probe tells the two apart
for the images a run flagged. On one setting of the benchmark (``MODEL@EPS``, same images and weights as
``bench_autoattack.py``), it runs each attack configuration on the chosen images once per seed and counts the breaks
(every break verified by robust's harness, or, for AutoAttack's attacks, checked here in the ball, in the box and
misclassified), with each image's best verified margin (< 0 until broken).

    python benchmarks/probe_images.py --setting resnet20@2/255 --ids 38 --seeds 6 \\
        --robust 'apgd-t {"targets": 9}' 'apgd-t {"targets": 3}' 'probe-apgd-t-rank {"rank": 5}' \\
        --autoattack apgd-t --out benchmarks/results/probe_images_resnet20_2.json

``--robust`` takes ``ATTACK JSON-PARAMS`` strings (any registered attack, the probe attacks of
``probe_standard.py`` included); ``--autoattack`` takes AutoAttack's attack names, run one at a time as
``version="custom"`` on the chosen images alone (their random starts then differ from a full run's, whose draws
depend on the whole batch). ``--ids`` are the benchmark's row indices (the ``robust_only_ids`` of its JSON).
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
import _common as C  # noqa: E402
import probe_standard  # noqa: E402,F401  (registers the probe attacks)
from bench_autoattack import FULL_N, MODELS, Net, build_target, check_adversarials, load_images, run_autoattack  # noqa: E402


def robust_runs(target, sub, threat, attack: str, params: dict, seeds: int) -> list[dict]:
    from robustbench_cli.evaluation import evaluate
    from robustbench_cli.evaluation.presets import Battery, Entry

    runs = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        res = evaluate(target, sub, [threat], Battery("probe", 1, [Entry(attack, attack, params)]), seed=seed,
                       batch_size=256).results[0]
        margin = res.best_margin if res.best_margin is not None else np.full(len(sub), np.nan)
        runs.append({"seed": seed, "broken": (~res.robust.astype(bool)).astype(int).tolist(),
                     "margin": [C.finite_or_none(float(m)) for m in margin], "seconds": time.perf_counter() - t0})
    return runs


def autoattack_runs(net, x, y, eps: float, attack: str, seeds: int) -> list[dict]:
    runs = []
    for seed in range(seeds):
        x_adv, _, seconds, _ = run_autoattack(net, x, y, eps, 256, seed, attacks=[attack])
        _, _, broken = check_adversarials(net, x, x_adv, y, eps, 256)
        runs.append({"seed": seed, "broken": broken.int().tolist(), "seconds": seconds})
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", required=True, help="MODEL@EPS, e.g. resnet20@2/255")
    p.add_argument("--ids", required=True, help="row indices of the benchmark's image set, comma-separated")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--robust", nargs="*", default=[], metavar="'ATTACK {JSON}'")
    p.add_argument("--autoattack", default="", help="AutoAttack attack names, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shared", default=str(C.DEFAULT_SHARED))
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    C.set_threads(a.threads)
    from robustbench_cli.core.data import EvalSet
    from robustbench_cli.core.threat_model import ThreatModel

    model, eps_text = a.setting.split("@", 1)
    if model not in MODELS:
        print(f"probe_images: unknown model {model!r} (known: {', '.join(MODELS)})", file=sys.stderr)
        return 2
    shared = Path(a.shared)
    ev, _ = load_images(MODELS[model].data, shared, FULL_N[MODELS[model].data])
    rows = [int(i) for i in a.ids.split(",")]
    sub = EvalSet(x=ev.x[rows], y=ev.y[rows], ids=ev.ids[rows], name=f"{ev.name}: rows {a.ids}")
    target = build_target(model, shared, 256)
    net = Net(target).eval()
    threat = ThreatModel.parse(f"linf:{eps_text}")
    x, y = torch.as_tensor(sub.x), torch.as_tensor(sub.y)
    with torch.no_grad():
        order = net(x).argsort(1, descending=True)[:, 1:].tolist()
    result: dict = {"setting": a.setting, "rows": rows, "ids": sub.ids.tolist(), "labels": sub.y.tolist(),
                    "wrong_classes_by_logit": order, "seeds": a.seeds, "robust": {}, "autoattack": {},
                    "command": C.command_line(None if argv is None else ["python benchmarks/probe_images.py", *argv]),
                    "versions": C.versions("pyautoattack"), "git": C.git_state(), "load_1min_start": C.loadavg()}
    for spec in a.robust:
        attack, _, params = spec.partition(" ")
        runs = robust_runs(target, sub, threat, attack, json.loads(params or "{}"), a.seeds)
        result["robust"][spec] = runs
        print(f"robust {spec}: breaks per image {np.sum([r['broken'] for r in runs], axis=0).tolist()} "
              f"of {a.seeds}", flush=True)
    for attack in filter(None, a.autoattack.split(",")):
        runs = autoattack_runs(net, x, y, threat.epsilon, attack, a.seeds)
        result["autoattack"][attack] = runs
        print(f"AutoAttack {attack}: breaks per image {np.sum([r['broken'] for r in runs], axis=0).tolist()} "
              f"of {a.seeds}", flush=True)
    result["load_1min_end"] = C.loadavg()
    C.write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
