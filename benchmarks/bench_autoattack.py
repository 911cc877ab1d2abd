"""robust's ``standard`` preset against AutoAttack's standard version (Croce & Hein 2020, ``pyautoattack``), with
sound certificates as a floor.

For every (model, epsilon) setting, in one process and on the same images:

* **AutoAttack**: ``AutoAttack(net, norm="Linf", eps=eps, version="standard", device="cpu", seed=seed)
  .run_standard_evaluation(x, y, batch_size=B)``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000
  queries), in cascade. AutoAttack checks clean accuracy itself.
* **robust**: ``robustbench_cli.evaluation.cascade.evaluate(target, evalset, [linf:eps], get_battery("standard"), seed=seed,
  batch_size=B)``: the ``standard`` preset by name (APGD-CE, APGD-T over the top-3 classes (top 9 before standard@5),
  FMN, Square 5,000 (with triage from standard@5), the longer searches on the closest samples and the noise
  yardstick; docs/batteries.md), every candidate projected and re-verified by the harness.

The two run alternately (AutoAttack first on even settings, robust first on odd ones), each timed as one wall-clock
interval around the call, in the same process with ``torch.set_num_threads(--threads)``.

Both results are checked here, outside the timing, on the same float32 module: AutoAttack's adversarials must lie in
the epsilon ball and [0,1] (a point outside would not count) and be misclassified; robust's per-sample ``robust``
flags come from its harness. Per sample the script counts the images robust leaves robust but AutoAttack breaks
(should be 0) and the reverse.

**Certificates** (``robustbench_cli/evaluation/certify.py``, outside the timing): per sample, interval bound propagation (IBP) for
every Conv/ReLU/Linear/max-pool net, and CROWN for the nets without max-pool (the ConvSmall nets); the ResNet-20 gets
none. These run on every image, apart from robust's own use of the same bounds inside ``standard`` (which certifies
the images APGD-CE leaves and attacks only the rest; its time counts in robust's wall time). AutoAttack, which knows
nothing of them, checks them: an image it breaks must never be certified. A certified image can never be broken: a robust accuracy below the certified accuracy, or any certified image
that an attack broke, is a bug, and the script says so on stderr and exits with 1. The published certified error
(the checkpoint READMEs, or the error stored in the checkpoint) is quoted for context; it was measured on the full
test set, not on these images.

Models (../shared/data/models_*; architectures in examples/architectures.py, ResNet-20 in benchmarks/_common.py):

========================  =======  ====================================================  ==========================
name                      data     checkpoint                                            training
========================  =======  ====================================================  ==========================
lenet5                    MNIST    advertorch__mnist_lenet5_clntrained.pt                standard
lenet5-adv                MNIST    advertorch__mnist_lenet5_advtrained.pt                PGD, Linf 0.3
wk-mnist-0.1              MNIST    convex_adversarial__mnist.pth                         certified, Linf 0.1
wk-mnist-0.3              MNIST    convex_adversarial__mnist_small_0_3.pth (stage 0)     certified, Linf 0.3
resnet20                  CIFAR    akamaster__resnet20-12fca82f.th                       standard
eran-cifar-pgd            CIFAR    abcrown__eran_cifar_conv_small_pgd.pth                PGD
wk-cifar-8px              CIFAR    convex_adversarial__cifar_small_8px.pth (stage 0)     certified, Linf 8/255
========================  =======  ====================================================  ==========================

Every MNIST model runs at Linf 0.1 and 0.3, every CIFAR-10 model at 2/255 and 8/255. Images: the first ``--n-mnist``
MNIST test images; for CIFAR-10 the 100 lossless test images first, then JPEG (q75) test images, skipping the JPEG
copies of those 100 and taking the classes in turn (the JPEG file is ordered by class).

Run::

    python benchmarks/bench_autoattack.py                 # 1,000 MNIST, 500 CIFAR-10: hours on 2 CPU cores
    python benchmarks/bench_autoattack.py --quick         # smoke run: 20 MNIST, 10 CIFAR-10
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from robustbench_cli.evaluation import certify

PRESET = "standard"
EPS = {"mnist": ("0.1", "0.3"), "cifar10": ("2/255", "8/255")}
FULL_N = {"mnist": 1000, "cifar10": 500}
QUICK_N = {"mnist": 20, "cifar10": 10}
WK_CIFAR_NORM = ([0.485, 0.456, 0.406], [0.225, 0.225, 0.225])
ERAN_CIFAR_NORM = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])


@dataclass
class Model:
    data: str
    folder: str
    file: str
    arch: str  # a class of examples/architectures.py, or "resnet20" (benchmarks/_common.py)
    training: str
    weights_key: str | None = None
    mean: list | None = None
    std: list | None = None
    published: dict = field(default_factory=dict)  # eps text -> what the source says about certified error


MODELS = {
    "lenet5": Model("mnist", "models_mnist", "advertorch__mnist_lenet5_clntrained.pt", "LeNet5", "standard"),
    "lenet5-adv": Model("mnist", "models_mnist", "advertorch__mnist_lenet5_advtrained.pt", "LeNet5",
                        "PGD-trained, Linf 0.3"),
    "wk-mnist-0.1": Model("mnist", "models_mnist", "convex_adversarial__mnist.pth", "ConvSmallWK",
                          "certified (Wong & Kolter 2018), Linf 0.1", published={"0.1": {
                              "certified_error": 0.058,
                              "source": "models_mnist/README.md: 5.8 % certified robust error (full test set)"}}),
    "wk-mnist-0.3": Model("mnist", "models_mnist", "convex_adversarial__mnist_small_0_3.pth", "ConvSmallWK",
                          "certified (Wong et al. 2018, cascade stage 0), Linf 0.3", weights_key="state_dict.0",
                          published={"0.3": {
                              "certified_error": 0.3364,
                              "source": "checkpoint 'err' 0.3364: the certified robust error of the 3-stage cascade "
                                        "(convex_adversarial's evaluate_robust_cascade); stage 0 alone certifies at "
                                        "most as many images"}}),
    "resnet20": Model("cifar10", "models_cifar10", "akamaster__resnet20-12fca82f.th", "resnet20", "standard"),
    "eran-cifar-pgd": Model("cifar10", "models_cifar10", "abcrown__eran_cifar_conv_small_pgd.pth",
                            "ConvSmallCifarERAN", "PGD-trained (ERAN ConvSmall)", weights_key="state_dict.0",
                            mean=ERAN_CIFAR_NORM[0], std=ERAN_CIFAR_NORM[1]),
    "wk-cifar-8px": Model("cifar10", "models_cifar10", "convex_adversarial__cifar_small_8px.pth", "ConvSmallCifarWK",
                          "certified (Wong et al. 2018, cascade stage 0), Linf 8/255", weights_key="state_dict.0",
                          mean=WK_CIFAR_NORM[0], std=WK_CIFAR_NORM[1], published={"8/255": {
                              "certified_error": 0.7171,
                              "source": "checkpoint 'err' 0.7171: the certified robust error of the 3-stage cascade "
                                        "on the lossless test set; stage 0 alone certifies at most as many images"}}),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default=str(C.DEFAULT_SHARED), help="the shared data folder (default ../shared/data)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated from {', '.join(MODELS)} (default all)")
    p.add_argument("--eps", default=None, help="comma-separated epsilons to keep, e.g. 0.3,8/255 (default all)")
    p.add_argument("--settings", default=None,
                   help="comma-separated MODEL@EPS pairs, in this order (overrides --models/--eps)")
    p.add_argument("--n-mnist", type=int, default=None, help=f"first N MNIST test images (default {FULL_N['mnist']})")
    p.add_argument("--n-cifar", type=int, default=None, help=f"CIFAR-10 images (default {FULL_N['cifar10']})")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK_N['mnist']} MNIST, {QUICK_N['cifar10']} CIFAR-10 images (unless given)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size of both (default 256)")
    p.add_argument("--threads", type=int, default=None, help=f"torch.set_num_threads (default all cores, here {C.cores()})")
    p.add_argument("--seed", type=int, default=0, help="AutoAttack's seed and robust's (default 0)")
    p.add_argument("--preset", default=PRESET, help=f"robust's battery preset (default {PRESET})")
    p.add_argument("--no-certify", action="store_true", help="skip the IBP/CROWN certificates")
    p.add_argument("--out", default=str(C.RESULTS / "bench_autoattack.json"),
                   help="JSON results file (default benchmarks/results/bench_autoattack.json)")
    args = p.parse_args(argv)
    if args.settings:
        pairs = [t.split("@", 1) for t in args.settings.split(",")]
        bad = [t for t in pairs if len(t) != 2 or t[0] not in MODELS or t[1] not in EPS[MODELS[t[0]].data]]
        if bad:
            p.error(f"--settings: {', '.join('@'.join(t) for t in bad)} is not MODEL@EPS of this benchmark")
        args.models = ",".join(dict.fromkeys(t[0] for t in pairs))
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    for name in ("n_mnist", "n_cifar"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    return args


# --- models and data ----------------------------------------------------------------------------------------------
class Net(nn.Module):
    """What AutoAttack attacks and what the checks here query: robust's target as a module (its normalisation, then
    the network), float32 logits. The very same weights robust's target holds."""

    def __init__(self, target):
        super().__init__()
        self.pre = target.preprocess
        self.net = target.model

    def forward(self, x):
        return self.net(self.pre(x) if self.pre is not None else x).float()


