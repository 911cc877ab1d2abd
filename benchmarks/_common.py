"""Shared pieces of the black-box benchmarks (bench_square.py, bench_hsj.py, bench_throughput.py).

Models are built at run time from the shared checkpoints and exported to ONNX in a cache folder outside the
repository (``$ROBUST_BENCH_CACHE``, default ``~/.cache/robust-bench``); nothing here is ever written into the
repository except the JSON results. robust attacks the ONNX file as a black box; the peer libraries attack a torch
module that computes the same function (the checked-in LeNet5 of ``examples/architectures.py`` with the same
weights, a ResNet-20 written here, or, for a model that only exists as ONNX, a thin module that runs the very same
onnxruntime session).

Query counting of the peers is done from the outside, by :class:`BallLog` (Linf attacks: every row a peer sends is
attributed to the clean sample whose epsilon ball contains it) and :class:`SequenceLog` (one sample per run: every
row belongs to it, in order).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "examples" / "architectures.py"
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def cache_dir() -> Path:
    d = Path(os.environ.get("ROBUST_BENCH_CACHE", Path.home() / ".cache" / "robust-bench")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def git_state() -> dict:
    """The commit of the checkout and whether robustbench_cli/ has uncommitted changes (the code measured)."""
    import subprocess

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", "robustbench_cli")
    return {"commit": git("rev-parse", "HEAD"), "robustbench_cli_dirty": bool(status) if status is not None else None}


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def versions(*extra: str) -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform(),
           "processor": platform.processor() or platform.machine(), "cores": cores(), **git_state()}
    for dist in ("robust-scan", "torch", "onnxruntime", "numpy", *extra):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def command_line(argv) -> str:
    if argv is not None:
        return " ".join(map(str, argv))
    return "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def write_json(path: str | Path, payload: dict) -> Path:
    import json

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    tmp.replace(p)
    return p


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        f = float(o)
        return None if not math.isfinite(f) else f
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def finite_or_none(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


# --- architectures ------------------------------------------------------------------------------------------------
def load_examples_module():
    spec = importlib.util.spec_from_file_location("bench_architectures", ARCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the option-A shortcut (strided subsampling, zero channel padding), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class ResNet20(nn.Module):
    """The CIFAR ResNet-20 of the akamaster checkpoint, as ../shared/data/models_cifar10/README.md describes it,
    with the checkpoint's normalisation inside, so that it takes [0,1] NCHW images."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, blocks: int = 3):
        super().__init__()
        # not part of the checkpoint: the published state dict has no normalisation entries
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks_ = []
            for b in range(blocks):
                blocks_.append(_BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
            layers.append(nn.Sequential(*blocks_))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        x = (x - self.mean) / self.std
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))

    def load_akamaster(self, path: Path) -> None:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k.removeprefix("module."): v for k, v in ck["state_dict"].items()}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked") and k not in ("mean", "std")]
        if missing or unexpected:
            raise RuntimeError(f"{path}: missing {missing}, unexpected {unexpected}")


