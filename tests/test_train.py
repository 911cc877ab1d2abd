"""`robust train`: every mode lowers its loss, the card is written, the same seed gives the same weights, the inner
attack is the project's PGD taking every step, training never sees held-out or excluded images, bad input is one
line with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import with_data_spec

from robustbench_cli.attacks.base import Goal
from robustbench_cli.attacks.pgd import PGD
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.targets.base import Oracle
from robustbench_cli.targets.pytorch import TorchTarget
from robustbench_cli.training import train as lib

torch.set_num_threads(1)

TINY = """
from torch import nn

def Net(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))

def Det():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    (d / "tiny.py").write_text(TINY)
    return d


def _cfg(tiny, mode="pgd", **kw) -> lib.TrainConfig:
    base = {"model": f"{tiny / 'tiny.py'}:Net", "out": str(tiny / f"{mode}.pt"), "data": "digits", "n": 256,
            "mode": mode, "threat": "linf:0.1", "steps": 3, "epochs": 4, "batch_size": 32, "lr": 1e-2,
            "check_steps": 5, "check_n": 64}
    base.update(kw)
    return lib.TrainConfig(**with_data_spec(base))


@pytest.mark.parametrize("mode", lib.MODES)
def test_each_mode_lowers_its_loss_and_writes_the_card(tiny, mode):
    cfg = _cfg(tiny, mode, holdout=64)
    res = lib.train(cfg)
    losses = [h.loss for h in res.history]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    ckpt, card_path = lib.save(res, cfg.out)
    card = json.loads(card_path.read_text())
    assert card_path.name == f"{mode}.pt.card.json"
    assert card["format"] == lib.CARD_FORMAT and card["mode"] == mode and card["objective"] == lib.OBJECTIVES[mode]
    assert card["data"]["train"]["n"] == 192 and card["data"]["holdout"]["n"] == 64
    assert len(card["data"]["train"]["sha256"]) == 64
    assert card["final"]["on"] == "holdout" and card["final"]["n"] == 64
    assert 0 <= card["final"]["robust_accuracy"] <= card["final"]["clean_accuracy"] <= 1
    assert len(card["history"]) == 4
    if mode == "standard":
        assert card["attack"] is None and card["attack_model_calls"] == 0
    else:
        assert card["attack"]["attack"] == "pgd" and card["attack"]["early_stop"] is False
        assert card["attack_model_calls"] == 4 * 192 * 3  # every sample, every epoch, every PGD step: one call
        assert card["threat"] == "linf:0.1"
    if mode == "trades":
        assert card["attack"]["loss"] == "kl_to_clean" and card["hyperparameters"]["beta"] == 6.0
    if mode in ("pgd", "alp"):
        assert card["hyperparameters"]["gamma"] == lib.DEFAULT_GAMMA[mode]
    # the checkpoint is a plain state dict that loads with weights_only=True into the architecture
    sd = torch.load(ckpt, weights_only=True)
    assert set(sd) == set(res.model.state_dict())
    import hashlib

    assert card["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_same_seed_same_weights_other_seed_other_weights(tiny):
    a = lib.train(_cfg(tiny, "trades", epochs=2)).model.state_dict()
    b = lib.train(_cfg(tiny, "trades", epochs=2)).model.state_dict()
    c = lib.train(_cfg(tiny, "trades", epochs=2, seed=1)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_attack_is_the_projects_pgd_taking_every_step():
    """early_stop=False: one model call per step and sample (no final check), the last iterate inside the ball."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    target = TorchTarget(model, "lin", num_classes=3)
    x = torch.rand(6, 4) * 0.5 + 0.25
    y = target.predict(x)
    threat = ThreatModel.parse("linf:0.1")
    oracle = Oracle(target, 6)
    out = PGD(steps=7, early_stop=False).run(oracle, x, Goal(y, False), threat, SampleRng(0, "t", range(6)))
    assert oracle.used.tolist() == [7] * 6
    # the attack's own float32 projection (the harness tightens candidates to the exact ball; training needs no more)
    assert bool((threat.distance(out, x) <= threat.epsilon + 1e-6).all()) and out.min() >= 0 and out.max() <= 1
    # the default still stops early: a broken sample costs fewer calls than the full run
    oracle2 = Oracle(target, 6)
    PGD(steps=7).run(oracle2, x, Goal(y, False), ThreatModel.parse("linf:0.9"), SampleRng(0, "t", range(6)))
    assert int(oracle2.used.max()) <= 8 and int(oracle2.used.min()) < 8


def test_kl_attack_moves_away_from_the_clean_output():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    target = TorchTarget(model, "lin", num_classes=3)
    x = torch.rand(5, 4) * 0.5 + 0.25
    ref = torch.log_softmax(target.scores(x), dim=1)
    goal = lib._PairedGoal(target.predict(x), False, ref)
    adv = PGD(steps=5, loss=lib.kl_to_clean, early_stop=False).run(Oracle(target, 5), x, goal,
                                                                 ThreatModel.parse("linf:0.1"), SampleRng(0, "k", range(5)))
    assert bool((lib.kl_to_clean(target.scores(adv), goal) > 1e-6).all())


def test_holdout_and_excluded_data_stay_out_of_training(tiny):
    res = lib.train(_cfg(tiny, "standard", n=None, offset=0, holdout=100, epochs=1, exclude=[]))
    card = res.card
    assert card["data"]["train"]["n"] + card["data"]["holdout"]["n"] == 1797
    # training on the whole of `digits` while excluding a slice of it is refused before any training
    with pytest.raises(lib.DataError, match="also appear in the evaluation data"):
        lib.train(_cfg(tiny, "standard", n=None, exclude=["digits"]))
    # the built-in MNIST splits are disjoint: mnist:train passes an --exclude mnist:test check
    train = lib.load_eval_set("mnist:train", n=300)
    lib.check_disjoint(train, lib.load_eval_set("mnist:test"))


def test_split_is_disjoint_and_seeded():
    data = lib.load_eval_set("digits", n=50)
    a, h = lib._split(data, 10, seed=3)
    assert len(a) == 40 and len(h) == 10
    assert not set(a.ids) & set(h.ids)
    _a2, h2 = lib._split(data, 10, seed=3)
    assert h.ids.tolist() == h2.ids.tolist()


def test_detector_training_lowers_its_loss(tiny):
    clf = _cfg(tiny, "standard", epochs=3)
    lib.save(lib.train(clf), clf.out)
    cfg = _cfg(tiny, model=f"{tiny / 'tiny.py'}:Det", out=str(tiny / "det.pt"), detector_for=f"{tiny / 'tiny.py'}:Net",
               classifier_weights=clf.out, epochs=4)
    res = lib.train(cfg)
    assert res.history[-1].loss < res.history[0].loss
    assert res.card["mode"] == "detector" and res.card["classifier"]["weights"] == clf.out
    final = res.card["final"]
    assert final["adversarial_flagged"] > final["clean_flagged"]  # it learned something


def test_cli_train_then_scan_loads_the_checkpoint(run_cli, tiny, tmp_path):
    out = tmp_path / "m.pt"
    res = run_cli("train", f"{tiny / 'tiny.py'}:Net", "--data", "digits", "--n", "200", "--holdout", "40",
                  "--mode", "alp", "--eps", "0.1", "--steps", "2", "--epochs", "2", "--check-steps", "3", "-o", out)
    assert res.exit_code == 0, res.stderr
    card = json.loads((tmp_path / "m.pt.card.json").read_text())
    assert card["mode"] == "alp" and card["command"]
    assert "held-out clean" in res.stderr and "wrote" in res.stderr
    rep = tmp_path / "r.json"
    res = run_cli("scan", f"{tiny / 'tiny.py'}:Net", "--weights", out, "--data", "digits", "--offset", "1700",
                  "--eps", "0.1", "--preset", "quick", "-o", rep)
    assert res.exit_code == 0, res.stderr
    assert json.loads(rep.read_text())["results"][0]["n"] == 97


def _one_line_error(res, *words):
    everything = (res.stdout or "") + (res.stderr or "")
    assert "Traceback" not in everything, everything
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1 and msg.startswith("error:"), msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)


BAD = {
    "mode": (["--mode", "fgsm"], ["--mode"]),
    "gamma": (["--mode", "pgd", "--gamma", "1.5"], ["--gamma", "[0, 1]"]),
    "gamma-trades": (["--mode", "trades", "--gamma", "0.5"], ["--gamma"]),
    "beta": (["--mode", "pgd", "--beta", "2"], ["--beta"]),
    "epochs": (["--epochs", "0"], ["--epochs"]),
    "lr": (["--lr", "-1"], ["--lr"]),
    "holdout": (["--holdout", "5000"], ["--holdout"]),
    "exclude": (["--exclude", "digits"], ["evaluation data"]),
    "eps": (["--eps", "abc"], ["epsilon"]),
    "eps-and-threat": (["--eps", "0.1", "--threat", "l2:1"], ["--eps", "--threat"]),
    "targeted": (["--threat", "linf:0.1:targeted"], ["targeted"]),
    "classifier": (["--classifier", "x.py:Net"], ["--detector"]),
    "detector": (["--detector"], ["--classifier"]),
    "optimizer": (["--optimizer", "rmsprop"], ["--optimizer"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_line(run_cli, tiny, tmp_path, case):
    args, words = BAD[case]
    res = run_cli("train", f"{tiny / 'tiny.py'}:Net", "--data", "digits", "--n", "64", "--epochs", "1",
                  "-o", tmp_path / "x.pt", *args)
    _one_line_error(res, *words)
    assert not (tmp_path / "x.pt").exists()


def test_bad_model_and_output_are_one_clear_line(run_cli, tiny, tmp_path):
    from robustbench_cli import zoo

    _one_line_error(run_cli("train", str(zoo.ONNX), "--data", "digits", "-o", tmp_path / "x.pt"), "onnx")
    _one_line_error(run_cli("train", f"{tiny / 'tiny.py'}:Nope", "--data", "digits", "-o", tmp_path / "x.pt"), "Nope")
    _one_line_error(run_cli("train", f"{tiny / 'tiny.py'}:Net", "--data", "digits", "-o", tmp_path), "folder")
    # a 10-class architecture on 28x28 MNIST inputs: shapes that do not fit, before any training
    _one_line_error(run_cli("train", f"{tiny / 'tiny.py'}:Net", "--data", "mnist:train", "--n", "8",
                            "-o", tmp_path / "x.pt"))
