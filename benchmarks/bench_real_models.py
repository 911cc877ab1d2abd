"""Real checkpoints nobody here trained, scanned through the command line exactly as a user would.

For each net of ../shared/data/models_cifar10 (its README gives the architecture, the checkpoint layout, the
normalisation and the accuracy on the 100 lossless test images): one `robust scan` subprocess with the options a
user would type (architecture file, --weights, --weights-key, --mean/--std, or the ONNX file with --mean/--std),
its clean accuracy next to the README's figure, its `standard` robust accuracy next to AutoAttack's (standard
version, the same images, epsilon and seed) run on the very module robust loaded. The normalised ONNX net is scanned
twice: as a black box and opened (`--access gradients`, the graph converted with onnx2torch, every answer from
onnxruntime); AutoAttack runs on the converted module.

    python benchmarks/bench_real_models.py                       # all nets, 100 images, eps 2/255
    python benchmarks/bench_real_models.py --models eran_pgd --n 20 --no-autoattack   # a quick look

Writes benchmarks/results/real_models.json and prints a Markdown table. Timings are wall seconds of one run each on
this machine (its load is printed); compare ratios from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROBUST_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATA = "cifar10/cifar10_test_first100_lossless.npz"
VNN_MEAN, VNN_STD = "0.4914,0.4822,0.4465", "0.2023,0.1994,0.2010"


@dataclass
class Net:
    spec: list[str]  # the model and its loading options, as a user types them (paths relative to SHARED marked {S})
    readme_clean: float  # the README's accuracy on the 100 lossless images


NETS = {
    "vnn_onnx_blackbox": Net(["{S}/models_cifar10/vnncomp2022__cifar_biasfield_cifar_base.onnx", "--mean", VNN_MEAN,
                              "--std", VNN_STD], 0.90),
    "vnn_onnx_opened": Net(["{S}/models_cifar10/vnncomp2022__cifar_biasfield_cifar_base.onnx", "--mean", VNN_MEAN,
                            "--std", VNN_STD, "--access", "gradients"], 0.90),
    "eran_pgd": Net(["examples/architectures.py:ConvSmallCifarERAN", "--weights",
                     "{S}/models_cifar10/abcrown__eran_cifar_conv_small_pgd.pth", "--weights-key", "state_dict.0",
                     "--mean", "0.4914,0.4822,0.4465", "--std", "0.2023,0.1994,0.2010"], 0.70),
    "sdp_adv": Net(["examples/architectures.py:ConvSmallCifarWK", "--weights",
                    "{S}/models_cifar10/abcrown__sdp_cifar_cnn_a_adv.model", "--mean", "0.4914,0.4824,0.4467",
                    "--std", "0.2471,0.2435,0.2616"], 0.70),
    "resnet20": Net(["benchmarks/_common.py:ResNet20", "--weights", "{S}/models_cifar10/akamaster__resnet20-12fca82f.th",
                     "--weights-key", "state_dict"], 0.94),
}


def scan(name: str, net: Net, args, out: Path) -> dict:
    spec = [a.replace("{S}", str(SHARED)) for a in net.spec]
    cmd = [sys.executable, "-m", "robustbench_cli", "scan", *spec, "--data", str(SHARED / DATA), "--n", str(args.n),
           "--eps", args.eps, "--preset", args.preset, "--seed", "0", "--device", "cpu", "-o", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name}: robust exited {done.returncode}: {done.stderr.strip()[-500:]}")
    report = json.loads(out.read_text())
    r = report["results"][0]
    return {"command": "robust scan " + " ".join(cmd[4:]), "clean": r["clean_accuracy"], "robust": r["robust_accuracy"],
            "seconds": seconds, "failed_checks": [f["check"] for f in r["diagnostics"] if not f["passed"]]}


def autoattack(name: str, net: Net, args) -> dict:
    """AutoAttack (standard) on the module robust loads for this spec, on the same images (an ONNX file opened
    with onnx2torch; its candidates are judged by onnxruntime, as robust's are)."""
    from bench_autoattack import run_autoattack

    from robustbench_cli.cli.app import floats
    from robustbench_cli.cli.commands import _tuple
    from robustbench_cli.core.data import DataSpec
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.targets import TargetSpec, load_target

    spec = [a.replace("{S}", str(SHARED)) for a in net.spec]
    opts = dict(zip(spec[1::2], spec[2::2]))
    target = load_target(TargetSpec(spec[0], weights=opts.get("--weights"), weights_key=opts.get("--weights-key"),
                                    mean=_tuple(floats(opts.get("--mean"), "--mean")),
                                    std=_tuple(floats(opts.get("--std"), "--std")),
                                    access="gradients" if spec[0].endswith(".onnx") else opts.get("--access", "auto"),
                                    device="cpu"))  # AutoAttack needs gradients: an ONNX net is opened for it
    data = DataSpec(str(SHARED / DATA), n=args.n).load()
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    target.bind(data.sample_shape, x[:1], data.name)

    class Whole(nn.Module):
        def forward(self, inp):
            return target.forward(inp)

    eps = ThreatModel.parse(f"linf:{args.eps}").epsilon
    x_adv, _, seconds, _ = run_autoattack(Whole().eval(), x, y, eps, 100, 0)
    with torch.no_grad():  # AutoAttack's candidates, judged on the target's own answers (onnxruntime for ONNX)
        clean = target.scores(x).argmax(1)
        adv = target.scores(x_adv).argmax(1)
    robust = ((clean == y) & (adv == y)).float().mean().item()
    return {"robust": robust, "seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(NETS))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--eps", default="2/255")
    p.add_argument("--preset", default="standard")
    p.add_argument("--no-autoattack", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "real_models.json"))
    args = p.parse_args(argv)
    if not (SHARED / DATA).is_file():
        print(f"needs {SHARED / DATA} (../shared/data)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    rows = []
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "robust-bench-real"
    tmp.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    done_aa: dict[str, dict] = {}
    for name in args.models.split(","):
        net = NETS[name]
        row = {"model": name, "readme_clean": net.readme_clean, **scan(name, net, args, tmp / f"{name}.json")}
        if not args.no_autoattack:
            key = net.spec[0]  # one AutoAttack run per model file (the ONNX net appears twice)
            aa = done_aa[key] = done_aa.get(key) or autoattack(name, net, args)
            row.update({"autoattack_robust": aa["robust"], "autoattack_seconds": aa["seconds"]})
        rows.append(row)
        print(json.dumps(row), flush=True)
        meta = {"n": args.n, "eps": args.eps, "preset": args.preset, "data": DATA, "load_at_start": load,
                "load_now": os.getloadavg()[0], "cpus": os.cpu_count(), "torch": torch.__version__,
                "numpy": np.__version__}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # after every model: a failed run keeps the rest
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"\n{args.n} lossless CIFAR-10 test images, Linf {args.eps}, `{args.preset}`, load {load:.1f} at start\n")
    print("| model | clean (README) | robust | AutoAttack | robust s | AutoAttack s | failed checks |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        aa = f"{100 * r['autoattack_robust']:.0f}%" if "autoattack_robust" in r else "–"
        aas = f"{r['autoattack_seconds']:.0f}" if "autoattack_seconds" in r else "–"
        print(f"| {r['model']} | {100 * r['clean']:.0f}% ({100 * r['readme_clean']:.0f}%) | {100 * r['robust']:.0f}% | "
              f"{aa} | {r['seconds']:.0f} | {aas} | {', '.join(r['failed_checks']) or '–'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
