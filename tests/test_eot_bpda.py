"""EOT (--eot) for randomised models and BPDA (--bpda) for non-differentiable layers, measured against exact truth.

The model is a seeded linear classifier on 8x8 grey images (tests/linear_truth.py gives its exact Linf robust
accuracy). Behind an 8-bit input quantiser ``round(x * 255) / 255`` its gradient is zero: PGD fails, the diagnostics
say so, and PGD with ``--bpda quant`` or Square (black box) recover the exact robust accuracy. The inputs lie on
the 1/255 grid and epsilon is ``(m + 0.4) / 255``: the quantised input then reaches exactly the grid points within
``m / 255`` of the clean one, and since a linear model's worst case in the box is a vertex (on the grid), the
quantised model's exact robust accuracy is the linear model's at ``m / 255``. Verified successes make every measured
robust accuracy an upper bound, so the tests check ``truth <= measured <= truth + a few points``.

A randomised variant adds ``a * sum_i v_i sin(omega x_i + phi_i)`` with a fresh random phase per call: tiny in value
(|a| * 64 at most, about 0.02 typically), large and random in gradient (a * omega = 3 per coordinate), zero on average
over draws. Single-draw PGD is misled; EOT-PGD averages the noise away. The scan refuses such a model without --eot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from linear_truth import exact_min_linf

from robustbench_cli.attacks import Goal
from robustbench_cli.attacks.gradients import Autograd
from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import TargetError, UserError
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate, with_eot
from robustbench_cli.evaluation.diagnostics import check_cascade, check_target
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.targets.base import Oracle
from robustbench_cli.targets.pytorch import TorchTarget, apply_bpda

MODELS = '''"""Fixtures for --bpda and --eot: a seeded linear classifier on 8x8 grey images, behind an 8-bit quantiser,
with a random-phase term, or returning NaN."""
import math

import torch
from torch import nn

D, K = 64, 3


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        w = torch.randn(K, D, generator=g)
        self.linear = nn.Linear(D, K)
        with torch.no_grad():
            self.linear.weight.copy_(w)
            self.linear.bias.copy_(-w @ torch.full((D,), 0.5) + 0.5 * torch.randn(K, generator=g))

    def forward(self, x):
        return self.linear(x.flatten(1))


class Quant(nn.Module):
    def forward(self, x):
        return torch.round(x * 255) / 255


class Quantised(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = Quant()
        self.flat = nn.Flatten()
        self.net = Linear()

    def forward(self, x):
        return self.net(self.flat(self.quant(x)))


class RandomPhase(nn.Module):
    A, OMEGA = 0.002, 1500.0

    def __init__(self):
        super().__init__()
        self.net = Linear()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("v", torch.randint(0, 2, (K, D), generator=g).float() * 2 - 1)

    def forward(self, x):
        f = x.flatten(1)
        phi = 2 * math.pi * torch.rand_like(f)
        return self.net(x) + self.A * torch.sin(self.OMEGA * f + phi) @ self.v.T


class NanScores(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Linear()

    def forward(self, x):
        return self.net(x).log()  # log of negative logits: NaN


def linear():
    return Linear()


def quantised():
    return Quantised()


def randomised():
    return RandomPhase()


def nan_scores():
    return NanScores()
'''

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine: a second thread only adds contention (10x slower measured here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


NS: dict = {}
exec(MODELS, NS)  # noqa: S102 - the fixture source above, shared with the CLI tests' model file

M = 6  # grid steps of the threat: epsilon (M + 0.4) / 255
EPS = f"{(M + 0.4) / 255:.6f}"
N = 120


def _weights() -> tuple[np.ndarray, np.ndarray]:
    lin = NS["Linear"]().linear
    return lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()


@pytest.fixture(scope="module")
def grid_data() -> tuple[EvalSet, np.ndarray]:
    """Inputs on the 1/255 grid, labelled by the linear model; and each sample's exact minimal Linf distance."""
    rng = np.random.default_rng(0)
    xu = rng.integers(0, 256, (N, 1, 8, 8)).astype(np.uint8)
    x = (xu / 255.0).astype(np.float32)
    W, b = _weights()
    flat = x.reshape(N, -1).astype(np.float64)
    y = (flat @ W.T + b).argmax(axis=1)
    return EvalSet(x=x, y=y, ids=np.arange(N), name="grid"), exact_min_linf(W, b, flat, y)