class OrtModule(nn.Module):
    """A torch face on an onnxruntime session (forward only): peers query the very ONNX graph robust queries."""

    def __init__(self, path: Path, layout: str = "nchw", threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.layout = layout
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # torchattacks reads the device from it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().to("cpu", torch.float32).numpy()
        if self.layout == "nhwc":
            a = a.transpose(0, 2, 3, 1)
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(a)})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path, *, dynamic: bool = True) -> Path:
    """torch.onnx.export into ``path`` (atomically), with a dynamic batch axis unless ``dynamic`` is False."""
    if path.is_file():
        return path
    tmp = path.with_suffix(".tmp.onnx")
    kw = {"dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}} if dynamic else {}
    torch.onnx.export(model.eval(), (torch.zeros(1, *shape),), str(tmp), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False, **kw)
    tmp.replace(path)
    return path


# --- models -----------------------------------------------------------------------------------------------------
MODELS = {
    # name: (data set, checkpoint folder, file, how to build the torch side, what it is)
    "mnist-onnx": ("mnist", "models_mnist", "marabou__cnn_max_mninst2.onnx", "onnx",
                   "Marabou cnn_max_mninst2 (Keras conv net, NHWC ONNX, given as is)"),
    "lenet5": ("mnist", "models_mnist", "advertorch__mnist_lenet5_clntrained.pt", "lenet5",
               "advertorch LeNet5, standard training (ONNX export)"),
    "lenet5-adv": ("mnist", "models_mnist", "advertorch__mnist_lenet5_advtrained.pt", "lenet5",
                   "advertorch LeNet5, PGD-trained at Linf 0.3 (ONNX export)"),
    "resnet20": ("cifar10", "models_cifar10", "akamaster__resnet20-12fca82f.th", "resnet20",
                 "akamaster ResNet-20, standard training, normalisation inside (ONNX export)"),
}
DATA = {
    "mnist": ("mnist", "mnist_test.npz"),
    "cifar10": ("cifar10", "cifar10_test_first100_lossless.npz"),
}


@dataclass
class Built:
    name: str
    data: str
    onnx: Path  # what robust loads (load_target)
    module: nn.Module  # what the peers attack (eval mode, [0,1] NCHW in, logits out)
    description: str
    weights: Path
    sample_shape: tuple[int, ...]
    extra: dict = field(default_factory=dict)


def robust_target(path: Path, threads: int | None):
    """robust's view of a model: ``load_target(path)``; with a thread count, the same ``OnnxTarget`` with its
    onnxruntime session pinned to that many intra-op threads (load_target leaves onnxruntime's default)."""
    if threads is None:
        from robustbench_cli.targets import load_target

        return load_target(str(path))
    from robustbench_cli.targets.onnxrt import OnnxTarget

    return OnnxTarget(str(path), threads=threads)


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads; returns the number in force."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def build_model(name: str, shared: Path, *, peer_backend: str = "torch", static_batch1: bool = False,
                threads: int | None = None) -> Built:
    data, folder, file, how, desc = MODELS[name]
    weights = shared / folder / file
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (pass --shared pointing at the shared data folder)")
    shape = (1, 28, 28) if data == "mnist" else (3, 32, 32)
    if how == "onnx":
        if static_batch1:
            raise ValueError(f"{name} is given as ONNX with a dynamic batch; no static variant is built")
        module = OrtModule(weights, layout="nhwc", threads=threads)
        return Built(name, data, weights, module.eval(), desc, weights, shape, {"peer_module": "onnxruntime session"})
    if how == "lenet5":
        module = load_examples_module().LeNet5()
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        module = ResNet20()
        module.load_akamaster(weights)
    module.eval()
    from robustbench_cli.core.io import file_sha256

    tag = f"{name}-{file_sha256(weights)[:12]}-{'b1' if static_batch1 else 'dyn'}.onnx"
    onnx_path = export_onnx(module, shape, cache_dir() / tag, dynamic=not static_batch1)
    extra = {"peer_module": "torch"}
    if peer_backend == "onnx":
        module = OrtModule(onnx_path, threads=threads).eval()
        extra["peer_module"] = "onnxruntime session of the export"
    return Built(name, data, onnx_path, module, desc, weights, shape, extra)


def load_clean_correct(built: Built, shared: Path, n: int, target) -> tuple:
    """The first ``n`` test samples that both the ONNX target (robust's view) and the peers' module classify
    correctly; an EvalSet of them and the max |difference| of the two models' outputs on the candidates."""
    from robustbench_cli.core.data import EvalSet, load_eval_set

    folder, file = DATA[built.data]
    full = load_eval_set(str(shared / folder / file))
    x = torch.as_tensor(full.x)
    keep, diffs = [], []
    for i in range(0, len(x), 512):
        xb = x[i: i + 512]
        with torch.no_grad():
            a = target.scores(xb)
            b = built.module(xb)
        diffs.append(float((a - b).abs().max()))
        ok = (a.argmax(1).numpy() == full.y[i: i + 512]) & (b.argmax(1).numpy() == full.y[i: i + 512])
        keep.extend((np.flatnonzero(ok) + i).tolist())
        if len(keep) >= n:
            break
    keep = np.asarray(keep[:n], dtype=np.int64)
    ev = EvalSet(x=np.ascontiguousarray(full.x[keep]), y=full.y[keep], ids=full.ids[keep],
                 name=f"{file} (first {len(keep)} classified correctly)", source={"file": file})
    return ev, max(diffs)


