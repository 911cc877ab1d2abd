import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.threat_model import Norm, ThreatModel


@pytest.mark.parametrize("spec,norm,eps,text,targeted", [
    ("linf:8/255", Norm.LINF, 8 / 255, "8/255", False),
    ("l2:0.5", Norm.L2, 0.5, "0.5", False),
    ("linf:0.3:targeted", Norm.LINF, 0.3, "0.3", True),
    ("0.3", Norm.LINF, 0.3, "0.3", False),
    ("Linf: 2/255", Norm.LINF, 2 / 255, "2/255", False),
])
def test_parse(spec, norm, eps, text, targeted):
    t = ThreatModel.parse(spec)
    assert (t.norm, t.eps_text, t.targeted) == (norm, text, targeted)
    assert math.isclose(t.epsilon, eps)


@pytest.mark.parametrize("spec,words", [
    ("linf:0", "> 0"), ("linf:-1", "> 0"), ("linf:1.5", "whole"), ("l3:0.5", "unknown norm"),
    ("linf:abc", "not a number"), ("linf:1/0", "not a number"), ("linf:nan", "finite"), ("linf", "not a number"),
    ("linf:0.1:foo", "targeted"),
])
def test_parse_rejects(spec, words):
    with pytest.raises(UserError, match=words):
        ThreatModel.parse(spec)


def test_l2_larger_than_box_diagonal_is_refused():
    with pytest.raises(UserError, match="diagonal"):
        ThreatModel.parse("l2:30").check_against_dim(784)
    ThreatModel.parse("l2:3").check_against_dim(784)


@settings(max_examples=60, deadline=None)
@given(norm=st.sampled_from(["linf", "l2"]), eps=st.floats(0.01, 0.9), scale=st.floats(0.0, 5.0), seed=st.integers(0, 2**16))
def test_projection_lands_in_ball_and_box_and_is_idempotent(norm, eps, scale, seed):
    g = torch.Generator().manual_seed(seed)
    threat = ThreatModel.parse(f"{norm}:{eps}")
    x0 = torch.rand((4, 3, 5, 5), generator=g)
    x = x0 + scale * torch.randn((4, 3, 5, 5), generator=g)
    p = threat.project(x, x0)
    assert bool(threat.contains(p, x0).all())
    assert torch.allclose(threat.project(p, x0), p, atol=1e-6)
    # a point already inside is left alone
    inside = threat.project(x0 + 0.001 * torch.randn((4, 3, 5, 5), generator=g), x0)
    assert torch.allclose(threat.project(inside, x0), inside, atol=1e-6)


def test_contains_rejects_outside_nan_and_box():
    threat = ThreatModel.parse("linf:0.1")
    x0 = torch.full((3, 4), 0.5)
    x = x0.clone()
    x[0, 0] = 0.7  # outside the ball
    x[1, 0] = float("nan")
    assert threat.contains(x, x0).tolist() == [False, False, True]
    assert not bool(threat.contains(torch.full((1, 4), 1.05), torch.full((1, 4), 0.98))[0])  # outside the box
