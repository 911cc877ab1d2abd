"""APGD (Croce & Hein 2020): exact on linear models, at least as strong as PGD, budget-exact, batch-independent."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from linear_truth import exact_min_linf, linear_module, random_linear_problem
from torch import nn

from robustbench_cli.attacks import create
from robustbench_cli.attacks.apgd import checkpoints, dlr
from robustbench_cli.attacks.base import Goal
from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.threat_model import Norm, ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.targets.pytorch import TorchTarget

N, D, K = 200, 20, 4


def linf(eps: float) -> ThreatModel:
    return ThreatModel(Norm.LINF, float(eps), f"{eps:.5f}")


def one(attack: str, **params) -> Battery:
    return Battery(attack, 1, [Entry(attack, attack, params)])


def linear_problem(scale: float):
    W, b, data = random_linear_problem(N, D, K, seed=7, scale=scale)
    exact = exact_min_linf(W.astype(np.float64), b.astype(np.float64), data.x.astype(np.float64), data.y)
    return TorchTarget(linear_module(W, b), "linear", num_classes=K), data, exact


@pytest.fixture(scope="module")
def linear():
    return linear_problem(1.0)


@pytest.fixture(scope="module")
def mlp():
    """A small random ReLU net, labelled by its own predictions (nonlinear, clean accuracy 1, no training)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    x = torch.rand(80, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net[-1].weight.mul_(10.0)
        net[-1].bias.sub_(net(x).mean(dim=0))  # centre the logits: every class gets samples
        y = net(x).argmax(dim=1)
    data = EvalSet(x=x.numpy(), y=y.numpy().astype(np.int64), ids=np.arange(80), name="random-mlp")
    return TorchTarget(net, "mlp", num_classes=5), data


def reference_checkpoints(steps: int) -> list[int]:
    """The paper's formula, in exact rational arithmetic."""
    p = [Fraction(0), Fraction(22, 100)]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))
        if nxt > 1:
            break
        p.append(nxt)
    return sorted({math.ceil(q * steps) for q in p})


def test_checkpoints_follow_the_paper():
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    for steps in (1, 5, 10, 37, 100, 250, 1000):
        assert checkpoints(steps) == reference_checkpoints(steps)


def test_dlr_loss_values_and_fallback():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    # untargeted, y = 1: -(1 - 3) / (3 - 0)
    assert torch.allclose(dlr(z, Goal(torch.tensor([1]), False)), torch.tensor([2.0 / 3.0]))
    # targeted, t = 2: the best non-target score (3) stands in for z_y: -(3 - 0) / (3 - (0 - 1) / 2)
    assert torch.allclose(dlr(z, Goal(torch.tensor([2]), True)), torch.tensor([-3.0 / 3.5]))
    # two classes: the margin loss
    assert torch.allclose(dlr(z[:, :2], Goal(torch.tensor([0]), False)), torch.tensor([-2.0]))


# Cross-entropy is not exact on a multiclass linear model with soft logits: its gradient mixes every wrong class
# (at scale 1 both APGD-CE and PGD-CE stay 2.5 points above the truth, whatever the steps); with sharper logits
# (scale 5) it follows the nearest wrong class. DLR is scale-invariant and exact at either scale.
@pytest.mark.parametrize("attack, scale", [("apgd-ce", 5.0), ("apgd-dlr", 1.0), ("apgd-dlr", 5.0), ("apgd-t", 1.0),
                                           ("apgd-t", 5.0)])
def test_matches_exact_robust_accuracy_on_a_linear_model(attack, scale):
    target, data, exact = linear_problem(scale)
    threats = [linf(q) for q in np.quantile(exact[np.isfinite(exact)], [0.3, 0.6])]
    ev = evaluate(target, data, threats, one(attack), seed=0)
    for threat, res in zip(threats, ev.results):
        truth = float((exact > threat.epsilon).mean())
        assert res.robust_accuracy >= truth - 1e-9
        assert res.robust_accuracy - truth <= 2.0 / N + 1e-12, (attack, threat.name, res.robust_accuracy, truth)
        broken = ~res.robust
        assert np.all(res.distance[broken] >= exact[broken] - 1e-5)


