"""The certificates of robustbench_cli/evaluation/certify.py (IBP, CROWN) are sound, and the harness uses them without changing
a result.

Soundness: on small random Conv/ReLU/Linear nets the certified lower bound of the worst margin is never above a
margin actually reached inside the box (random points and a sign-gradient descent on the margin), and a certified
sample is never broken. Exactness: on an affine net both bounds equal the true minimum. Harness: a scan with
certificates gives the same per-sample verdicts as one without, attacks no certified sample, and stops certifying
where the bounds cannot prove anything.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustbench_cli.evaluation import certify as B


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
    with pytest.raises(B.UnsupportedNet, match="max-pool"):
        B.crown_certify(layers, x, y, 0.01)


def test_unsupported_layers_are_refused():
    x, y = torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(B.UnsupportedNet, match="Tanh"):
        B.ibp_certify([nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)], x, y, 0.1)
    with pytest.raises(B.UnsupportedNet, match="last layer"):
        B.ibp_certify([nn.Linear(4, 2), nn.ReLU()], x, y, 0.1)




def test_dense_matrix_of_a_convolution_is_the_convolution():
    torch.manual_seed(6)
    for conv, shape in [(nn.Conv2d(3, 5, 4, stride=2, padding=1), (3, 11, 9)),
                        (nn.Conv2d(2, 4, 3, dilation=2, padding=2), (2, 8, 8)),
                        (nn.Conv2d(1, 3, (3, 2), stride=(1, 2), bias=False), (1, 7, 6))]:
        x = torch.randn(6, *shape, dtype=torch.float64)
        ref = B._affine_interval(conv, x, x)[0]
        w, b = B._dense(conv, shape, tuple(ref.shape[1:]))
        assert torch.allclose(x.flatten(1) @ w.T + b, ref.flatten(1), atol=1e-12)


def test_a_targeted_goal_is_certified_on_its_own_margin_exactly():
    """A targeted attack at class t fails for sure when z_y - z_t stays positive: on an affine net the bound is the
    exact minimum of that one margin, above the untargeted worst margin."""
    torch.manual_seed(7)
    layers = [nn.Flatten(), nn.Linear(12, 5)]
    x = torch.rand(40, 3, 2, 2)
    with torch.no_grad():
        y = _forward(layers, x).argmax(1)
    t = (y + 1 + torch.randint(0, 4, (40,))) % 5
    reach = torch.zeros(40, 5, dtype=torch.bool)
    reach[torch.arange(40), t] = True
    eps = 0.15
    w, b = layers[1].weight.double(), layers[1].bias.double()
    lo, hi = (x.double() - eps).clamp(0, 1).flatten(1), (x.double() + eps).clamp(0, 1).flatten(1)
    d = w[y] - w[t]
    exact = torch.where(d >= 0, lo, hi).mul(d).sum(1) + b[y] - b[t]
    for fn in (B.ibp_certify, B.crown_certify):
        flags, bound = fn(layers, x, y, eps, reach=reach)
        assert torch.allclose(bound, exact, atol=1e-10)
        assert torch.equal(flags, exact > 0)
        untargeted = fn(layers, x, y, eps)[1]
        assert bool((untargeted <= bound + 1e-12).all())
    assert 0 < int((exact > 0).sum()) < 40  # both verdicts occur: the check is not vacuous


# --- the harness's certifier --------------------------------------------------------------------------------------
def _digits(n=120):
    from robustbench_cli.core.data import load_eval_set

    return load_eval_set("digits", n=n)


def _trained_mlp(data, *, hidden=32, pool=False, seed=0):
    """A small net trained on the digits it is evaluated on (a few hundred Adam steps, CPU, a second)."""
    torch.manual_seed(seed)
    body = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)] if pool else [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()]
    feat = 4 * 4 * 4 if pool else 4 * 8 * 8
    net = nn.Sequential(*body, nn.Flatten(), nn.Linear(feat, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return _fit(net, data)


def _fit(net, data, steps=200):
    """Full-batch Adam on the digits the net is evaluated on."""
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def _target(net, **kw):
    from robustbench_cli.targets.pytorch import TorchTarget

    t = TorchTarget(net, "net", num_classes=10, batch_size=64, device=torch.device("cpu"), **kw)
    t.fast_forward = False
    return t


def _battery(certify=True):
    from robustbench_cli.evaluation import Battery, Entry

    return Battery("t", 1, [Entry("pgd", "pgd", {"steps": 10}), Entry("apgd-ce", "apgd-ce", {"steps": 20}),
                            Entry("square", "square", {"max_queries": 200}),
                            Entry("noise", "noise", {"draws": 5}, independent=True)], certify=certify)


@pytest.mark.parametrize("threat", ["linf:0.02", "linf:0.06"])
def test_certificates_change_the_work_not_the_verdicts(threat):
    """Same per-sample verdicts with and without certificates (per-sample random streams); no attack after the first
    tries a certified sample; every certified sample is robust; the certified accuracy is at most the robust one."""
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import evaluate

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data))
    th = ThreatModel.parse(threat)
    on = evaluate(t, data, [th], _battery(), certify=True).results[0]
    off = evaluate(t, data, [th], _battery(), certify=False).results[0]
    assert off.certificate is None and off.certified_accuracy is None
    assert on.certificate["method"] == "crown" and on.certificate["stopped"] is None
    assert np.array_equal(on.robust, off.robust) and np.array_equal(on.adv_pred, off.adv_pred)
    assert on.certified.any()  # not vacuous
    assert not (on.certified & ~on.robust).any()
    assert on.certified_accuracy <= on.robust_accuracy
    for a in on.attacks[1:]:
        if not a.independent:
            assert not (a.attempted_mask & on.certified).any()
    assert on.queries.sum() < off.queries.sum()  # the work the certificates spared


def test_linear_model_certified_equals_exact_robust_accuracy():
    """On an affine model the certificate is exact: certified accuracy, robust accuracy under the attacks and the
    analytic robust accuracy all agree (the lower and upper bounds meet)."""
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate

    torch.set_num_threads(1)
    data = _digits(200)
    torch.manual_seed(1)
    net = _fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), data)
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    eps = 0.1
    with torch.no_grad():
        w, b = net[1].weight.double(), net[1].bias.double()
        lo, hi = (x.double() - eps).clamp(0, 1).flatten(1), (x.double() + eps).clamp(0, 1).flatten(1)
        worst = torch.full((len(y),), float("inf"), dtype=torch.float64)
        for j in range(10):
            d = w[y] - w[j]
            m = torch.where(d >= 0, lo, hi).mul(d).sum(1) + b[y] - b[j]
            worst = torch.where(y == j, worst, torch.minimum(worst, m))
        correct = net(x).argmax(1) == y
    exact = float((correct & (worst > 0)).double().mean())
    # PGD alone leaves some breakable samples here (0.81 robust against 0.73 exact): APGD-T's targeted margins
    # find the rest, and the certificate proves everything else
    bat = Battery("t", 1, [Entry("pgd", "pgd", {"steps": 10}), Entry("apgd-t", "apgd-t", {"steps": 50, "targets": 9})])
    res = evaluate(_target(net), data, [ThreatModel.parse(f"linf:{eps}")], bat, certify=True).results[0]
    assert 0.2 < exact < 0.9  # a meaningful split
    assert res.robust_accuracy == pytest.approx(exact)
    # the tolerance for float32 rounding may leave a sample whose margin is within it uncertified, never more
    assert res.certified_accuracy == pytest.approx(exact, abs=1 / len(y))


def test_auto_mode_stops_where_the_bounds_prove_too_little(monkeypatch):
    """The preset's setting certifies a first few samples and goes on only while at least CERT_MIN_SHARE of those
    tried are certified: asked for more than it can get, it stops after the first few and attacks the rest.
    --certify (True) certifies every sample the first attack leaves. Same verdicts in both runs."""
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import evaluate

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data, hidden=64))
    th = ThreatModel.parse("linf:0.15")  # PGD-10 leaves ~40 samples, the bounds certify a few of them
    monkeypatch.setattr(B, "CERT_MIN_SHARE", 1.01)
    auto = evaluate(t, data, [th], _battery(certify=True)).results[0]
    left = int(auto.attacks[0].attempted - auto.attacks[0].broken)
    assert left > B.CERT_FIRST + B.CERT_CHUNK
    c = auto.certificate
    assert c["attempted"] == B.CERT_FIRST and "the rest were attacked" in c["stopped"]
    every = evaluate(t, data, [th], _battery(certify=False), certify=True).results[0]
    assert every.certificate["attempted"] == left and every.certificate["stopped"] is None
    assert every.certificate["certified"] > 0
    assert np.array_equal(auto.robust, every.robust) and np.array_equal(auto.adv_pred, every.adv_pred)
    monkeypatch.setattr(B, "CERT_MIN_SHARE", 0.0)  # never stops: the same as --certify
    goes_on = evaluate(t, data, [th], _battery(certify=True)).results[0].certificate
    assert {**goes_on, "seconds": 0} == {**every.certificate, "seconds": 0}


def test_for_target_refuses_what_it_cannot_certify_and_folds_normalisation():
    from robustbench_cli.targets.pytorch import TorchTarget

    data = _digits(16)
    x = torch.as_tensor(data.x)

    class Custom(nn.Module):  # a forward() of its own: the layer order cannot be read off the module
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    cases = [
        (_target(Custom()), "nn.Sequential"),
        (_target(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh(), nn.Linear(10, 10))), "nn.Sequential"),
        (_target(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU())), "Linear layer"),
        (_target(nn.Sequential(nn.Conv2d(1, 2, 3, groups=1, padding="same"), nn.Flatten(), nn.Linear(128, 10))), "padding"),
    ]
    for t, why in cases:
        cert, reason = B.for_target(t, (1, 8, 8), x, t.scores(x))
        assert cert is None and why in reason, reason
    sub = TorchTarget(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), "sub", num_classes=10, device=torch.device("cpu"))
    sub.__class__ = type("Wrapped", (TorchTarget,), {})
    assert B.for_target(sub, (1, 8, 8), x, sub.scores(x))[0] is None
    # --mean/--std: folded into the box, and the chain reproduces the target's logits
    net = _trained_mlp(_digits(), seed=2)
    t = _target(net, mean=[0.3], std=[0.4])
    cert, reason = B.for_target(t, (1, 8, 8), x, t.scores(x))
    assert cert is not None and cert.mean == pytest.approx([0.3]) and reason == ""
    # a chain that does not reproduce the target's outputs is refused (the certificate would be about another model)
    cert, reason = B.for_target(t, (1, 8, 8), x, t.scores(x) + 1.0)
    assert cert is None and "reproduce" in reason


def test_max_pool_nets_get_ibp_and_the_report_says_so(tmp_path):
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import evaluate
    from robustbench_cli.reports.build import build_report

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data, pool=True))
    ev = evaluate(t, data, [ThreatModel.parse("linf:0.01"), ThreatModel.parse("l2:0.3")], _battery(), certify=True)
    linf, l2 = ev.results
    assert linf.certificate["method"] == "ibp" and "max-pool" in linf.certificate["crown_skipped"]
    assert linf.certified.any() and not (linf.certified & ~linf.robust).any()
    assert l2.certificate == {"method": None, "skipped": "certificates cover Linf threats only, not l2"}
    assert l2.certified_accuracy is None
    rep = build_report([ev], data=data.describe(), battery=_battery().config(), seed=0, device="cpu").to_dict()
    a, b = rep["results"]
    assert a["certified_accuracy"] == linf.certified_accuracy and a["certificate"]["method"] == "ibp"
    assert sum(a["samples"]["certified"]) == int(linf.certified.sum())
    assert b["certified_accuracy"] is None


def test_a_resumed_scan_keeps_its_certificates(tmp_path):
    """The state file carries the certified flags and the certificate's record: a resumed run restores them (same
    record, seconds included: nothing certified twice) and gives the same verdicts."""
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import evaluate
    from robustbench_cli.evaluation.resume import ScanState

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data))
    th = ThreatModel.parse("linf:0.05")
    path, fp = tmp_path / "r.state.npz", {"seed": 0}
    first = evaluate(t, data, [th], _battery(), certify=True, state=ScanState(path, fp, resume=False)).results[0]
    assert first.certified.any() and path.is_file()
    again = evaluate(t, data, [th], _battery(), certify=True, state=ScanState(path, fp, resume=True)).results[0]
    assert again.certificate == first.certificate
    assert np.array_equal(again.certified, first.certified) and np.array_equal(again.robust, first.robust)


def test_a_wrong_certificate_is_flagged_by_the_noise_yardstick(monkeypatch):
    """Plant a certifier that claims every sample: the later attacks skip them, but the noise yardstick still draws
    on every clean-correct sample, its breaks count, and the certificate-sound check fails and says what to do."""
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, diagnostics, evaluate

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data))
    monkeypatch.setattr(B.Certifier, "certify", lambda self, x, y, eps, reach, z: (
        torch.ones(len(x), dtype=torch.bool), torch.zeros(len(x), dtype=torch.float64)))
    # a first attack that breaks almost nothing (2 queries of Square), then PGD, then 20 noise draws
    bat = Battery("t", 1, [Entry("square", "square", {"max_queries": 2}), Entry("pgd", "pgd", {"steps": 10}),
                           Entry("noise", "noise", {"draws": 20}, independent=True)], certify=True)
    th = ThreatModel.parse("linf:0.25")
    res = evaluate(t, data, [th], bat).results[0]
    assert (res.certified & ~res.robust).any()  # noise broke "certified" samples, and the result says so
    (finding,) = [d for d in diagnostics.check(res) if d["check"] == "certificate-sound"]
    assert not finding["passed"] and "--no-certify" in finding["message"]
    honest = evaluate(t, data, [th], bat, certify=False).results[0]
    assert res.robust_accuracy > honest.robust_accuracy  # why a wrong certificate is the worst bug: it hides breaks


def test_cli_certify_shows_the_lower_bound_and_says_why_not(tmp_path, run_cli):
    """--certify on a file.py:factory Sequential net: a `certified` column and the report's fields; on an ONNX black
    box the same flag gives a report without certificates and one line saying why."""
    import json

    torch.set_num_threads(1)
    data = _digits()
    net = _trained_mlp(data)
    (tmp_path / "arch.py").write_text(
        "from torch import nn\n\n\ndef make():\n    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), "
        "nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10))\n")
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "r.json"
    res = run_cli("scan", f"{tmp_path / 'arch.py'}:make", "--weights", tmp_path / "w.pt", "--data", "digits",
                  "--n", "60", "--eps", "0.03", "--attacks", "pgd,square", "--certify", "-o", out)
    assert res.exit_code == 0, res.output
    assert "certified" in res.stdout
    (r,) = json.loads(out.read_text())["results"]
    assert r["certificate"]["method"] == "crown" and r["certified_accuracy"] > 0
    assert r["certified_accuracy"] <= r["robust_accuracy"]
    assert sum(r["samples"]["certified"]) == r["certificate"]["certified"]
    onnx = tmp_path / "m.onnx"
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), str(onnx), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    res = run_cli("scan", onnx, "--data", "digits", "--n", "20", "--eps", "0.03", "--attacks", "square",
                  "--certify", "-o", tmp_path / "b.json")
    assert res.exit_code == 0, res.output
    assert "certificate on" in res.stdout and "plain PyTorch module" in res.stdout
    (r,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert r["certified_accuracy"] is None and r["certificate"]["method"] is None


def test_square_restarts_only_add_breaks_and_keep_to_the_budget():
    """Restart r > 0 searches again from a fresh start and its own stream, only for samples not yet broken: every
    sample the first search broke is broken the same way (same queries), more may be, and no sample spends more
    than the budget."""
    from robustbench_cli.attacks import create
    from robustbench_cli.attacks.base import Goal
    from robustbench_cli.attacks.rng import SampleRng
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.targets.base import Oracle

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data))
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    th = ThreatModel.parse("linf:0.15")
    out = {}
    for k in (1, 3):
        o = Oracle(t, len(x), budget=250)
        adv = create("square", max_queries=100, restarts=k).run(o, x, Goal(y, False), th,
                                                               SampleRng(0, "sq", data.ids))
        broken = t.scores(th.project(adv, x, t.bounds)).argmax(1) != y
        out[k] = (broken, o.used.clone())
        assert int(o.used.max()) <= 250
    (b1, q1), (b3, q3) = out[1], out[3]
    assert bool((b3 | ~b1).all()) and int(b3.sum()) > int(b1.sum())
    assert torch.equal(q3[b1], q1[b1]) and bool((q3[~b1] > q1[~b1]).all())
    assert create("square", restarts=3).config()["restarts"] == 3 and "restarts" not in create("square").config()


def test_square_triage_only_stops_the_rows_far_from_breaking():
    """triage_after=q: at query q a row goes on only if its margin closed 1 - triage_ratio of its starting gap. The
    rows that go on search exactly as without triage (same breaks, same queries: the rule is per row and the random
    streams are per row), the others stop at q queries with their best point so far, and no row's fate depends on
    the other rows of its batch."""
    from robustbench_cli.attacks import create
    from robustbench_cli.attacks.base import Goal
    from robustbench_cli.attacks.rng import SampleRng
    from robustbench_cli.core.errors import UserError
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.targets.base import Oracle

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data))
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    th = ThreatModel.parse("linf:0.1")

    def square(idx, **kw):
        o = Oracle(t, len(idx))
        adv = create("square", max_queries=300, **kw).run(o, x[idx], Goal(y[idx], False), th,
                                                          SampleRng(0, "sq", data.ids[idx]))
        margin = t.scores(th.project(adv, x[idx], t.bounds))
        return margin.argmax(1) != y[idx], o.used.clone(), adv

    every = np.arange(len(x))
    b0, q0, _ = square(every)
    b1, q1, adv1 = square(every, triage_after=60, triage_ratio=0.5)
    stopped = (q1 == 60) & ~b1
    assert 0 < int(stopped.sum()) < len(x)  # the rule bites, and not on every row
    going = ~stopped
    assert torch.equal(b1[going], b0[going]) and torch.equal(q1[going], q0[going])
    assert bool((b0 | ~b1).all())  # triage never adds a break, it only may lose late ones
    late = b0 & stopped
    assert int(late.sum()) <= int(b0.sum())
    # the same rows, in another batch: the same fate
    half = every[::2]
    bh, qh, _ = square(half, triage_after=60, triage_ratio=0.5)
    assert torch.equal(bh, b1[::2]) and torch.equal(qh, q1[::2])
    cfg = create("square", triage_after=60, triage_ratio=0.5).config()
    assert cfg["triage_after"] == 60 and cfg["triage_ratio"] == 0.5 and "triage_after" not in create("square").config()
    for bad in ({"triage_after": 0}, {"triage_after": 300}, {"triage_after": 10, "triage_ratio": 1.0},
                {"triage_after": 10, "loss": "ce"}):
        with pytest.raises(UserError):
            create("square", max_queries=300, **bad)


def test_the_undecided_entry_spends_only_what_the_certificates_spared():
    """standard's square-undecided runs on the samples neither broken nor certified, when there are certificates and
    its work (undecided x restarts) is at most the certified count; otherwise it is skipped with the reason."""
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data))
    extra = Entry("square-undecided", "square", {"max_queries": 100, "restarts": 3}, undecided=True)

    def run(eps, certify):
        bat = Battery("t", 1, [Entry("pgd", "pgd", {"steps": 5}), extra], certify=True)
        res = evaluate(t, data, [ThreatModel.parse(f"linf:{eps}")], bat, certify=certify).results[0]
        return res, res.attacks[1]

    res, a = run(0.09, False)
    assert a.skipped == "runs only where certificates ran, on the samples they leave undecided"
    res, a = run(0.09, True)  # most of what PGD leaves is certified (98 of 107): the rest is searched again
    undecided = a.attempted_mask
    assert a.skipped is None and a.attempted > 0
    assert not (undecided & res.certified).any() and a.attempted * 3 <= int(res.certified.sum())
    res, a = run(0.11, True)  # 50 certified, 33 undecided: more undecided work than they spared
    assert a.skipped and "more work than the certificates spared" in a.skipped and a.attempted == 0


def test_best_margin_is_measured_by_the_harness_on_the_verified_candidates(temporary_attack):
    """ThreatResult.best_margin is the margin (best other class minus the true class) of the candidates the
    harness verified, on the model's own scores: for a 'attack' that returns the clean images it is the clean margin
    exactly; after a real attack it is positive where the sample broke and negative where it held."""
    from robustbench_cli.attacks import Attack
    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate
    from robustbench_cli.targets.base import Capability

    @temporary_attack
    class Stay(Attack):
        name, family, requires = "test-stay", "baseline", Capability.SCORES

        def run(self, oracle, x, goal, threat, rng):
            return x.clone()

    torch.set_num_threads(1)
    data = _digits()
    net = _trained_mlp(data)
    t = _target(net)
    th = ThreatModel.parse("linf:0.1")
    res = evaluate(t, data, [th], Battery("t", 1, [Entry("stay", "test-stay")])).results[0]
    with torch.no_grad():
        z = net(torch.as_tensor(data.x)).double()
    y = torch.as_tensor(data.y)
    own = z.gather(1, y[:, None]).squeeze(1)
    clean_margin = (z.scatter(1, y[:, None], float("-inf")).amax(1) - own).numpy()
    tried = res.attacks[0].attempted_mask
    assert tried.sum() > 100 and np.isneginf(res.best_margin[~tried]).all()
    np.testing.assert_allclose(res.best_margin[tried], clean_margin[tried], rtol=1e-5, atol=1e-5)
    assert (res.best_margin[tried] < 0).all()
    res = evaluate(t, data, [th], Battery("t", 1, [Entry("pgd", "pgd", {"steps": 10})])).results[0]
    tried = res.attacks[0].attempted_mask
    broken = tried & ~res.robust
    assert broken.any() and res.robust.any()
    assert (res.best_margin[broken] > 0).all() and (res.best_margin[res.robust] < 0).all()
    # PGD climbs the loss: on the samples that held, it came closer than the clean image was
    held = res.robust
    assert np.mean(res.best_margin[held] > clean_margin[held]) > 0.9


def test_a_closest_entry_runs_on_the_undecided_samples_nearest_to_breaking():
    """An entry with ``closest=s`` runs on ceil(s x undecided) samples, those with the highest best_margin after the
    entries before it (ties to the earlier sample); it only adds breaks, and its share shows in the battery config."""
    import math

    from robustbench_cli.core.threat_model import ThreatModel
    from robustbench_cli.evaluation import Battery, Entry, evaluate

    torch.set_num_threads(1)
    data = _digits()
    t = _target(_trained_mlp(data))
    th = ThreatModel.parse("linf:0.1")
    first = Entry("pgd", "pgd", {"steps": 5})
    before = evaluate(t, data, [th], Battery("t", 1, [first])).results[0]
    extra = Entry("apgd-ce-closest", "apgd-ce", {"steps": 20, "restarts": 3}, closest=0.1)
    bat = Battery("t", 1, [first, extra])
    after = evaluate(t, data, [th], bat).results[0]
    undecided = np.flatnonzero(before.robust)
    k = math.ceil(0.1 * len(undecided))
    nearest = undecided[np.argsort(-before.best_margin[undecided], kind="stable")[:k]]
    a = after.attacks[1]
    assert a.attempted == k and set(np.flatnonzero(a.attempted_mask)) == set(nearest.tolist())
    rest = np.setdiff1d(undecided, nearest)
    assert before.best_margin[nearest].min() >= before.best_margin[rest].max()
    assert not (after.robust & ~before.robust).any()  # only adds breaks
    assert bat.config()["attacks"][1]["closest"] == 0.1 and "closest" not in bat.config()["attacks"][0]
    with pytest.raises(ValueError, match="closest"):
        Entry("x", "pgd", closest=1.5)


def test_standard_ends_with_longer_searches_on_the_closest_samples():
    """standard@5: AutoAttack's whole APGD-T twice on the closest 3%, APGD-T with 1,000 steps on the closest 1%, then
    APGD-CE x10 on the closest 3% of the undecided samples, after every other attack of the cascade."""
    from robustbench_cli.evaluation import get_battery

    bat = get_battery("standard")
    assert bat.id == "standard@5"
    cascade = [e for e in bat.entries if not e.independent and e.when is None]
    assert [(e.label, e.closest) for e in cascade[-3:]] == [
        ("apgd-t-closest", 0.03), ("apgd-t-long", 0.01), ("apgd-ce-closest", 0.03)]
    assert cascade[-3].params == {"steps": 100, "targets": 9, "restarts": 2}
    assert cascade[-2].params == {"steps": 1000, "targets": 2}
    assert cascade[-1].params["restarts"] == 10
    assert all(e.closest == 0 for e in cascade[:-3])


@settings(max_examples=40, deadline=None)
@given(cin=st.integers(1, 3), c0=st.integers(1, 4), c1=st.integers(1, 4), h=st.integers(6, 13), w=st.integers(6, 13),
       k0=st.integers(1, 4), s0=st.integers(1, 2), p0=st.integers(0, 2), k1=st.integers(1, 4), s1=st.integers(1, 3),
       p1=st.integers(0, 2), bias=st.booleans(), eps=st.sampled_from([0.01, 0.1, 0.4]), seed=st.integers(0, 99))
def test_the_receptive_field_first_step_equals_the_dense_rows(cin, c0, c1, h, w, k0, s0, p0, k1, s1, p1, bias, eps,
                                                             seed):
    """CROWN's bounds of the second convolution's neurons, computed on each neuron's receptive field
    (_local_first_step), are the dense route's bounds: any kernel, stride, padding, channels and image size."""
    torch.manual_seed(seed)
    a0 = nn.Conv2d(cin, c0, k0, stride=s0, padding=min(p0, k0 - 1), bias=bias).double()
    h0, w0 = (h + 2 * a0.padding[0] - k0) // s0 + 1, (w + 2 * a0.padding[1] - k0) // s0 + 1
    if min(h0, w0) + 2 * min(p1, k1 - 1) < k1:
        return  # the second convolution would have no output
    a1 = nn.Conv2d(c0, c1, k1, stride=s1, padding=min(p1, k1 - 1), bias=not bias).double()
    h1, w1 = (h0 + 2 * a1.padding[0] - k1) // s1 + 1, (w0 + 2 * a1.padding[1] - k1) // s1 + 1
    layers = [a0, nn.ReLU(), a1, nn.ReLU(), nn.Flatten(), nn.Linear(c1 * h1 * w1, 3).double()]
    chain = B._Chain(layers, (cin, h, w))
    x = torch.rand(1, cin, h, w, dtype=torch.float64)
    box = B.input_box(x, eps)
    lo, hi = B._affine_interval(a0, *box)
    relax0 = B._relax(lo[0], hi[0])
    idx = torch.arange(c1 * h1 * w1)
    local = B._local_first_step(chain, idx, relax0, box)
    wr, b = chain.rows(1, idx)
    dense = B._backward_lower(chain, 1, torch.cat([wr, -wr]), torch.cat([b, -b]), [relax0], box)
    assert local is not None
    assert torch.allclose(local, dense, rtol=1e-10, atol=1e-10)
