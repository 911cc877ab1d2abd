"""The contract every registered attack keeps, checked for all of them at once so that a new attack is covered the
day it is registered:

- ``run`` returns one candidate per row, of the input's shape and dtype, finite, and leaves its input untouched;
- after the harness, every counted break is inside the epsilon ball (exactly, in float32), inside the [0,1] box and
  misclassified when the model is asked again here, outside the harness;
- the per-sample results are the same on a second run with the same seed, and with another batch size;
- a per-sample query budget holds for every sample, the verification query included.

A new attack that needs an artefact to run (a surrogate, a generator file) adds its parameters to ``_params``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_cli.attacks import REGISTRY, Goal, create
from robustbench_cli.attacks.generative import GeneratorNet, save_generator
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.targets.base import Oracle
from robustbench_cli.targets.pytorch import TorchTarget

N, SHAPE, K = 10, (1, 8, 8), 3
THREATS = ["linf:0.15", "l2:1.0"]
# HopSkipJump starts from other samples of its batch (documented): its results depend on the batch by design
BATCH_DEPENDENT = {"hopskipjump"}


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), K)).eval()


@pytest.fixture(scope="module")
def problem():
    model = _net(0)
    x = np.random.default_rng(0).uniform(0, 1, size=(N, *SHAPE)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    return model, EvalSet(x=x, y=y, ids=np.arange(N), name="contract")


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("gen") / "g.pt"
    return save_generator(path, GeneratorNet(channels=1, width=4, blocks=1),
                          {"architecture": {"channels": 1, "width": 4, "blocks": 1}})


def _params(name: str, generator_file) -> dict:
    """Small budgets so that every attack runs in a moment; artefacts for those that need one."""
    family = REGISTRY[name].family
    if family == "transfer":
        return {"surrogates": [TorchTarget(_net(2), "surrogate")], "steps": 3}
    if family == "generative":
        return {"generator": str(generator_file)}
    small = {"pgd": {"steps": 5}, "apgd-ce": {"steps": 5}, "apgd-dlr": {"steps": 5}, "apgd-t": {"steps": 5},
             "fmn": {"steps": 5}, "cw-l2": {"steps": 5, "search_steps": 2}, "lecture": {"steps": 5, "search_steps": 2},
             "pgd-nes": {"steps": 3, "samples": 4}, "pgd-spsa": {"steps": 3, "samples": 4}, "pgd-fd": {"steps": 2},
             "square": {"max_queries": 30}, "hopskipjump": {"max_queries": 60}}
    return small.get(name, {})


def _create(name: str, generator_file):
    params = _params(name, generator_file)
    try:
        return create(name, **params), params
    except Exception as e:  # a parameter name above that the attack does not take: the test, not the attack, is wrong
        pytest.fail(f"{name}: cannot create with {params}: {e}")


def _scan(model, data, name, params, threat, *, batch_size=N, queries=None, seed=0):
    battery = Battery("contract", 1, [Entry(name, name, params)])
    ev = evaluate(TorchTarget(model, "m"), data, [ThreatModel.parse(threat)], battery, seed=seed,
                  batch_size=batch_size, queries=queries, keep_adversarials=True)
    return ev.results[0]


NAMES = sorted(REGISTRY)


def test_every_registered_attack_is_covered():
    assert len(NAMES) >= 18  # the registry loaded: a broken import would shrink it silently


@pytest.mark.parametrize("threat", THREATS)
@pytest.mark.parametrize("name", NAMES)
def test_run_returns_one_finite_candidate_per_row_and_leaves_the_input(problem, generator_file, name, threat):
    model, data = problem
    attack, _ = _create(name, generator_file)
    tm = ThreatModel.parse(threat)
    if attack.unsupported_reason(TorchTarget(model, "m").capabilities, tm) is not None:
        pytest.skip(attack.unsupported_reason(TorchTarget(model, "m").capabilities, tm))
    x = torch.from_numpy(data.x.copy())
    before = x.clone()
    goal = Goal(torch.from_numpy(data.y), targeted=False)
    out = attack.run(Oracle(TorchTarget(model, "m", num_classes=K), N), x, goal, tm, SampleRng(0, name, data.ids))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert torch.equal(x, before), "the attack changed its input in place"


@pytest.mark.parametrize("threat", THREATS)
@pytest.mark.parametrize("name", NAMES)
def test_breaks_are_inside_the_ball_and_box_and_misclassified(problem, generator_file, name, threat):
    model, data = problem
    _, params = _create(name, generator_file)
    res = _scan(model, data, name, params, threat)
    outcome = res.attacks[0]
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    broken = np.flatnonzero(~res.robust & res.clean_correct)
    tm = ThreatModel.parse(threat)
    for i in broken:
        adv = res.adversarial[i]
        delta = adv.astype(np.float32) - data.x[i]
        size = np.abs(delta).max() if tm.norm.value == "linf" else np.sqrt((delta.astype(np.float64) ** 2).sum())
        assert size <= tm.epsilon, (name, i, size)
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        with torch.no_grad():
            assert int(model(torch.from_numpy(adv[None])).argmax(1)) != data.y[i]
    assert np.isnan(res.adversarial[res.robust]).all()


@pytest.mark.parametrize("name", NAMES)
def test_results_repeat_under_the_seed_and_do_not_depend_on_the_batch(problem, generator_file, name):
    model, data = problem
    _, params = _create(name, generator_file)
    threat = THREATS[0]
    first = _scan(model, data, name, params, threat)
    if first.attacks[0].skipped:
        pytest.skip(first.attacks[0].skipped)
    again = _scan(model, data, name, params, threat)
    assert np.array_equal(first.robust, again.robust)
    assert np.array_equal(first.queries, again.queries)
    np.testing.assert_array_equal(first.adversarial, again.adversarial)
    if name not in BATCH_DEPENDENT:
        small = _scan(model, data, name, params, threat, batch_size=3)
        assert np.array_equal(first.robust, small.robust), name
        assert np.array_equal(first.queries, small.queries), name


@pytest.mark.parametrize("name", NAMES)
def test_a_query_budget_holds_for_every_sample(problem, generator_file, name):
    model, data = problem
    _, params = _create(name, generator_file)
    for budget in (1, 4):
        res = _scan(model, data, name, params, THREATS[0], queries=budget)
        if res.attacks[0].skipped:
            continue  # gradient attacks refuse a query budget with a reason, recorded in the report
        assert res.queries.max() <= budget, (name, budget, res.queries.tolist())
        assert res.queries[res.clean_correct].min() >= 1  # the harness's verification is always counted


@pytest.mark.parametrize("eps", ["1/255", "0.024", "8/255", "0.3"])
def test_one_definition_of_inside_for_harness_distances_and_the_epsilon_curve(problem, eps):
    """Epsilons that float32 cannot hold: every break's recorded distance is at most epsilon as written, and the
    report's robust-accuracy-by-epsilon curve at the scan's epsilon is its robust accuracy."""
    from robustbench_cli.reports.build import epsilon_curve

    model, data = problem
    res = _scan(model, data, "pgd", {"steps": 10}, f"linf:{eps}")
    eps_value = ThreatModel.parse(f"linf:{eps}").epsilon
    broken = ~res.robust & res.clean_correct
    assert np.all(res.distance[broken] <= eps_value) and np.all(res.min_distance[broken] <= eps_value)
    delta = np.abs(res.adversarial[broken].astype(np.float64) - data.x[broken].astype(np.float64))
    assert delta.size == 0 or delta.max() <= eps_value
    curve = epsilon_curve(res)
    at = curve["robust_accuracy"][curve["epsilon"].index(round(eps_value, 6)) if round(eps_value, 6) in
                                  curve["epsilon"] else curve["epsilon"].index(eps_value)]
    assert at == pytest.approx(res.robust_accuracy, abs=1e-12)