@pytest.mark.parametrize("norm, eps", [(Norm.LINF, 0.03), (Norm.L2, 0.1)])
def test_at_least_as_strong_as_pgd_on_a_small_net(mlp, norm, eps):
    target, data = mlp
    threat = ThreatModel(norm, eps, f"{norm.value}:{eps}")
    steps = 30
    pgd = evaluate(target, data, [threat], one("pgd", steps=steps), seed=0).results[0]
    for attack in ("apgd-ce", "apgd-dlr", "apgd-t"):
        ap = evaluate(target, data, [threat], one(attack, steps=steps), seed=0).results[0]
        assert ap.robust_accuracy <= pgd.robust_accuracy + 1.0 / len(data), (attack, ap.robust_accuracy, pgd.robust_accuracy)
    assert 0.0 < pgd.robust_accuracy < pgd.clean_accuracy  # the setting discriminates between attacks


def test_step_size_is_halved_at_checkpoints(mlp, monkeypatch):
    """Record the per-sample step sizes of each step: they change only at checkpoints, and only by halving."""
    import robustbench_cli.attacks.apgd as apgd
    from robustbench_cli.attacks.rng import SampleRng
    from robustbench_cli.targets.base import Oracle

    target, data = mlp
    trace = []  # trace[i]: the step sizes of step i + 1 (the only floating-point tensor _bcast sees)
    real = apgd._bcast

    def spy(m, x):
        if m.dtype.is_floating_point:
            trace.append(m.clone())
        return real(m, x)

    monkeypatch.setattr(apgd, "_bcast", spy)
    threat, n, steps = linf(0.05), 40, 50
    x0, y = torch.as_tensor(data.x[:n]), torch.as_tensor(data.y[:n])
    create("apgd-ce", steps=steps).run(Oracle(target, n), x0, Goal(y, False), threat, SampleRng(0, "t", range(n)))
    assert len(trace) == steps  # some samples survive every step
    assert torch.allclose(trace[0], torch.full_like(trace[0], 2 * threat.epsilon))
    marks = set(checkpoints(steps))
    compared = 0
    for i in range(1, len(trace)):
        prev, cur = trace[i - 1], trace[i]
        if len(prev) != len(cur):  # broken samples left the batch
            continue
        ratio = cur / prev
        assert torch.all((ratio == 1) | (ratio == 0.5)), i
        if i not in marks:
            assert torch.all(ratio == 1), i
        compared += 1
    assert compared > steps // 2
    assert (trace[-1] < 2 * threat.epsilon).any()  # some sample did halve


def test_budget_is_exact_and_results_do_not_depend_on_batch_size(mlp):
    target, data = mlp
    data = EvalSet(x=data.x[:40], y=data.y[:40], ids=data.ids[:40], name="clusters-40")
    threat = linf(0.03)
    for attack in ("apgd-ce", "apgd-dlr", "apgd-t"):
        q = 17
        runs = [evaluate(target, data, [threat], one(attack, steps=40), seed=2, batch_size=bs, queries=q).results[0]
                for bs in (5, 64)]
        for r in runs:
            assert r.queries.max() <= q
            assert (r.queries[r.clean_correct] > 0).all()
        assert runs[0].robust.tolist() == runs[1].robust.tolist()
        assert runs[0].adv_pred.tolist() == runs[1].adv_pred.tolist()
        assert runs[0].queries.tolist() == runs[1].queries.tolist()
        full = evaluate(target, data, [threat], one(attack, steps=40), seed=2).results[0]
        # steps + 1 evaluations (per target class for apgd-t, after one ranking query), plus the harness's check
        most = 40 + 1 + 1 if attack != "apgd-t" else 1 + 4 * (40 + 1) + 1
        assert full.queries.max() <= most
        if attack == "apgd-t":
            assert full.queries.max() > 40 + 2  # unbroken samples went on to the next target classes


