"""Transfer attacks (MI-FGSM, DI-FGSM, MI-DI-FGSM on surrogates): the transfer upper bound, exact query accounting,
per-sample randomness, the battery entries and the transfer matrix in the report, and the CLI's one-line errors.

Models: the embedded MNIST CNN (a white box from its state dict, and its ONNX export as a black box) on 64 held-out
digits of the built-in sample; no shared data needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robustbench_cli import zoo
from robustbench_cli.attacks import Goal, create
from robustbench_cli.attacks.gradients import Autograd
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.attacks.transfer import InputDiversity, load_surrogate, split_spec
from robustbench_cli.core.data import load_eval_set
from robustbench_cli.core.errors import TargetError, UserError
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate, get_battery, with_transfer
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.targets.base import Capability, Oracle, Target

torch.set_num_threads(1)
SURROGATE = f"{zoo.SPEC}@{zoo.WEIGHTS}"
THREAT = ThreatModel.parse("linf:0.1")


@pytest.fixture(scope="module")
def data():
    return load_eval_set("mnist:test", n=64)


@pytest.fixture(scope="module")
def white():
    return load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), device="cpu"))


@pytest.fixture(scope="module")
def surrogate():
    return load_surrogate(SURROGATE, device="cpu")


class CountingBlackBox(Target):
    """The embedded CNN as a score-only black box that counts every input row its model receives."""

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


def _one(entry: Entry) -> Battery:
    return Battery("t", 1, [entry])


# --- the transfer upper bound ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("attack", ["mi-fgsm", "mi-di-fgsm"])
def test_identical_surrogate_gives_the_white_box_success(white, surrogate, data, attack):
    """With the target itself as surrogate, transfer is the white-box attack: the same algorithm (PGD's loop, no
    random start, no early exit, momentum 1.0 for MI) on the target's own gradient breaks exactly the same samples."""
    transfer = evaluate(white, data, [THREAT], _one(Entry("x", attack, {"surrogates": [surrogate]}, independent=True)))
    source = InputDiversity(Autograd(), copies=4) if "di" in attack else None
    params = {"steps": 10, "step_size": 0.1, "random_start": False, "momentum": 1.0, "early_stop": False}
    wb = evaluate(white, data, [THREAT], _one(Entry("x", "pgd", {**params, **({"source": source} if source else {})})))
    rt, rw = transfer.results[0], wb.results[0]
    assert rt.attacks[0].attempted == rw.attacks[0].attempted == int(rt.clean_correct.sum()) > 50
    assert 0 < rt.attacks[0].broken < rt.attacks[0].attempted  # neither trivial nor hopeless at 0.1
    assert np.array_equal(rt.robust, rw.robust)
    assert np.array_equal(rt.adv_pred, rw.adv_pred)
    assert np.allclose(rt.distance, rw.distance, equal_nan=True)
    # the white-box attack spends a gradient query per step on the target; the transfer attack only the verification
    copies = 4 if "di" in attack else 1  # the white-box source pays for every draw of the transform
    assert rw.queries.max() == 1 + 10 * copies and set(rt.queries[rt.clean_correct].tolist()) == {1}


# --- query accounting --------------------------------------------------------------------------------------------------
def test_transfer_costs_exactly_one_query_per_verified_candidate(surrogate, data):
    """The surrogate is never the target: the model answers the clean pass, the probes and one row per attacked
    sample (the harness's verification), and the ledger says so per sample."""
    target = CountingBlackBox()
    battery = with_transfer(get_battery("default", ["mi-di-fgsm"]), [surrogate])
    ev = evaluate(target, data, [THREAT], battery)
    r = ev.results[0]
    (a,) = r.attacks
    assert a.attempted == int(r.clean_correct.sum())
    assert target.rows == len(data) + ev.probes["model_rows"] + a.attempted
    assert a.queries[r.clean_correct].tolist() == [1] * a.attempted and a.queries[~r.clean_correct].sum() == 0
    assert r.queries_at_break[~r.robust & r.clean_correct].tolist() == [1] * a.broken
    # a budget of one query a sample is enough, and changes nothing
    again = evaluate(CountingBlackBox(), data, [THREAT], battery, queries=1).results[0]
    assert np.array_equal(again.robust, r.robust) and again.queries.max() == 1


