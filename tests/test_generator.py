"""The AdvGAN-style generator: deterministic training under a seed, better than random noise of the same norm, a
file that loads with weights_only=True (and nothing else), and the CLI (train, then scan with --generator).

Models: the embedded MNIST CNN as the white-box model G is trained against; tiny generators, a few hundred images.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import with_data_spec

from robustbench_cli import zoo
from robustbench_cli.attacks.generative import FORMAT, GeneratorAttack, load_generator
from robustbench_cli.core.data import load_eval_set
from robustbench_cli.core.errors import TargetError
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import evaluate, get_battery, with_transfer
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.training.advgan import GeneratorConfig, save, train_generator

torch.set_num_threads(1)
SURROGATE = f"{zoo.SPEC}@{zoo.WEIGHTS}"


def _cfg(tmp_path, **kw) -> GeneratorConfig:
    base = {"surrogates": [SURROGATE], "out": str(tmp_path / "g.pt"), "data": "mnist:train", "n": 64, "shuffle": True,
            "threat": "linf:0.2", "epochs": 1, "batch_size": 32, "width": 4, "blocks": 1}
    return GeneratorConfig(**with_data_spec({**base, **kw}))


def test_training_is_deterministic_under_a_seed(tmp_path):
    g1, c1 = train_generator(_cfg(tmp_path))
    g2, c2 = train_generator(_cfg(tmp_path))
    g3, _ = train_generator(_cfg(tmp_path, seed=1))
    s1, s2, s3 = g1.state_dict(), g2.state_dict(), g3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert c1["history"] == c2["history"]
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    gen, config = train_generator(_cfg(d, n=1024, epochs=3, batch_size=64, width=8))
    return save(gen, config, d / "g.pt")


def test_generator_beats_random_noise_of_the_same_norm(trained):
    """On held-out digits, verified by the harness: the generator's examples fool the model far more often than
    random sign noise at the full Linf epsilon (whose norm is at least the generator's)."""
    data = load_eval_set("mnist:test", n=200)
    target = load_target(TargetSpec(zoo.SPEC, weights=str(zoo.WEIGHTS), device="cpu"))
    threat = ThreatModel.parse("linf:0.2")
    ev = evaluate(target, data, [threat], with_transfer(get_battery("default", ["noise"]), [], [str(trained)]))
    r = ev.results[0]
    gen = next(a for a in r.attacks if a.name == "generator")
    x = torch.as_tensor(data.x)
    g = torch.Generator().manual_seed(0)
    noise = (x + threat.epsilon * torch.sign(torch.rand(x.shape, generator=g) - 0.5)).clamp(0, 1)
    correct = torch.as_tensor(r.clean_correct)
    fooled_noise = float(((target.predict(noise) != torch.as_tensor(data.y)) & correct).sum()) / float(correct.sum())
    assert gen.attempted == int(correct.sum())
    assert gen.broken / gen.attempted > fooled_noise + 0.3, (gen.broken / gen.attempted, fooled_noise)
    assert gen.queries[r.clean_correct].tolist() == [1] * gen.attempted  # the verification, nothing else


def test_generator_file_is_a_state_dict_with_a_config(trained, tmp_path):
    blob = torch.load(trained, weights_only=True)
    assert blob["format"] == FORMAT and set(blob["config"]["architecture"]) == {"channels", "width", "blocks"}
    json.dumps(blob["config"])
    assert blob["config"]["surrogates"] == ["mnist_cnn"] and blob["config"]["threat"] == "linf:0.2"
    net, cfg, sha = load_generator(trained)
    assert len(sha) == 64 and cfg["epochs"] == 3
    # a pickled module is refused (weights_only), and so is a file of another format
    evil = tmp_path / "module.pt"
    torch.save(net, evil)
    with pytest.raises(TargetError, match="weights_only"):
        load_generator(evil)
    other = tmp_path / "sd.pt"
    torch.save(net.state_dict(), other)
    with pytest.raises(TargetError, match=FORMAT):
        load_generator(other)


def test_generator_attack_stays_in_the_ball(trained):
    data = load_eval_set("mnist:test", n=16)
    x = torch.as_tensor(data.x)
    attack = GeneratorAttack(generator=str(trained))
    for spec in ("linf:0.1", "l2:1.5"):
        threat = ThreatModel.parse(spec)
        cand = attack.run(None, x, None, threat, None)
        d = threat.distance(cand, x)
        assert float(d.max()) <= threat.epsilon + 1e-5 and float(d.min()) > 0


def test_cli_train_then_scan(tmp_path, run_cli):
    out = tmp_path / "g.pt"
    res = run_cli("generator", "train", "--surrogate", SURROGATE, "--data", "mnist:train", "--n", "64", "--epochs", "1",
                  "--width", "4", "--blocks", "1", "--eps", "0.2", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert out.is_file() and "wrote" in res.output
    rep_path = tmp_path / "r.json"
    res = run_cli("scan", str(zoo.ONNX), "--data", "mnist:test", "--n", "16", "--eps", "0.2", "--attacks", "noise",
                  "--generator", str(out), "-o", str(rep_path))
    assert res.exit_code == 0, res.output
    rep = json.loads(rep_path.read_text())
    (g,) = [a for a in rep["results"][0]["attacks"] if a["attack"] == "generator"]
    assert g["family"] == "generative" and g["surrogates"] == ["mnist_cnn"] and g["queries_mean"] == 1.0
    assert g["config"]["sha256"] and g["config"]["trained"]["threat"] == "linf:0.2"


@pytest.mark.parametrize("args, message", [
    (["--generator", "/nonexistent/g.pt"], "not found"),
    (["--attacks", "generator"], "--generator FILE"),
])
def test_cli_errors(run_cli, tmp_path, args, message):
    res = run_cli("scan", str(zoo.ONNX), "--data", "mnist:test", "--n", "8", "--eps", "0.2", "-o", str(tmp_path / "r.json"), *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output


def test_cli_train_errors(run_cli, tmp_path):
    res = run_cli("generator", "train", "-o", str(tmp_path / "g.pt"))
    assert res.exit_code == 2 and "--surrogate" in res.output
    res = run_cli("generator", "train", "--surrogate", SURROGATE, "--data", "digits", "-o", str(tmp_path / "g.pt"))
    assert res.exit_code == 2 and "error:" in res.output
    assert not np.any([p.name == "g.pt" for p in tmp_path.iterdir()])
