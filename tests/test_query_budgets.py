"""Query budgets are exact for every black-box attack: the per-sample ledger in the result is what the model was
really asked, nothing more and nothing less, and no sample ever spends more than ``--queries``.

The stub target counts every input row that reaches its model. With ``batch_size=1`` each batch holds one sample,
and the harness's progress callback fires after each batch, so the rows counted between two callbacks are
exactly the rows spent on that one sample: the ledger is checked per sample, not only in total.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from linear_truth import CountingTarget, linear_module, random_linear_problem

from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import PRESETS, Battery, Entry, evaluate
from robustbench_cli.reports.build import build_report
from robustbench_cli.targets.base import LabelOnly

N, D, K = 12, 16, 3
BUDGETS = [1, 2, 7, 50, 300]

# (attack, threat, label-only view, params): small gradient-estimation sample sizes so that a step fits in the small
# budgets and many steps in the large ones; finite differences cost 2*16+1 = 33 queries a step here.
CASES = [
    ("pgd-nes", "linf:0.08", False, {"samples": 2}),
    ("pgd-spsa", "linf:0.08", False, {"samples": 2}),
    ("pgd-fd", "linf:0.08", False, {}),
    ("square", "linf:0.08", False, {}),
    ("square", "l2:0.3", False, {}),
    ("hopskipjump", "linf:0.08", True, {}),
    ("hopskipjump", "l2:0.3", True, {}),
    ("noise", "linf:0.08", False, {}),
    ("noise", "l2:0.3", True, {}),
]
IDS = [f"{a}-{t.split(':')[0]}{'-labels' if lab else ''}" for a, t, lab, _ in CASES]


@pytest.fixture(scope="module")
def problem():
    W, b, data = random_linear_problem(N, D, K, seed=0)
    assert len(set(data.y.tolist())) == K  # every class present: HopSkipJump finds starts in the batch
    return W, b, data


def make_target(W, b, labels_only: bool):
    stub = CountingTarget(linear_module(W, b), K)
    return stub, (LabelOnly(stub) if labels_only else stub)


def run_tagged(target, stub, data, threat, battery, queries):
    """evaluate with one sample per batch; returns the result, per attack label the rows each sample cost, and the
    rows of the diagnostics' probes."""
    marks: list[tuple[str, int, int]] = []

    def progress(label, done, total):
        if total:
            marks.append((label.rsplit(" ", 1)[-1], done, stub.rows))

    ev = evaluate(target, data, [ThreatModel.parse(threat)], battery, batch_size=1, queries=queries, progress=progress)
    res = ev.results[0]
    per_attack: dict[str, np.ndarray] = {}
    prev = len(data) + ev.probes["model_rows"]  # the clean pass and the diagnostics' probes come first
    for outcome in res.attacks:
        if outcome.skipped:
            continue
        rows = np.zeros(len(data), dtype=np.int64)
        mine = [m for m in marks if m[0] == outcome.label]
        attempted = np.flatnonzero(outcome.attempted_mask)  # the harness attacks them in index order
        assert [m[1] for m in mine] == list(range(1, len(attempted) + 1))
        for i, (_, _, seen) in zip(attempted, mine):
            rows[i] = seen - prev
            prev = seen
        per_attack[outcome.label] = rows
    assert prev == stub.rows  # nothing was asked after the last batch
    return res, per_attack, ev.probes["model_rows"]  # the diagnostics' model calls, outside the ledger


@pytest.mark.parametrize("queries", BUDGETS)
@pytest.mark.parametrize("attack, threat, labels_only, params", CASES, ids=IDS)
def test_every_query_is_counted_once_and_budgets_hold_per_sample(problem, attack, threat, labels_only, params, queries):
    W, b, data = problem
    stub, target = make_target(W, b, labels_only)
    battery = Battery("t", 1, [Entry(attack, attack, params)])
    res, per_attack, probe_rows = run_tagged(target, stub, data, threat, battery, queries)
    outcome = res.attacks[0]
    assert outcome.skipped is None and outcome.attempted == N
    # the ledger per sample is exactly what the model received for that sample
    assert per_attack[attack].tolist() == res.queries.tolist()
    assert outcome.queries.tolist() == res.queries.tolist()
    # every sample is verified (at least one query) and none spends more than the budget
    assert res.queries.min() >= 1
    assert res.queries.max() <= queries
    assert int(res.queries.sum()) == stub.rows - N - probe_rows
    # the query an attack spends last on a broken sample is the one that broke it
    broken = ~res.robust
    assert (res.queries_at_break[broken] == res.queries[broken]).all()
    assert (res.queries_at_break[~broken] == 0).all()

    if attack == "square":  # one query per iteration until the budget is spent: unbroken samples use all of it
        assert (res.queries[res.robust] == queries).all(), res.queries.tolist()
    if attack == "noise":  # 20 draws (each one query) and the verification, or the budget, whichever is smaller
        assert (res.queries[res.robust] == min(queries, 21)).all(), res.queries.tolist()
    if queries == 1:  # the budget leaves nothing to the attack: only the harness's verification query
        assert (res.queries == 1).all()