def build_target(name: str, shared: Path, batch_size: int):
    from robustbench_cli.targets import TargetSpec, load_target
    from robustbench_cli.targets.pytorch import TorchTarget

    m = MODELS[name]
    weights = shared / m.folder / m.file
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (pass --shared pointing at the shared data folder)")
    if m.arch == "resnet20":  # normalisation inside the module (benchmarks/_common.py)
        module = C.ResNet20()
        module.load_akamaster(weights)
        return TorchTarget(module, f"resnet20:{m.file}", num_classes=10, batch_size=batch_size,
                           device=torch.device("cpu"))
    return load_target(TargetSpec(f"{C.ARCH}:{m.arch}", weights=str(weights), weights_key=m.weights_key, mean=m.mean, std=m.std, batch_size=batch_size, device="cpu"))


def bound_layers(name: str, target) -> list[nn.Module] | None:
    """The net as a flat list of layers for the certificates (None: no certificate for this architecture)."""
    arch = MODELS[name].arch
    model = target.model
    if arch == "resnet20":
        return None  # residual connections and batch norm: not covered by the certificates
    if arch == "LeNet5":
        return [model.conv1, model.relu1, model.pool1, model.conv2, model.relu2, model.pool2, nn.Flatten(),
                model.linear1, model.relu3, model.linear2]
    return list(model)  # the nn.Sequential ConvSmall nets


