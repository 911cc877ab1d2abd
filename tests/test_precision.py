"""--precision bf16/fp16 and --threads. Reduced precision: the attacks' passes run under autocast, but a success never
rests on reduced precision: every candidate is verified in float32 on the model as it is, and the report counts the candidates that broke only
in reduced precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import robustbench_cli as robust
from robustbench_cli.core.errors import UserError
from robustbench_cli.evaluation.config import RunSpec


def _rounding_net() -> nn.Module:
    """Class 1 wins by 0.1 at logits near 100: float32 sees it, bfloat16 (8-bit mantissa) rounds both to 100 and
    the argmax falls to class 0, so in reduced precision every input already looks misclassified."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.tensor([100.0, 100.1]))
    return net.eval()


def test_breaks_seen_only_in_reduced_precision_are_counted_never_credited():
    x = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)
    y = np.ones(12, dtype=np.int64)
    net = _rounding_net()
    fp32 = robust.scan(net, (x, y), threats=["linf:0.1"], preset="quick")
    bf16 = robust.scan(net, (x, y), threats=["linf:0.1"], preset="quick", precision="bf16")
    a, b = fp32.results[0], bf16.results[0]
    assert a.clean_accuracy == b.clean_accuracy == 1.0  # the clean pass is the model's own float32 answer
    assert a.robust_accuracy == b.robust_accuracy == 1.0  # nothing credited from the rounded view
    assert a.precision is None
    assert b.precision == {"mode": "bfloat16", "low_precision_only": b.precision["low_precision_only"]}
    assert b.precision["low_precision_only"] >= 12  # every sample's candidates "broke" in bfloat16 only


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_attacks_still_break_a_model_that_breaks(precision):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = np.random.default_rng(1).random((16, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        y = net(torch.as_tensor(x)).argmax(1).numpy()
    full = robust.scan(net, (x, y), threats=["linf:0.3"], preset="quick")
    low = robust.scan(net, (x, y), threats=["linf:0.3"], preset="quick", precision=precision)
    assert low.results[0].robust_accuracy <= full.results[0].robust_accuracy + 0.25
    assert low.results[0].broken > 0
    r = low.results[0]
    assert r.precision["mode"] == {"bf16": "bfloat16", "fp16": "float16"}[precision]


def test_an_unknown_precision_is_one_clear_error():
    with pytest.raises(UserError, match="--precision must be fp32, bf16 or fp16"):
        RunSpec(threats=("linf:0.1",), precision="int8")


def test_threads_are_set_and_recorded_with_the_times():
    before = torch.get_num_threads()
    try:
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
        x = np.random.default_rng(2).random((6, 1, 8, 8), dtype=np.float32)
        report = robust.scan(net, (x, np.zeros(6, dtype=np.int64)), threats=["linf:0.1"], attacks=["fgsm"], threads=1)
        assert report.provenance["threads"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UserError, match="--threads must be in 1..1024"):
        RunSpec(threats=("linf:0.1",), threads=0)