def _truth(min_eps: np.ndarray, eps: float) -> float:
    return float((min_eps > eps).mean())


def _run(target, data, attacks, eps=EPS, **kw):
    battery = Battery("t", 1, [Entry(label, name, params) for label, name, params in attacks])
    ev = evaluate(target, data, [ThreatModel.parse(f"linf:{eps}")], battery, **kw)
    r = ev.results[0]
    found = {f["check"]: f for f in check_target(ev) + check_cascade(r, ev.target)}
    return ev, r, found


def _quantised(bpda: list[str] | None = None) -> TorchTarget:
    t = TorchTarget(NS["quantised"](), "quantised")
    if bpda:
        apply_bpda(t, bpda)
    return t


# --- BPDA -------------------------------------------------------------------------------------------------------
def test_rounding_defeats_pgd_the_diagnostics_flag_it_and_square_recovers_the_truth(grid_data):
    data, min_eps = grid_data
    truth = _truth(min_eps, M / 255)
    assert 0.3 < truth < 0.7  # a problem where the attacks have work to do
    ev, r, found = _run(_quantised(), data, [("pgd", "pgd", {"steps": 40}), ("square", "square", {"max_queries": 1000})])
    assert r.clean_accuracy == 1.0
    pgd, square = r.attacks
    assert pgd.robust_after >= 0.8, "zero gradients: PGD moves only by its random start"
    assert found["gradients"]["passed"] is False
    assert found["unbounded-epsilon"]["passed"] is False
    assert found["unbounded-epsilon"]["message"].startswith("with the whole input box allowed (linf 1), pgd left")
    assert found["blackbox-vs-whitebox"]["passed"] is False and square.broken >= 10
    assert truth <= r.robust_accuracy <= truth + 0.03, (truth, r.robust_accuracy)
    # the probe's unbounded PGD ran on the 64 probe rows (all clean-correct): 10 steps + final check + verification
    u = ev.probes["unbounded"]
    assert u["rows"] == 64 and u["still_correct"] == 64 and u["model_rows"] == 64 * 12
    assert ev.probes["model_rows"] == 3 * 64 + 64 + u["model_rows"] + 1  # repeat, batch composition, gradients, size probe


def test_bpda_recovers_the_exact_robust_accuracy_and_quiets_the_diagnostics(grid_data):
    data, min_eps = grid_data
    truth = _truth(min_eps, M / 255)
    ev, r, found = _run(_quantised(["quant"]), data,
                        [("pgd", "pgd", {"steps": 40}), ("square", "square", {"max_queries": 1000})])
    pgd, _ = r.attacks
    assert truth <= pgd.robust_after <= truth + 0.03, (truth, pgd.robust_after)
    assert truth <= r.robust_accuracy <= truth + 0.03
    for check in ("gradients", "unbounded-epsilon", "blackbox-vs-whitebox", "deterministic-outputs"):
        assert found[check]["passed"] is True, found[check]
    assert ev.target["bpda"] == ["quant"]


def test_bpda_keeps_the_forward_value_and_passes_the_gradient_straight_through():
    plain, bp = _quantised(), _quantised(["quant"])
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    z = bp.forward(x)
    torch.testing.assert_close(z, plain.forward(x), rtol=0, atol=0)  # bit for bit
    (g,) = torch.autograd.grad(z[:, 1].sum(), x)
    w = bp.model.net.linear.weight[1].view(1, 1, 8, 8).expand(5, 1, 8, 8)
    torch.testing.assert_close(g, w)  # d round(x)/dx taken as 1: the linear layer's row
    (g0,) = torch.autograd.grad(plain.forward(x)[:, 1].sum(), x)
    assert bool((g0 == 0).all())


def test_bpda_names_are_checked():
    with pytest.raises(TargetError, match=r"no submodule 'quantise'.*its modules: quant, flat, net, net\.linear"):
        _quantised(["quantise"])
    t = _quantised(["flat"])  # Flatten changes the shape: the identity cannot stand in for it
    with pytest.raises(TargetError, match=r"--bpda flat: .*\(2, 1, 8, 8\) to \(2, 64\)"):
        t.scores(torch.rand(2, 1, 8, 8))


def test_bpda_on_onnx_is_refused():
    from robustbench_cli import zoo

    with pytest.raises(TargetError, match="--bpda"):
        load_target(TargetSpec(str(zoo.ONNX), bpda=["quant"]))