def load_images(data: str, shared: Path, n: int):
    """MNIST: the first n test images. CIFAR-10: the lossless first 100, then JPEG images (without the JPEG copies of
    those 100), one class after another, so that every prefix is balanced."""
    from robustbench_cli.core.data import EvalSet, load_eval_set

    if data == "mnist":
        ev = load_eval_set(str(shared / "mnist" / "mnist_test.npz"), n=n)
        return ev, {"mnist_test.npz": len(ev)}
    lossless = load_eval_set(str(shared / "cifar10" / "cifar10_test_first100_lossless.npz"))
    if n <= len(lossless):
        ev = load_eval_set(str(shared / "cifar10" / "cifar10_test_first100_lossless.npz"), n=n)
        return ev, {"cifar10_test_first100_lossless.npz": len(ev)}
    jpeg = load_eval_set(str(shared / "cifar10" / "cifar10_test_jpeg_q75_classmajor.npz"))
    # class-major file, official order within a class (../shared/data/cifar10/README.md): the first h_c rows of
    # class c are the JPEG copies of the lossless images of class c
    seen = np.bincount(lossless.y, minlength=10)
    for c in range(10):  # check that claim on the pixels: JPEG costs ~6/255 on average, a wrong image far more
        rows = np.flatnonzero(jpeg.y == c)[: seen[c]]
        mine = lossless.x[lossless.y == c]
        diff = np.abs(jpeg.x[rows] - mine).reshape(len(rows), -1).mean(axis=1)
        if len(diff) and float(diff.max()) > 16 / 255:
            raise RuntimeError(f"JPEG rows of class {c} do not match the lossless images (mean |diff| {diff.max():.3f})")
    order = []
    for c in range(10):
        rows = np.flatnonzero(jpeg.y == c)[seen[c]:]
        order.extend((k, c, int(r)) for k, r in enumerate(rows))
    order.sort()
    take = np.asarray([r for _, _, r in order[: n - len(lossless)]], dtype=np.int64)
    x = np.concatenate([lossless.x, jpeg.x[take]])
    y = np.concatenate([lossless.y, jpeg.y[take]])
    ids = np.concatenate([lossless.ids, 10_000 + take])  # JPEG rows: 10,000 + row (never an official index)
    ev = EvalSet(x=np.ascontiguousarray(x), y=y, ids=ids,
                 name=f"CIFAR-10: lossless first 100 + {len(take)} JPEG q75", source={"jpeg_rows": take.tolist()})
    return ev, {"cifar10_test_first100_lossless.npz": len(lossless), "cifar10_test_jpeg_q75_classmajor.npz": len(take)}