def test_attack_never_calls_the_target(surrogate, data):
    x, y = torch.as_tensor(data.x[:8]), torch.as_tensor(data.y[:8])
    for name in ("mi-fgsm", "di-fgsm", "mi-di-fgsm"):
        target = CountingBlackBox()
        oracle = Oracle(target, 8)
        cand = create(name, surrogates=[surrogate]).run(oracle, x, Goal(y, False), THREAT, SampleRng(0, "t", range(8)))
        assert target.rows == 0 and int(oracle.used.sum()) == 0
        assert float((cand - x).abs().max()) <= THREAT.epsilon + 1e-6 and cand.min() >= 0 and cand.max() <= 1


def test_results_do_not_depend_on_the_batch_size(surrogate, data):
    """Input diversity draws per sample, from the sample's own stream."""
    battery = _one(Entry("x", "mi-di-fgsm", {"surrogates": [surrogate]}, independent=True))
    a = evaluate(CountingBlackBox(), data, [THREAT], battery, batch_size=64).results[0]
    b = evaluate(CountingBlackBox(), data, [THREAT], battery, batch_size=7).results[0]
    assert np.array_equal(a.robust, b.robust) and np.array_equal(a.adv_pred, b.adv_pred)


def test_input_diversity_shrinks_and_pads():
    src = InputDiversity(Autograd(), prob=1.0, resize=0.9)
    x = torch.ones(16, 1, 28, 28)
    out = src.transform(x, SampleRng(0, "di", range(16)), range(16))
    for img in out[:, 0]:
        rows, cols = (img > 0.5).any(dim=1), (img > 0.5).any(dim=0)
        h, w = int(rows.sum()), int(cols.sum())
        assert 26 <= w <= 27 and h == w  # sizes ceil(0.9 * 28) .. 27, square like the input
        assert float(img.sum()) == h * w  # one box of ones, zero padding around it
    same = InputDiversity(Autograd(), prob=0.0).transform(x, SampleRng(0, "di", range(16)), range(16))
    assert torch.equal(same, x)


# --- battery and report ------------------------------------------------------------------------------------------------
def test_surrogates_make_one_entry_each_plus_the_ensemble_up_front(surrogate):
    other = load_surrogate(f"{zoo.SPEC}@{zoo.WEIGHTS}", device="cpu")
    other.details["surrogate"] = "copy"
    b = with_transfer(get_battery("quick"), [surrogate, other])
    labels = [e.label for e in b.entries]
    assert labels[:3] == ["mi-di-fgsm:mnist_cnn", "mi-di-fgsm:mnist_cnn-2", "mi-di-fgsm:ensemble"]
    assert labels[3:] == [e.label for e in get_battery("quick").entries]
    assert all(e.independent for e in b.entries[:3])
    cfg = b.config()["attacks"][2]
    assert cfg["surrogates"] == ["mnist_cnn", "copy"] and len(cfg["surrogate_sha256"]) == 2
    named = with_transfer(get_battery("quick", ["fgsm", "mi-fgsm", "di-fgsm"]), [surrogate])
    assert [e.label for e in named.entries] == ["mi-fgsm:mnist_cnn", "di-fgsm:mnist_cnn", "fgsm"]
    with pytest.raises(UserError, match="--surrogate"):
        with_transfer(get_battery("quick", ["mi-fgsm"]), [])