def test_targeted_dlr_reaches_the_target_on_a_linear_model(linear):
    target, data, exact = linear
    threat = linf(float(np.quantile(exact, 0.9)) * 2)
    res = evaluate(target, data, [threat], one("apgd-dlr"), targeted="random").results[0]
    assert (res.goal != res.labels).all()
    broken = ~res.robust & res.clean_correct
    assert broken.mean() > 0.5
    assert (res.adv_pred[broken] == res.goal[broken]).all()


def test_apgd_t_pursues_the_most_likely_wrong_classes_in_order(mlp, monkeypatch):
    """Each pass of APGD-T targets the next most likely wrong class at the clean point; success stays untargeted."""
    from robustbench_cli.targets.base import Oracle

    target, data = mlp
    n = 20
    x0, y = torch.as_tensor(data.x[:n]), torch.as_tensor(data.y[:n])
    attack = create("apgd-t", steps=5, targets=3)
    threat = ThreatModel.parse("linf:0.1")
    passes = attack._passes(Oracle(target, n), x0, Goal(y, False), threat, None)
    z = target.scores(x0)
    ranked = z.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
    assert len(passes) == 3 and all(p.targeted for p in passes)
    for j, p in enumerate(passes):
        assert p.labels.tolist() == ranked[:, j].tolist()
        assert not (p.labels == y).any()
    # with a targeted goal there is one pass per restart, on the goal itself
    goal_t = Goal((y + 1) % 5, True)
    (only,) = attack._passes(Oracle(target, n), x0, goal_t, threat, None)
    assert only is goal_t


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_t_linearised_order_is_the_exact_distance_order_on_a_linear_model(norm):
    """order="linearised": the candidates (the likeliest wrong classes by logit) are attacked nearest first by
    (z_y - z_t) / ||w_t - w_y||_*, which on a linear model is the exact distance to class t's boundary (box aside);
    only the nearest ``targets`` are attacked, and a sample's ranking costs one gradient per candidate."""
    from torch import nn

    from robustbench_cli.targets.base import Oracle
    from robustbench_cli.targets.pytorch import TorchTarget

    torch.manual_seed(0)
    n, d, k = 64, 30, 8
    lin = nn.Linear(d, k)
    with torch.no_grad():  # rows of very different norms: the logit order and the distance order disagree
        lin.weight.mul_(torch.logspace(-1, 1, k)[:, None])
    target = TorchTarget(lin, "linear", num_classes=k)
    x0 = torch.rand(n, d)
    y = lin(x0).argmax(1).detach()
    threat = ThreatModel.parse(f"{norm}:0.1")
    oracle = Oracle(target, n)
    attack = create("apgd-t", steps=5, targets=3, candidates=6, order="linearised")
    passes = attack._passes(oracle, x0, Goal(y, False), threat, None)
    assert len(passes) == 3
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    z = x0.double() @ w.T + b
    by_logit = z.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)[:, :6]
    dual = 1 if norm == "linf" else 2
    dist = torch.stack([(z.gather(1, y[:, None])[:, 0] - z[torch.arange(n), by_logit[:, j]])
                        / (w[by_logit[:, j]] - w[y]).norm(p=dual, dim=1) for j in range(6)], 1)
    want = by_logit.gather(1, dist.argsort(1))[:, :3]
    got = torch.stack([p.labels for p in passes], 1)
    assert torch.equal(got, want)
    assert not torch.equal(want, by_logit[:, :3])  # the two orders differ here, so the test tells them apart
    assert oracle.used.tolist() == [1 + 6] * n  # the clean scores, then one gradient per candidate
    with pytest.raises(UserError, match="candidates"):
        create("apgd-t", targets=3, candidates=2)
    with pytest.raises(UserError, match="order"):
        create("apgd-t", order="random")