# --- EOT --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uniform_data() -> tuple[EvalSet, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (N, 1, 8, 8)).astype(np.float32)
    W, b = _weights()
    flat = x.reshape(N, -1).astype(np.float64)
    y = (flat @ W.T + b).argmax(axis=1)
    return EvalSet(x=x, y=y, ids=np.arange(N), name="uniform"), exact_min_linf(W, b, flat, y)


def test_eot_pgd_beats_single_draw_pgd_on_a_randomised_model(uniform_data):
    data, min_eps = uniform_data
    eps = 0.025
    truth = _truth(min_eps, eps)
    out = {}
    for eot in (1, 10):
        torch.manual_seed(0)  # the model's own randomness draws from torch's global generator
        _, r, found = _run(TorchTarget(NS["randomised"](), "randomised"), data,
                            [("pgd", "pgd", {"steps": 40, "eot": eot})], eps=eps)
        assert found["deterministic-outputs"]["passed"] is False
        out[eot] = r
    single, eot = out[1].robust_accuracy, out[10].robust_accuracy
    assert eot <= single - 0.05, (single, eot)
    # the expected model is the linear one; a single verification draw can move a score by at most 0.13
    assert eot >= truth - 0.03, (truth, eot)
    # 10 draws leave part of the noise (measured: 0.72 single, 0.56 EOT, truth 0.49 over n=120): closer, not exact
    assert eot <= truth + 0.15, (truth, eot)
    # every EOT pass is a counted query: an unbroken sample pays 40 steps x 10 draws, the final check, the verification
    assert int(out[10].queries.max()) == 40 * 10 + 2 and int(out[1].queries.max()) == 40 + 2
    assert out[10].attacks[0].config["eot"] == 10 and "eot" not in out[1].attacks[0].config


def test_eot_respects_the_query_budget(uniform_data):
    data, _ = uniform_data
    torch.manual_seed(0)
    _, r, _ = _run(TorchTarget(NS["randomised"](), "randomised"), data, [("pgd", "pgd", {"steps": 40, "eot": 10})],
                   eps=0.025, queries=50)
    assert int(r.queries.max()) <= 50


def test_autograd_eot_on_a_deterministic_model_is_the_plain_gradient_and_counts_each_pass():
    t = TorchTarget(NS["linear"](), "linear")
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    goal = Goal(torch.tensor([0, 1, 2, 0]), False)
    from robustbench_cli.attacks.losses import cross_entropy

    rows = torch.arange(4)
    o1, o5 = Oracle(t, 4), Oracle(t, 4)
    l1, g1, z1 = Autograd().value_and_grad(o1, x, rows, goal, cross_entropy, None)
    l5, g5, z5 = Autograd(eot=5).value_and_grad(o5, x, rows, goal, cross_entropy, None)
    torch.testing.assert_close((l5, g5, z5), (l1, g1, z1))
    assert o1.used.tolist() == [1] * 4 and o5.used.tolist() == [5] * 4


def test_with_eot_applies_to_the_attacks_that_take_it():
    b = Battery("t", 1, [Entry("fgsm", "fgsm"), Entry("pgd", "pgd"), Entry("apgd-ce", "apgd-ce"),
                         Entry("cw-l2", "cw-l2"), Entry("square", "square"), Entry("noise", "noise", independent=True)])
    cfg = {a["label"]: a for a in with_eot(b, 7).config()["attacks"]}
    assert all(cfg[k]["eot"] == 7 for k in ("fgsm", "pgd", "apgd-ce", "cw-l2"))
    assert "eot" not in cfg["square"] and "eot" not in cfg["noise"]
    assert with_eot(b, 1) is b
    with pytest.raises(UserError, match="--eot must be in 1.."):
        with_eot(b, 0)
    with pytest.raises(UserError, match="none of the battery's attacks"):
        with_eot(Battery("t", 1, [Entry("square", "square")]), 5)


def test_the_randomised_model_is_refused_unless_eot_is_on(uniform_data):
    data, _ = uniform_data
    target = TorchTarget(NS["randomised"](), "randomised")
    battery = Battery("t", 1, [Entry("fgsm", "fgsm")])
    with pytest.raises(TargetError, match="--eot N"):
        evaluate(target, data, [ThreatModel.parse("linf:0.02")], battery, refuse_randomised=True)
    # a deterministic model passes the same gate
    evaluate(TorchTarget(NS["linear"](), "linear"), data, [ThreatModel.parse("linf:0.02")], battery,
             refuse_randomised=True)


