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
    projected = threat.project(x, x0)
    p = threat.tighten(projected, x0)  # what the harness asks the model about
    assert bool(threat.contains(p, x0).all())  # exactly inside: float64 distance of the stored values <= epsilon
    assert torch.allclose(p, projected, atol=1e-6, rtol=0)  # tightening moves a rounding step, no more
    assert torch.equal(threat.tighten(p, x0), p)
    assert torch.allclose(threat.project(p, x0), p, atol=1e-6)
    # a point already inside is left alone
    inside = threat.project(x0 + 0.001 * torch.randn((4, 3, 5, 5), generator=g), x0)
    assert torch.allclose(threat.project(inside, x0), inside, atol=1e-6)


@pytest.mark.parametrize("threat", ["linf:0.15", "linf:8/255", "l2:1.0", "l2:0.3"])
def test_the_ball_is_exact_in_float32(threat):
    """x0 + eps rounded to float32 can sit 4e-8 outside the ball: contains refuses it, tighten brings it in."""
    t = ThreatModel.parse(threat)
    x0 = torch.rand((64, 3, 16, 16), generator=torch.Generator().manual_seed(0)) * 0.5 + 0.2
    direction = torch.sign(torch.randn_like(x0)) if t.norm.value == "linf" else torch.randn_like(x0)
    if t.norm.value == "l2":
        direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert bool(((x0 + t.epsilon * direction - 0.5).abs() < 0.5).all())  # inside the box: only the ball is tested
    x = x0 + t.epsilon * direction  # on the boundary, up to float32 rounding
    over = t.exact_distance(x, x0) > t.epsilon
    assert bool(over.any())  # rounding does put some rows outside, so the test has teeth
    assert not bool(t.contains(x, x0)[over].any())
    tight = t.tighten(x, x0)
    assert bool(t.contains(tight, x0).all())
    assert bool((t.exact_distance(tight, x0) > t.epsilon * (1 - 1e-5)).all())  # still on the boundary


def test_contains_rejects_outside_nan_and_box():
    threat = ThreatModel.parse("linf:0.1")
    x0 = torch.full((3, 4), 0.5)
    x = x0.clone()
    x[0, 0] = 0.7  # outside the ball
    x[1, 0] = float("nan")
    assert threat.contains(x, x0).tolist() == [False, False, True]
    assert not bool(threat.contains(torch.full((1, 4), 1.05), torch.full((1, 4), 0.98))[0])  # outside the box