# --- the two contestants ------------------------------------------------------------------------------------------
class _AALog(logging.Handler):
    """AutoAttack reports robust accuracy after each attack on its logger; keep those numbers."""

    PAT = re.compile(r"robust accuracy after ([A-Z-]+): ([0-9.]+)% \(total time ([0-9.]+) s\)")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.after: list[dict] = []
        self.warnings: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        m = self.PAT.search(msg)
        if m:
            self.after.append({"attack": m.group(1).lower(), "robust_accuracy": float(m.group(2)) / 100,
                               "cumulative_seconds": float(m.group(3))})
        elif record.levelno >= logging.WARNING:
            self.warnings.append(msg)


def run_autoattack(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, bs: int, seed: int,
                   attacks: list[str] | None = None):
    """AutoAttack's standard version, or with ``attacks`` only those of its attacks (``version="custom"``)."""
    from pyautoattack import AutoAttack

    log = _AALog()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(log)
    old_level, old_prop = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # AutoAttack's progress lines stay out of the terminal
    try:
        t0 = time.perf_counter()
        adversary = AutoAttack(net, norm="Linf", eps=eps, version="custom" if attacks else "standard",
                               **({"attacks": attacks} if attacks else {}), device="cpu", seed=seed)
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=bs)
        seconds = time.perf_counter() - t0
    finally:
        logger.removeHandler(log)
        logger.setLevel(old_level)
        logger.propagate = old_prop
    return x_adv.detach(), y_adv.detach(), seconds, log


def run_robust(target, ev, threat, battery, bs: int, seed: int):
    from robustbench_cli.evaluation import evaluate

    t0 = time.perf_counter()
    out = evaluate(target, ev, [threat], battery, seed=seed, batch_size=bs)
    return out.results[0], time.perf_counter() - t0


def check_adversarials(net: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float, bs: int):
    """AutoAttack's adversarials, checked here: (Linf distance, inside the ball and the box, broken = inside and
    misclassified by the net), per sample."""
    n = len(x)
    dist = (x_adv - x).abs().reshape(n, -1).amax(dim=1)
    inside = (dist <= eps + 1e-6) & (x_adv.reshape(n, -1).amin(1) >= 0) & (x_adv.reshape(n, -1).amax(1) <= 1)
    return dist, inside, inside & (predict(net, x_adv, bs) != y)


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([net(x[i: i + bs]).argmax(1) for i in range(0, len(x), bs)])


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