# --- the CLI ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, grid_data) -> dict[str, str]:
    d = tmp_path_factory.mktemp("eot_bpda")
    (d / "models.py").write_text(MODELS)
    data, _ = grid_data
    np.savez(d / "grid.npz", x=np.round(data.x * 255).astype(np.uint8), y=data.y)
    return {"models": str(d / "models.py"), "data": str(d / "grid.npz"), "dir": str(d)}


def _error_line(res, *words: str) -> str:
    everything = (res.stdout or "") + (res.stderr or "")
    assert "Traceback" not in everything, everything
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1 and msg.startswith("error:"), msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    return msg


def test_cli_bpda_recovers_the_truth_and_is_recorded(run_cli, cli_files, grid_data):
    _, min_eps = grid_data
    truth = _truth(min_eps, M / 255)
    base = ["scan", f"{cli_files['models']}:quantised", "--data", cli_files["data"], "--eps", EPS, "--device", "cpu"]
    out = Path(cli_files["dir"]) / "masked.json"
    res = run_cli(*base, "--attacks", "pgd,square", "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(out.read_text())
    failed = {d["check"] for d in rep["results"][0]["diagnostics"] if not d["passed"]}
    assert {"gradients", "unbounded-epsilon", "blackbox-vs-whitebox"} <= failed
    assert "check failed" in res.stdout and "--bpda" in res.stdout

    out = Path(cli_files["dir"]) / "bpda.json"
    res = run_cli(*base, "--attacks", "pgd", "--bpda", "quant", "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(out.read_text())
    r = rep["results"][0]
    assert truth <= r["robust_accuracy"] <= truth + 0.03
    assert all(d["passed"] for d in r["diagnostics"]), r["diagnostics"]
    assert rep["targets"][0]["bpda"] == ["quant"]
    assert rep["options"]["targets"][0]["bpda"] == ["quant"]


def test_cli_randomised_model_needs_eot(run_cli, cli_files):
    base = ["scan", f"{cli_files['models']}:randomised", "--data", cli_files["data"], "--eps", "0.02",
            "--device", "cpu", "--attacks", "pgd", "--n", "40"]
    _error_line(run_cli(*base, "-o", Path(cli_files["dir"]) / "refused.json"), "different scores", "--eot")
    assert not (Path(cli_files["dir"]) / "refused.json").exists()
    out = Path(cli_files["dir"]) / "eot.json"
    res = run_cli(*base, "--eot", "5", "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(out.read_text())
    assert rep["options"]["run"]["eot"] == 5
    assert rep["battery"]["attacks"][0]["eot"] == 5
    det = next(d for d in rep["results"][0]["diagnostics"] if d["check"] == "deterministic-outputs")
    assert det["passed"] is False and "--eot 5" in det["message"]


@pytest.mark.parametrize("case", ["nan", "eot-zero", "eot-unused", "bpda-unknown", "bpda-shape", "bpda-empty",
                                  "bpda-access-scores"])
def test_cli_bad_inputs(run_cli, cli_files, case):
    m = cli_files["models"]
    base = ["--data", cli_files["data"], "--eps", "0.02", "--device", "cpu", "-o",
            str(Path(cli_files["dir"]) / f"{case}.json")]
    args, words = {
        "nan": ([f"{m}:nan_scores"], ("NaN or inf",)),
        "eot-zero": ([f"{m}:linear", "--eot", "0"], ("--eot must be in 1..",)),
        "eot-unused": ([f"{m}:linear", "--eot", "5", "--attacks", "square"], ("--eot 5", "none of", "pgd")),
        "bpda-unknown": ([f"{m}:quantised", "--bpda", "quant,round"], ("--bpda round", "no submodule", "quant, flat")),
        "bpda-shape": ([f"{m}:quantised", "--bpda", "flat"], ("--bpda flat", "shapes must match")),
        "bpda-empty": ([f"{m}:quantised", "--bpda", ","], ("--bpda needs module names",)),
        "bpda-access-scores": ([f"{m}:quantised", "--bpda", "quant", "--access", "scores"], ("--bpda", "--access scores")),
    }[case]
    _error_line(run_cli("scan", *args, *base), *words)
