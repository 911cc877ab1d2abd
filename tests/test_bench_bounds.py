"""The certificates of benchmarks/_bounds.py (IBP, CROWN) are sound, and bench_autoattack.py runs end to end.

Soundness: on small random Conv/ReLU/Linear nets the certified lower bound of the worst margin is never above a
margin actually reached inside the box (random points and a sign-gradient descent on the margin), and a certified
sample is never broken. Exactness: on an affine net both bounds equal the true minimum.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, shared_path
from torch import nn

BENCH = ROOT / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # the bench modules import _common/_bounds by name
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


B = _load("_bounds")


def _conv_net(seed: int) -> list[nn.Module]:
    torch.manual_seed(seed)
    # 10x10 input: the first transposed convolution needs an output padding of 1 to get back to 10x10
    return [nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
            nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)]


def _pool_net(seed: int) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(75, 4)]


def _forward(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def _worst_margin(layers, x, y):
    z = _forward(layers, x)
    other = z.clone()
    other[torch.arange(len(y)), y] = -float("inf")
    return z[torch.arange(len(y)), y] - other.max(dim=1).values


def _reached_margin(layers, x0, y, eps, mean=None, std=None, draws=64, steps=60):
    """The smallest worst-case margin found in the box by random draws and sign-gradient descent (float64)."""
    net = [copy.deepcopy(layer).double() for layer in layers]

    def f(x):
        if mean is not None:
            x = (x - torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)) / torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        return _worst_margin(net, x, y)

    x0 = x0.double()
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    g = torch.Generator().manual_seed(0)
    best = f(x0)
    for _ in range(draws):
        best = torch.minimum(best, f(lo + (hi - lo) * torch.rand(x0.shape, generator=g, dtype=torch.float64)))
    for start in range(4):
        x = lo + (hi - lo) * torch.rand(x0.shape, generator=g, dtype=torch.float64) if start else x0.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            m = f(x)
            (grad,) = torch.autograd.grad(m.sum(), x)
            x = torch.minimum(torch.maximum(x.detach() - eps / 10 * grad.sign(), lo), hi)
            best = torch.minimum(best, f(x).detach())
    return best.detach()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.002, 0.05, 0.3])
def test_bounds_never_exceed_a_reached_margin(seed, eps):
    torch.set_num_threads(1)
    layers = _conv_net(seed)
    x = torch.rand(12, 1, 10, 10, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = _forward(layers, x).argmax(1)  # labels = the net's own predictions: every sample is correct
    reached = _reached_margin(layers, x, y, eps)
    for fn in (B.ibp_certify, B.crown_certify):
        flags, bound = fn(layers, x, y, eps)
        assert bool((bound <= reached + 1e-9).all()), (fn.__name__, bound - reached)
        assert not bool((flags & (reached <= 0)).any())  # certified, yet broken: unsound
    if eps == 0.002:  # not vacuous: at a tiny epsilon CROWN certifies most samples
        assert B.crown_certify(layers, x, y, eps)[0].float().mean() >= 0.5


def test_normalisation_is_folded_into_the_box():
    torch.set_num_threads(1)
    torch.manual_seed(3)
    layers = [nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 6), nn.ReLU(),
              nn.Linear(6, 3)]
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        xn = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        y = _forward(layers, xn).argmax(1)
    reached = _reached_margin(layers, x, y, 0.02, mean, std)
    for fn in (B.ibp_certify, B.crown_certify):
        _, bound = fn(layers, x, y, 0.02, mean, std)
        assert bool((bound <= reached + 1e-9).all())
        # the bound tightens to the clean margin as eps -> 0: the box is mapped, not ignored
        _, tiny = fn(layers, x, y, 1e-9, mean, std)
        with torch.no_grad():
            clean = _worst_margin([copy.deepcopy(m).double() for m in layers], xn.double(), y)
        assert torch.allclose(tiny, clean, atol=1e-5)


def test_affine_net_bounds_are_exact():
    torch.manual_seed(4)
    layers = [nn.Flatten(), nn.Linear(12, 5)]
    x = torch.rand(6, 3, 2, 2)
    y = torch.randint(0, 5, (6,))
    eps = 0.1
    w, b = layers[1].weight.double(), layers[1].bias.double()
    lo, hi = (x.double() - eps).clamp(0, 1).flatten(1), (x.double() + eps).clamp(0, 1).flatten(1)
    exact = torch.full((6,), float("inf"), dtype=torch.float64)
    for j in range(5):
        d = w[y] - w[j]  # margin row per sample; its minimum over the box picks lo or hi per coordinate
        m = torch.where(d >= 0, lo, hi).mul(d).sum(1) + b[y] - b[j]
        exact = torch.where(y == j, exact, torch.minimum(exact, m))
    for fn in (B.ibp_certify, B.crown_certify):
        _, bound = fn(layers, x, y, eps)
        assert torch.allclose(bound, exact, atol=1e-10)


def test_ibp_covers_max_pool_and_crown_refuses_it():
    torch.set_num_threads(1)
    layers = _pool_net(5)
    x = torch.rand(10, 1, 10, 10, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = _forward(layers, x).argmax(1)
    reached = _reached_margin(layers, x, y, 0.01)
    flags, bound = B.ibp_certify(layers, x, y, 0.01)
    assert bool((bound <= reached + 1e-9).all())
    assert flags.any()
    with pytest.raises(NotImplementedError, match="max-pool"):
        B.crown_certify(layers, x, y, 0.01)


def test_unsupported_layers_are_refused():
    x, y = torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(NotImplementedError, match="Tanh"):
        B.ibp_certify([nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)], x, y, 0.1)
    with pytest.raises(NotImplementedError, match="last layer"):
        B.ibp_certify([nn.Linear(4, 2), nn.ReLU()], x, y, 0.1)


# --- the benchmark script -----------------------------------------------------------------------------------------
def test_cifar_images_lossless_first_then_balanced_jpeg_without_duplicates():
    shared_path("cifar10", "cifar10_test_jpeg_q75_classmajor.npz")
    bench = _load("bench_autoattack")
    ev, sources = bench.load_images("cifar10", Path(shared_path()), 130)
    assert sources == {"cifar10_test_first100_lossless.npz": 100, "cifar10_test_jpeg_q75_classmajor.npz": 30}
    assert ev.ids[:100].tolist() == list(range(100))
    assert sorted(ev.y[100:].tolist()) == sorted(list(range(10)) * 3)  # classes in turn
    assert len(set(ev.ids.tolist())) == 130
    # none of the JPEG images is a copy of a lossless one (JPEG changes a pixel by ~6/255 on average)
    d = (torch.as_tensor(ev.x[100:])[:, None] - torch.as_tensor(ev.x[:100])[None]).abs().flatten(2).mean(2)
    assert float(d.min()) > 20 / 255


@pytest.mark.slow
def test_bench_autoattack_smoke(tmp_path):
    pytest.importorskip("pyautoattack", reason="pyautoattack (in the test and bench extras) is the reference this smoke run compares with")
    shared_path("models_mnist", "convex_adversarial__mnist.pth")
    shared_path("mnist", "mnist_test.npz")
    bench = _load("bench_autoattack")
    out = tmp_path / "aa.json"
    rc = bench.main(["--models", "wk-mnist-0.1", "--eps", "0.1", "--n-mnist", "4", "--threads", "1",
                     "--shared", str(shared_path()), "--out", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["n"] == 4 and row["robust"]["preset"].startswith("standard@")
    assert row["certificates"]["crown"]["certified_accuracy"] > 0  # the certified net: CROWN certifies some
    assert row["robust"]["robust_accuracy"] >= row["certified_accuracy"]
    assert row["autoattack"]["robust_accuracy"] >= row["certified_accuracy"]
    assert row["autoattack"]["outside_ball"] == 0
    assert row["time_ratio_robust_over_autoattack"] > 0


@pytest.mark.slow
def test_bench_defences_smoke(tmp_path):
    """bench_defences.py end to end on 8 MNIST test images: the zoo's robust accuracies, the AutoAttack cross-check
    (no image left robust that AutoAttack breaks) and the detector's non-adaptive and adaptive rows."""
    pytest.importorskip("pyautoattack", reason="pyautoattack (in the test and bench extras) is the cross-check")
    shared_path("mnist", "mnist_test.npz")
    bench = _load("bench_defences")
    out = tmp_path / "def.json"
    rc = bench.main(["--n", "8", "--aa-n", "4", "--threads", "1", "--shared", str(shared_path()), "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    rows = {r["checkpoint"]: r for r in res["zoo"]}
    assert set(rows) == {"standard", "pgd", "alp"}
    for r in rows.values():
        assert r["n"] == 8 and 0 <= r["robust_accuracy"] <= r["clean_accuracy"]
        aa = r["autoattack"]
        assert aa["n"] == 4 and aa["robust_only"] == 0 and aa["invalid_points"] == 0
    assert rows["pgd"]["robust_accuracy"] > rows["standard"]["robust_accuracy"]
    plain, non_adaptive, adaptive = res["detector"]["rows"]
    assert non_adaptive["adaptive"] is False and adaptive["adaptive"] is True
    assert adaptive["robust_accuracy"] <= non_adaptive["robust_accuracy"]