HEADERS = ["model", "ε", "n", "clean %", "AutoAttack %", "robust %", "robust-only / AA-only", "IBP %", "CROWN %",
           "gap (robust − cert) pp", "published cert. err", "AA s", "robust s", "robust ÷ AA"]


def result_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """The README's table of the settings in ``rows`` (this script's JSON results)."""
    table = []
    for r in rows:
        c = r["certificates"]
        pub = r["published"]
        table.append([
            r["model"], r["eps"], r["n"], _pct(r["clean_accuracy"]), _pct(r["autoattack"]["robust_accuracy"]),
            _pct(r["robust"]["robust_accuracy"]), f"{len(r['robust_only_ids'])} / {len(r['autoattack_only_ids'])}",
            _pct(c.get("ibp", {}).get("certified_accuracy")), _pct(c.get("crown", {}).get("certified_accuracy")),
            "–" if r["gap_robust_minus_certified"] is None else f"{100 * r['gap_robust_minus_certified']:.1f}",
            "–" if not pub else f"{100 * pub['certified_error']:.2f} %", f"{r['autoattack']['seconds']:.1f}",
            f"{r['robust']['seconds']:.1f}", f"{r['time_ratio_robust_over_autoattack']:.2f}",
        ])
    return HEADERS, table


# --- main ---------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    threads = C.set_threads(args.threads or C.cores())
    load_start = C.loadavg()
    try:
        import pyautoattack
    except ImportError:
        print("bench_autoattack: needs pyautoattack; install it with  pip install -e \".[bench]\"", file=sys.stderr)
        return 2
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import get_battery

    shared = Path(args.shared).expanduser()
    n_want = {"mnist": args.n_mnist, "cifar10": args.n_cifar}
    for k, v in n_want.items():
        if v is None:
            n_want[k] = QUICK_N[k] if args.quick else FULL_N[k]
    battery = get_battery(args.preset)
    keep_eps = None if args.eps is None else set(args.eps.split(","))
    settings = [(m, e) for m in args.models.split(",") for e in EPS[MODELS[m].data] if keep_eps is None or e in keep_eps]
    if args.settings:
        settings = [(t.split("@", 1)[0], t.split("@", 1)[1]) for t in args.settings.split(",")]
    if not settings:
        print("bench_autoattack: no setting left after --models/--eps", file=sys.stderr)
        return 2

    rows, problems = [], []
    images: dict[str, tuple] = {}
    for si, (name, eps_text) in enumerate(settings):
        m = MODELS[name]
        if m.data not in images:
            images[m.data] = load_images(m.data, shared, n_want[m.data])
        ev, sources = images[m.data]
        target = build_target(name, shared, args.batch_size)
        net = Net(target).eval()
        threat = ThreatModel.parse(f"linf:{eps_text}")
        eps = threat.epsilon
        x, y = torch.as_tensor(ev.x), torch.as_tensor(ev.y)
        n, bs = len(y), args.batch_size
        with torch.enable_grad():  # warm-up, untimed: allocator and oneDNN primitives for both
            xw = x[:bs].clone().requires_grad_(True)
            net(xw).sum().backward()
        clean_ok = (predict(net, x, bs) == y).numpy()

        print(f"[{si + 1}/{len(settings)}] {name} {threat.name} n={n} ...", file=sys.stderr, flush=True)
        order = ["autoattack", "robust"] if si % 2 == 0 else ["robust", "autoattack"]
        for who in order:
            if who == "autoattack":
                x_adv, y_adv, aa_s, aa_log = run_autoattack(net, x, y, eps, bs, args.seed)
            else:
                res, robust_s = run_robust(target, ev, threat, battery, bs, args.seed)

        dist, inside, broken = check_adversarials(net, x, x_adv, y, eps, bs)
        aa_broken = broken.numpy() | ~clean_ok
        aa_robust = ~aa_broken
        aa_reported = (y_adv == y).numpy()  # AutoAttack's own flags (its last prediction per sample)
        r_robust = res.robust.astype(bool)
        robust_only = np.flatnonzero(r_robust & ~aa_robust)  # robust kept robust, AutoAttack broke
        aa_only = np.flatnonzero(aa_robust & ~r_robust)

        cert = {}
        layers = None if args.no_certify else bound_layers(name, target)
        if layers is not None:
            with torch.no_grad():  # the layer list must compute exactly what the target computes
                pre = x if target.preprocess is None else target.preprocess(x)
                h = pre
                for layer in layers:
                    h = layer(h)
                if float((h - net(x)).abs().max()) > 1e-4:
                    raise RuntimeError(f"{name}: the layer list for the certificates differs from the model")
            for method, fn in (("ibp", certify.ibp_certify), ("crown", certify.crown_certify)):
                t0 = time.perf_counter()
                try:
                    flags, margin = fn(layers, x, y, eps, m.mean, m.std)
                except certify.UnsupportedNet as e:
                    cert[method] = {"skipped": str(e)}
                    continue
                flags = flags.numpy()
                cert[method] = {
                    "certified_accuracy": float(flags.mean()),
                    "seconds": time.perf_counter() - t0,
                    "certified_ids": ev.ids[flags].tolist(),
                    # a certified image that is misclassified clean or broken by an attack: a bug somewhere
                    "certified_but_wrong_clean": ev.ids[flags & ~clean_ok].tolist(),
                    "certified_but_broken_by_robust": ev.ids[flags & ~r_robust].tolist(),
                    "certified_but_broken_by_autoattack": ev.ids[flags & ~aa_robust].tolist(),
                    "margin_of_conflicts": margin.numpy()[flags & (~r_robust | ~aa_robust)].tolist(),
                }
        best_cert, union = None, None  # certified by either method (both are sound)
        if any("certified_accuracy" in c for c in cert.values()):
            union = np.zeros(n, dtype=bool)
            for c in cert.values():
                if "certified_ids" in c:
                    union |= np.isin(ev.ids, c["certified_ids"])
            best_cert = float(union.mean())

        row = {
            "model": name, "checkpoint": f"{m.folder}/{m.file}", "training": m.training, "threat": threat.name,
            "eps": eps_text, "n": n, "images": sources, "clean_accuracy": float(clean_ok.mean()), "order": order,
            "autoattack": {
                "robust_accuracy": float(aa_robust.mean()),
                "robust_accuracy_reported": float(aa_reported.mean()),
                "seconds": aa_s,
                "after_each_attack": aa_log.after,
                "warnings": aa_log.warnings,
                "outside_ball": int((~inside).sum()),
                "max_linf": float(dist.max()),
            },
            "robust": {
                "preset": battery.id,
                "robust_accuracy": res.robust_accuracy,
                "clean_accuracy": res.clean_accuracy,
                "seconds": robust_s,
                "queries_mean": float(res.queries.mean()),
                "certified_accuracy": res.certified_accuracy,
                "certificate": res.certificate,
                "attacks": [{"label": a.label, "attempted": a.attempted, "broken": a.broken, "seconds": a.seconds,
                             "robust_after": a.robust_after, "skipped": a.skipped} for a in res.attacks],
            },
            "time_ratio_robust_over_autoattack": robust_s / aa_s,
            "robust_only_ids": ev.ids[robust_only].tolist(),
            "autoattack_only_ids": ev.ids[aa_only].tolist(),
            "certificates": cert,
            "certified_accuracy": best_cert,
            "gap_robust_minus_certified": None if best_cert is None else res.robust_accuracy - best_cert,
            "published": m.published.get(eps_text),
            "robust_ids": ev.ids[r_robust].tolist(),
            "autoattack_robust_ids": ev.ids[aa_robust].tolist(),
        }
        rows.append(row)

        # --- loud checks -------------------------------------------------------------------------------------
        tag = f"{name} {threat.name}"
        if union is not None:
            bad_r = np.flatnonzero(union & ~r_robust)
            bad_a = np.flatnonzero(union & ~aa_robust)
            if res.robust_accuracy < best_cert - 1e-12 or len(bad_r):
                problems.append(f"BUG {tag}: robust broke {len(bad_r)} certified image(s) (ids "
                                f"{ev.ids[bad_r][:10].tolist()}); robust accuracy {res.robust_accuracy:.4f} vs certified "
                                f"{best_cert:.4f}")
            if len(bad_a):
                problems.append(f"BUG {tag}: AutoAttack broke {len(bad_a)} certified image(s) (ids "
                                f"{ev.ids[bad_a][:10].tolist()}): the certificate or the check is wrong")
        if row["clean_accuracy"] != res.clean_accuracy:
            problems.append(f"MISMATCH {tag}: clean accuracy {row['clean_accuracy']:.4f} here, "
                            f"{res.clean_accuracy:.4f} in robust's evaluation")
        if len(robust_only):
            print(f"note {tag}: {len(robust_only)} image(s) robust under robust but broken by AutoAttack: ids "
                  f"{ev.ids[robust_only][:20].tolist()}", file=sys.stderr)
        print(f"    AutoAttack {aa_robust.mean():.2%} in {aa_s:.1f} s; robust {res.robust_accuracy:.2%} in "
              f"{robust_s:.1f} s (ratio {robust_s / aa_s:.2f}); certified {_pct(best_cert)}%", file=sys.stderr,
              flush=True)

    # --- report ---------------------------------------------------------------------------------------------------
    headers, table = result_table(rows)
    full = {"mnist": FULL_N["mnist"], "cifar10": FULL_N["cifar10"]}
    projection = []
    for r in rows:
        data = MODELS[r["model"]].data
        if r["n"] < full[data]:  # linear in n: a rough upper estimate (larger batches are cheaper per image)
            f = full[data] / r["n"]
            projection.append({"model": r["model"], "eps": r["eps"], "n": full[data],
                               "autoattack_seconds": r["autoattack"]["seconds"] * f,
                               "robust_seconds": r["robust"]["seconds"] * f})

    meta = {
        "benchmark": "autoattack", "preset": battery.id, "battery": battery.config(),
        "autoattack": {"package": "pyautoattack", "version": getattr(pyautoattack, "__version__", None),
                       "call": "AutoAttack(net, norm='Linf', eps=eps, version='standard', device='cpu', seed=seed)"
                               ".run_standard_evaluation(x, y, batch_size=B)"},
        "n": {k: n_want[k] for k in sorted({MODELS[mn].data for mn, _ in settings})}, "quick": args.quick,
        "batch_size": args.batch_size, "threads": threads, "seed": args.seed, "device": "cpu",
        "versions": C.versions("pyautoattack"), "command": C.command_line(argv),
        "loadavg_start": load_start, "loadavg_end": C.loadavg(),
        "projection_linear_in_n": projection, "problems": problems,
    }
    label = "SMOKE RUN (--quick, tiny n: not a result)" if args.quick else "AutoAttack benchmark"
    print()
    print(f"{label}: robust preset {battery.id} vs AutoAttack standard (pyautoattack {meta['autoattack']['version']}); "
          f"cpu, {threads} thread(s), batch {args.batch_size}, seed {args.seed}")
    print()
    print(C.md_table(headers, table, "llr" + "r" * (len(headers) - 3)))
    if projection:
        print()
        print("projected wall time at full n (linear in n from this run; rough):")
        for p in projection:
            print(f"  {p['model']} {p['eps']} n={p['n']}: AutoAttack ~{p['autoattack_seconds'] / 60:.0f} min, "
                  f"robust ~{p['robust_seconds'] / 60:.0f} min")
    out = C.write_json(args.out, {"meta": meta, "results": rows})
    print()
    print(f"results: {out}")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if any(p.startswith(("BUG", "MISMATCH")) for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