def test_transfer_matrix_in_the_report(tmp_path, run_cli):
    """Two targets, two surrogates: each transfer row attacked every clean-correct sample of each target; the JSON
    names the surrogates (schema-valid), the Markdown and the console show the matrix."""
    out = tmp_path / "r.json"
    res = run_cli("scan", zoo.SPEC, str(zoo.ONNX), "--weights", str(zoo.WEIGHTS), "--data", "mnist:test", "--n", "24",
                  "--eps", "0.1", "--attacks", "mi-fgsm,noise", "--surrogate", SURROGATE, "--surrogate",
                  f"{zoo.SPEC}@{zoo.WEIGHTS}", "--device", "cpu", "-o", str(out), "-o", str(tmp_path / "r.md"))
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    for r in rep["results"]:
        transfer = [a for a in r["attacks"] if a["family"] == "transfer"]
        assert [a["label"] for a in transfer] == ["mi-fgsm:mnist_cnn", "mi-fgsm:mnist_cnn-2", "mi-fgsm:ensemble"]
        correct = sum(a == b for a, b, e in zip(r["samples"]["label"], r["samples"]["clean_pred"], r["samples"]["eligible"]) if e)
        assert all(a["attempted"] == correct and a["independent"] for a in transfer)
        assert transfer[2]["surrogates"] == ["mnist_cnn", "mnist_cnn"]
    md = (tmp_path / "r.md").read_text()
    assert "## Transfer matrix" in md and "ensemble: mnist\\_cnn + mnist\\_cnn" in md  # names escaped for Markdown
    assert "transfer: success rate" in res.output
    jsonschema = pytest.importorskip("jsonschema")
    from robustbench_cli.reports.model import report_schema

    jsonschema.validate(rep, report_schema())


# --- errors: one line, exit 2 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--attacks", "mi-fgsm"], "need a surrogate model"),
    (["--surrogate", str(zoo.ONNX)], "a surrogate needs gradients"),
    (["--surrogate", f"{zoo.SPEC}@"], "SPEC@WEIGHTS"),
    (["--surrogate", f"{zoo.SPEC}@/nonexistent/w.pt"], "not found"),
])
def test_cli_errors(run_cli, tmp_path, args, message):
    base = ["scan", str(zoo.ONNX), "--data", "mnist:test", "--n", "8", "--eps", "0.1", "-o", str(tmp_path / "r.json")]
    res = run_cli(*base, *args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and message in " ".join(lines), res.output
    assert "Traceback" not in res.output


def test_surrogate_must_fit_the_data_and_the_classes(run_cli, tmp_path):
    """A target that takes 8x8 digits, with the 28x28 MNIST CNN as surrogate; then a surrogate with other classes."""
    net = tmp_path / "net.py"
    net.write_text("from torch import nn\n\ndef digits(num_classes=10):\n"
                   "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n\ndef digits12():\n"
                   "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12))\n")
    base = ["scan", f"{net}:digits", "--data", "digits", "--n", "8", "--eps", "0.1", "-o", str(tmp_path / "r.json")]
    res = run_cli(*base, "--surrogate", SURROGATE)
    assert res.exit_code == 2 and "mnist_cnn" in res.output and "shape" in res.output, res.output
    res = run_cli(*base, "--surrogate", f"{net}:digits12")
    assert res.exit_code == 2 and "12 classes" in res.output and "same classes" in res.output, res.output


def test_input_diversity_needs_images(surrogate):
    from robustbench_cli.core.errors import DataError

    with pytest.raises(DataError, match="use mi-fgsm"):
        create("di-fgsm", surrogates=[surrogate]).check_shape((784,))
    create("mi-fgsm", surrogates=[surrogate]).check_shape((784,))
    create("mi-di-fgsm", surrogates=[surrogate]).check_shape((1, 28, 28))


def test_split_spec():
    assert split_spec("net.py:Net@w.pt") == ("net.py:Net", "w.pt")
    assert split_spec("timm:resnet18") == ("timm:resnet18", None)
    with pytest.raises(TargetError):
        split_spec("@w.pt")