# --- query logs ---------------------------------------------------------------------------------------------------
class BudgetSpent(Exception):
    """Raised by a log to stop a peer once it has spent the largest budget of interest."""


def _ranks(owner: torch.Tensor) -> torch.Tensor:
    """For each row, how many earlier rows of the same call share its owner."""
    order = torch.argsort(owner, stable=True)
    s = owner[order]
    first = torch.searchsorted(s, s, side="left")
    r = torch.empty_like(owner)
    r[order] = torch.arange(len(owner)) - first
    return r


def separating_pixels(x0: torch.Tensor, gap: float) -> tuple[torch.Tensor, list[int]]:
    """A small set of input coordinates on which every pair of clean samples differs by more than ``gap``.

    With ``gap`` = 2 (eps + tol), the restricted Linf distance identifies the owner of any point of a ball
    uniquely. Samples with no such coordinate against an earlier sample (balls that overlap) are returned in
    the second list; the benchmarks drop them.
    """
    n = len(x0)
    flat = x0.reshape(n, -1)
    sep = (flat[:, None, :] - flat[None, :, :]).abs() > gap  # (n, n, D)
    iu = torch.triu_indices(n, n, offset=1)
    pair_sep = sep[iu[0], iu[1]]  # (pairs, D)
    overlapping = sorted({int(j) for i, j in iu.T[~pair_sep.any(dim=1)].tolist()})
    covered = ~pair_sep.any(dim=1)  # uncoverable pairs count as covered
    chosen: list[int] = []
    while not bool(covered.all()):
        gain = (pair_sep & ~covered[:, None]).sum(dim=0)
        k = int(gain.argmax())
        chosen.append(k)
        covered |= pair_sep[:, k]
    return torch.tensor(chosen or [0], dtype=torch.long), overlapping


class BallLog:
    """Attributes every row sent to the model to the clean sample whose Linf ball (radius eps) contains it.

    The balls must be disjoint (pairwise Linf distance of the clean samples above 2 eps); then the attribution
    is exact, whatever the batching of the caller. Per sample it keeps the number of rows (``spent``) and the
    1-based position of the first row the model classified as not the true label (``first_adv``, -1: none).
    A row in no ball raises: a peer that queried outside the threat model would be caught.
    """

    def __init__(self, x0: torch.Tensor, y: torch.Tensor, eps: float, tol: float = 1e-5):
        self.x0 = x0.reshape(len(x0), -1).float()
        self.y = torch.as_tensor(y)
        self.eps, self.tol = eps, tol
        self.sel, overlapping = separating_pixels(self.x0, 2 * (eps + tol))
        if overlapping:
            raise ValueError(f"samples {overlapping} lie within 2 eps of an earlier one; drop them first")
        self.x0_sel = self.x0[:, self.sel]
        self.reset()

    def reset(self) -> None:
        n = len(self.x0)
        self.spent = torch.zeros(n, dtype=torch.int64)
        self.first_adv = torch.full((n,), -1, dtype=torch.int64)
        self.rows = 0
        self.book_s = 0.0  # time spent here, subtracted from the contestants' wall time
        self.model_s = 0.0  # time spent inside the model (set by the wrappers)

    def record(self, x: torch.Tensor, out: torch.Tensor) -> None:
        t0 = time.perf_counter()
        flat = x.detach().reshape(len(x), -1).to("cpu", torch.float32)
        d_sel = (flat[:, self.sel][:, None, :] - self.x0_sel[None]).abs().amax(dim=2)
        owner = d_sel.argmin(dim=1)
        full = (flat - self.x0[owner]).abs().amax(dim=1)
        if bool((full > self.eps + self.tol).any()):
            bad = int((full > self.eps + self.tol).nonzero()[0])
            raise RuntimeError(f"a queried input lies outside every eps ball (Linf {float(full[bad]):.4f} "
                               f"from its nearest sample, eps {self.eps})")
        pos = self.spent[owner] + _ranks(owner) + 1
        adv = out.detach().to("cpu").argmax(dim=1) != self.y[owner]
        if bool(adv.any()):
            o, p = owner[adv], pos[adv]
            fresh = self.first_adv[o] < 0
            if bool(fresh.any()):
                # the earliest adversarial row per owner: scatter the minimum position
                best = torch.full_like(self.first_adv, 2**62)
                best.scatter_reduce_(0, o[fresh], p[fresh], reduce="amin")
                upd = (self.first_adv < 0) & (best < 2**62)
                self.first_adv[upd] = best[upd]
        self.spent += torch.bincount(owner, minlength=len(self.x0))
        self.rows += len(x)
        self.book_s += time.perf_counter() - t0