@pytest.mark.parametrize("attack, threat, labels_only, params", CASES, ids=IDS)
def test_totals_match_the_model_and_the_report_in_large_batches(problem, attack, threat, labels_only, params):
    """With the whole set in one batch (HopSkipJump then starts from other samples): totals, per-sample cap, report."""
    W, b, data = problem
    battery = Battery("t", 1, [Entry(attack, attack, params)])
    for queries in BUDGETS:
        stub, target = make_target(W, b, labels_only)
        ev = evaluate(target, data, [ThreatModel.parse(threat)], battery, batch_size=64, queries=queries)
        res = ev.results[0]
        assert res.queries.max() <= queries and res.queries.min() >= 1
        assert int(res.queries.sum()) == stub.rows - N - ev.probes["model_rows"], queries
        report = build_report([ev], data=data.describe(), battery=battery.config(), seed=0, device="cpu").to_dict()
        samples = report["results"][0]["samples"]
        assert sum(samples["queries"]) == stub.rows - N - report["targets"][0]["probes"]["model_rows"]
        assert max(samples["queries"]) <= queries
        json.dumps(report, allow_nan=False)  # the report stays valid JSON


@pytest.mark.parametrize("labels_only", [False, True], ids=["scores", "labels"])
def test_cascade_budget_is_per_attack_and_the_ledger_adds_up(problem, labels_only):
    """The blackbox preset as a cascade plus the independent noise yardstick: each attack is held to the budget per
    sample (``--queries`` is per attack), and the sample's total is the sum over the attacks that ran."""
    W, b, data = problem
    queries = 60
    stub, target = make_target(W, b, labels_only)
    res, per_attack, probe_rows = run_tagged(target, stub, data, "linf:0.08", PRESETS["blackbox"], queries)
    ran = [a for a in res.attacks if not a.skipped]
    assert [a.label for a in ran] == (["hopskipjump", "noise"] if labels_only else ["square", "pgd-nes", "noise"])
    total = np.zeros(N, dtype=np.int64)
    for a in ran:
        assert a.queries.max() <= queries
        assert (a.queries[~a.attempted_mask] == 0).all() and (a.queries[a.attempted_mask] >= 1).all()
        assert a.queries.tolist() == per_attack[a.label].tolist()
        total += a.queries
    assert total.tolist() == res.queries.tolist()
    assert int(res.queries.sum()) == stub.rows - N - probe_rows


# --- through the CLI --------------------------------------------------------------------------------
FACTORY = """
import numpy as np
import torch

COUNT = [0]  # rows the model received, read back by the test


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear({d}, {k})
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor({w}))
            self.lin.bias.copy_(torch.tensor({b}))

    def forward(self, x):
        COUNT[0] += len(x)
        return self.lin(x.flatten(1))


def build(num_classes=None):
    return Linear()
"""


def _factory_module(path: Path):
    mods = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == str(path)]
    assert len(mods) == 1
    return mods[0]


@pytest.mark.parametrize("access, attack, threat", [("auto", "square", "linf:0.08"), ("labels", "hopskipjump", "l2:0.3")])
def test_cli_budget_and_ledger_match_the_model(tmp_path, run_cli, problem, access, attack, threat):
    W, b, data = problem
    path = tmp_path / f"stub_{access}.py"
    path.write_text(FACTORY.format(d=D, k=K, w=W.tolist(), b=b.tolist()))
    np.savez(tmp_path / "d.npz", x=data.x, y=data.y)
    out = tmp_path / "r.json"
    queries = 40
    # --no-fast-forward: the stub counts rows in its Python forward, which an onnxruntime export of it would not run
    res = run_cli("scan", f"{path}:build", "--data", tmp_path / "d.npz", "--threat", threat, "--attacks", attack,
                  "--queries", queries, "--num-classes", K, "--access", access, "--device", "cpu", "--batch-size", 5,
                  "--no-fast-forward", "-o", out)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    entry = report["results"][0]
    counted = _factory_module(path).COUNT[0]
    assert entry["attacks"][0]["skipped"] is None and entry["attacks"][0]["attempted"] == N
    assert max(entry["samples"]["queries"]) <= queries and min(entry["samples"]["queries"]) >= 1
    # everything but the clean pass and the diagnostics' probe is in the ledger
    assert sum(entry["samples"]["queries"]) == counted - N - report["targets"][0]["probes"]["model_rows"]
    assert report["targets"][0]["capabilities"] == (["labels"] if access == "labels" else ["labels", "scores", "gradients"])
