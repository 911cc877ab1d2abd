"""Substitute training (Papernot et al. 2017): every target query is counted, exactly, with and without Jacobian
augmentation and under a budget; the augmentation step is the paper's; the CLI writes a usable surrogate.

The target is the embedded MNIST CNN as a black box that counts the rows its model receives.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import with_data_spec

from robustbench_cli import zoo
from robustbench_cli.targets.base import Capability, Target
from robustbench_cli.training import substitute as sub

torch.set_num_threads(1)
ARCH = "robustbench_cli.zoo:mnist_cnn"


class CountingBlackBox(Target):
    kind = "stub"
    capabilities = Capability.LABELS | Capability.SCORES

    def __init__(self):
        super().__init__("counting-cnn", batch_size=256)
        self.module = zoo.load()
        self.input_shape = (1, 28, 28)
        self.num_classes = 10
        self.rows = 0

    def _scores_batch(self, x):
        self.rows += len(x)
        with torch.no_grad():
            return self.module(x.float())


@pytest.fixture
def counting(monkeypatch):
    """Route the substitute's target loading to one counting black box."""
    box = CountingBlackBox()
    monkeypatch.setattr("robustbench_cli.training.substitute.load_target", lambda spec, opts=None: box)
    return box


def _cfg(tmp_path, **kw):
    base = {"target": "counting", "arch": ARCH, "out": str(tmp_path / "s.pt"), "n": 20, "epochs": 1, "batch_size": 16}
    return sub.SubstituteConfig(**with_data_spec({**base, **kw}, shuffle=True))


@pytest.mark.parametrize("rounds, budget, per_round", [
    (0, None, [20]),
    (2, None, [20, 20, 40]),  # each round labels the new half of a doubled set
    (2, 50, [20, 20, 10]),  # the budget's share of the second round's 40 new points
    (3, 40, [20, 20]),  # budget spent: augmentation stops there
])
def test_every_target_query_is_counted_exactly(tmp_path, counting, rounds, budget, per_round):
    _, card = sub.train_substitute(_cfg(tmp_path, rounds=rounds, queries=budget))
    assert card["queries_per_round"] == per_round
    assert card["queries"] == sum(per_round) == counting.rows  # the model saw exactly the rows the card counts
    assert card["probe_rows"] == 0
    assert card["history"][-1]["points"] == sum(per_round)
    if budget is not None:
        assert card["queries"] <= budget


def test_budget_below_the_initial_set_is_refused(tmp_path, counting):
    from robustbench_cli.core.errors import UserError

    with pytest.raises(UserError, match="--queries 10 cannot label the 20 initial samples"):
        sub.train_substitute(_cfg(tmp_path, queries=10))
    assert counting.rows == 0


def test_jacobian_step_moves_each_point_by_lambda_along_the_sign():
    net = zoo.load()
    x = torch.full((4, 1, 28, 28), 0.5)
    labels = torch.tensor([0, 1, 2, 3])
    new = sub.jacobian_step(net, x, labels, 0.1, (0.0, 1.0), 2)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xr).gather(1, labels[:, None]).sum(), xr)
    assert torch.allclose(new, (x + 0.1 * g.sign()).clamp(0, 1))


def test_training_is_deterministic(tmp_path, counting):
    m1, c1 = sub.train_substitute(_cfg(tmp_path, rounds=1))
    m2, c2 = sub.train_substitute(_cfg(tmp_path, rounds=1))
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1) and c1["history"] == c2["history"]


def test_cli_writes_a_surrogate_scan_can_use(tmp_path, run_cli):
    out = tmp_path / "sub.pt"
    res = run_cli("surrogate", "train", str(zoo.ONNX), "--arch", ARCH, "--n", "30", "--rounds", "1", "--epochs", "2",
                  "--queries", "50", "-o", str(out))
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "sub.pt.card.json").read_text())
    assert card["queries"] == 50 and card["queries_per_round"] == [30, 20] and card["budget"] == 50
    assert torch.load(out, weights_only=True).keys() == zoo.load().state_dict().keys()
    rep = tmp_path / "r.json"
    res = run_cli("scan", str(zoo.ONNX), "--data", "mnist:test", "--n", "8", "--eps", "0.2", "--attacks", "mi-fgsm",
                  "--surrogate", f"{ARCH}@{out}", "-o", str(rep))
    assert res.exit_code == 0, res.output
    (a,) = json.loads(rep.read_text())["results"][0]["attacks"]
    assert a["surrogates"] == ["sub"] and a["queries_mean"] == 1.0


@pytest.mark.parametrize("args, message", [
    (["--queries", "5"], "cannot label"),
    (["--rounds", "-1"], "--rounds must be >= 0"),
    (["--arch", str(zoo.ONNX)], "PyTorch architecture"),
])
def test_cli_errors(run_cli, tmp_path, args, message):
    base = ["surrogate", "train", str(zoo.ONNX), "--arch", ARCH, "-o", str(tmp_path / "s.pt")]
    res = run_cli(*base, *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