class SequenceLog:
    """All rows of one sample, in order: is each adversarial, its L2 distance to the clean input, in the box.

    ``marks``: query counts at which to note the time since the log was made (minus the log's own bookkeeping),
    so that one run to the largest budget also gives the time a peer took to reach each smaller one.
    """

    def __init__(self, x0: torch.Tensor, label: int, cap: int | None = None, marks=()):
        self.x0 = x0.reshape(1, -1).float()
        self.label = int(label)
        self.cap = cap
        self.adv: list[np.ndarray] = []
        self.dist: list[np.ndarray] = []
        self.rows = 0
        self.book_s = 0.0
        self.model_s = 0.0
        self.t0 = time.perf_counter()
        self.marks = {int(q): None for q in marks}

    def seconds_to(self, q: int) -> float:
        """Seconds until the q-th query was answered (or until the end, when the run stopped earlier)."""
        t = self.marks.get(q)
        return t if t is not None else self.elapsed()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.book_s

    def admit(self, m: int) -> int:
        """How many of ``m`` rows may still be sent (the rest are cut off at the cap)."""
        return m if self.cap is None else max(0, min(m, self.cap - self.rows))

    def record(self, x: torch.Tensor, out: torch.Tensor) -> None:
        t0 = time.perf_counter()
        flat = x.detach().reshape(len(x), -1).to("cpu", torch.float32)
        inbox = ((flat >= -1e-6) & (flat <= 1 + 1e-6)).all(dim=1)
        adv = (out.detach().to("cpu").argmax(dim=1) != self.label) & inbox
        self.adv.append(adv.numpy())
        self.dist.append((flat - self.x0).norm(dim=1).numpy())
        self.rows += len(x)
        self.book_s += time.perf_counter() - t0
        for q, t in self.marks.items():
            if t is None and self.rows >= q:
                self.marks[q] = self.elapsed()

    def best_within(self, q: int) -> float:
        """Smallest L2 distance of an adversarial row among the first ``q`` rows (inf: none)."""
        if not self.adv:
            return math.inf
        adv = np.concatenate(self.adv)[:q]
        dist = np.concatenate(self.dist)[:q]
        return float(dist[adv].min()) if adv.any() else math.inf


class Counted(nn.Module):
    """Wraps a model: every row of every forward goes to ``log.record``; the time inside the model is summed.

    ``labels_only``: answer a one-hot of the decision instead of the scores (decision-based use). With a
    :class:`SequenceLog` that has a cap, the forward raises :class:`BudgetSpent` once the cap is reached.
    """

    def __init__(self, inner: nn.Module, log, *, labels_only: bool = False):
        super().__init__()
        self.inner = inner
        self.log = log
        self.labels_only = labels_only
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        admit = getattr(self.log, "admit", None)
        m = len(x) if admit is None else admit(len(x))
        if m < len(x):  # the cap falls inside this call: log the rows up to it, then stop the peer
            if m:
                self._run(x[:m])
            raise BudgetSpent()
        out = self._run(x)
        if self.labels_only:
            out = F.one_hot(out.argmax(dim=1), out.shape[1]).float()
        return out

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()  # ART's HopSkipJump interpolates in float64 and its PyTorchClassifier passes that on
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.inner(x)
        self.log.model_s += time.perf_counter() - t0
        self.log.record(x, out)
        return out


def attach_to_target(target, log) -> None:
    """Route the rows of a robust target (its ``_scores_batch``) through ``log`` as well (robust counts its own
    queries; this is the same outside count as the peers get, to check it)."""
    orig = target._scores_batch

    def wrapped(x):
        t0 = time.perf_counter()
        out = orig(x)
        log.model_s += time.perf_counter() - t0
        log.record(x, out)
        return out

    target._scores_batch = wrapped


def md_table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
