"""The models people bring: timm and torchvision nets at the data's size, hub checkpoints from a local cache,
safetensors weights, ONNX files that expect normalised input, and the checks that keep a mis-set scan from
reporting numbers as if they were right (random weights, chance-level accuracy, class-sorted selections, no epsilon).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import robustbench_cli as robust
from robustbench_cli.core.data import DataSpec, class_interleaved, load_eval_set
from robustbench_cli.core.errors import DataError, TargetError
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.targets.pytorch import weights_sha256


def _images(n=12, size=32, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, channels, size, size)).astype(np.float32), (np.arange(n) % 10).astype(np.int64)


# --- input size -------------------------------------------------------------------------------------------------------
def test_a_timm_net_is_scanned_at_the_datas_size_and_keeps_its_default_as_a_hint():
    x, y = _images(size=32)
    report = robust.scan("timm:test_resnet", (x, y), threats=["linf:8/255"], attacks=["fgsm"])
    target = report.to_dict()["targets"][0]
    assert target["input_shape"] is None and target["default_input_size"] == [3, 160, 160]
    assert len(report.results[0].samples.robust) == len(y)


def test_a_net_that_cannot_take_the_size_is_refused_with_the_resize_hint_and_resize_fixes_it(tmp_path):
    x, y = _images(n=4, size=32)
    with pytest.raises(DataError, match=r"rejects inputs of shape 3x32x32 \(its default input size is 3x160x160: --resize 160 brings"):
        robust.scan("timm:test_maxvit", (x, y), threats=["linf:8/255"], attacks=["fgsm"])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = DataSpec(str(tmp_path / "d.npz"), resize=(176, 176), crop=(160, 160)).load()
    assert data.sample_shape == (3, 160, 160) and data.source["resize"] == [176, 176] and data.source["crop"] == [160, 160]
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    report = robust.scan("timm:test_maxvit", data, threats=["linf:8/255"], attacks=["fgsm"])
    assert report.to_dict()["data"]["resize"] == [176, 176]


@pytest.mark.parametrize("bad", ["0", "axb", "1x2x3x4", "-5"])
def test_bad_sizes_are_one_line(run_cli, tmp_path, bad):
    result = run_cli("scan", "timm:test_resnet", "--data", "digits", "--eps", "0.1", "--resize", bad,
                     "-o", tmp_path / "r.json")
    assert result.exit_code == 2 and "--resize" in result.stderr and "Traceback" not in result.stderr


# --- hub checkpoints from a local cache -------------------------------------------------------------------------------
def _hub_cache(root: Path, repo: str, module: nn.Module, config: dict) -> Path:
    """The folder layout huggingface_hub reads offline: models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    from safetensors.torch import save_file

    rev = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / rev
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(rev)
    (snap / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(snap / "model.safetensors"))
    return root


def _robust(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustbench_cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, timeout=600)


def test_an_hf_hub_model_loads_from_a_local_cache_offline_and_records_its_weights(tmp_path):
    import timm

    torch.manual_seed(3)
    module = timm.create_model("test_resnet", num_classes=10).eval()
    cfg = {"architecture": "test_resnet", "num_classes": 10,
           "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                              "num_classes": 10}}
    cache = _hub_cache(tmp_path / "hub", "robust-tests/tiny-resnet", module, cfg)
    x, y = _images(n=8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = _robust("scan", "hf-hub:robust-tests/tiny-resnet", "--data", str(tmp_path / "d.npz"), "--eps", "8/255",
                   "--attacks", "fgsm", "-o", str(tmp_path / "r.json"), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    target = json.loads((tmp_path / "r.json").read_text())["targets"][0]
    assert target["source"] == "hf-hub:robust-tests/tiny-resnet (pretrained)"
    assert target["weights_sha256"] == weights_sha256(module)  # exactly the weights in the cache
    assert not target.get("random_weights")

    missing = _robust("scan", "hf-hub:robust-tests/not-there", "--data", str(tmp_path / "d.npz"), "--eps", "8/255",
                      "-o", str(tmp_path / "m.json"), env=env, cwd=tmp_path)
    assert missing.returncode == 2
    line = missing.stderr.strip()
    assert "\n" not in line and str(cache) in line and "HF_HUB_CACHE" in line and "Traceback" not in line
    assert not (tmp_path / "m.json").exists()


def test_pretrained_needs_a_hub_model(run_cli, tmp_path):
    result = run_cli("scan", "examples/architectures.py:LeNet5", "--pretrained", "--data", "mnist:test", "--eps", "0.3",
                     "-o", tmp_path / "r.json")
    assert result.exit_code == 2 and "--pretrained applies to timm:NAME and torchvision:NAME" in result.stderr
    with pytest.raises(TargetError, match="--pretrained or --weights, not both"):
        TargetSpec("timm:test_resnet", pretrained=True, weights="w.pt")


def test_unknown_hub_names_are_one_line(run_cli, tmp_path):
    for spec, words in (("timm:no_such_net", "timm has no model"), ("torchvision:no_such_net", "torchvision has no model")):
        result = run_cli("scan", spec, "--data", "digits", "--eps", "0.1", "-o", tmp_path / "r.json")
        assert result.exit_code == 2 and words in result.stderr


# --- safetensors --------------------------------------------------------------------------------------------------------
NET = """
import torch
from torch import nn


class Net(nn.Sequential):
    def __init__(self, num_classes=10):
        super().__init__(nn.Flatten(), nn.Linear(64, num_classes))


def seeded():
    torch.manual_seed(0)  # deterministic initialisation: building twice gives the same weights
    return Net()
"""


def _net_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


def test_safetensors_weights_scan_as_the_pt_checkpoint_does(run_cli, tmp_path):
    from safetensors.torch import save_file

    net = _net_file(tmp_path)
    torch.manual_seed(1)
    sd = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).state_dict()
    torch.save(sd, tmp_path / "w.pt")
    save_file(sd, str(tmp_path / "w.safetensors"))
    reports = {}
    for suffix in ("pt", "safetensors"):
        result = run_cli("scan", f"{net}:Net", "--weights", tmp_path / f"w.{suffix}", "--data", "digits", "--n", "30",
                         "--eps", "0.1", "--attacks", "fgsm,pgd", "-o", tmp_path / f"{suffix}.json")
        assert result.exit_code == 0, result.stderr
        reports[suffix] = json.loads((tmp_path / f"{suffix}.json").read_text())
    assert reports["pt"]["results"][0]["samples"] == reports["safetensors"]["results"][0]["samples"]
    assert reports["pt"]["targets"][0]["weights_sha256"] == reports["safetensors"]["targets"][0]["weights_sha256"]

    save_file({"1.weight": sd["1.weight"]}, str(tmp_path / "half.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    for name, words in (("half", "missing keys: 1.bias"), ("bad", "not a readable safetensors file")):
        result = run_cli("scan", f"{net}:Net", "--weights", tmp_path / f"{name}.safetensors", "--data", "digits",
                         "--eps", "0.1", "-o", tmp_path / "x.json")
        assert result.exit_code == 2 and words in result.stderr, result.stderr


# --- no silent wrong numbers --------------------------------------------------------------------------------------------
def test_random_weights_are_warned_and_recorded_and_deterministic_factories_are_not(run_cli, tmp_path):
    net = _net_file(tmp_path)
    random = run_cli("scan", f"{net}:Net", "--data", "digits", "--n", "30", "--eps", "0.1", "--attacks", "fgsm",
                     "-o", tmp_path / "r.json")
    assert random.exit_code == 0
    assert "check failed" in random.stdout + random.stderr and "random initialisation" in random.stdout + random.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["targets"][0]["random_weights"] is True
    failed = {f["check"] for f in report["results"][0]["diagnostics"] if not f["passed"]}
    assert "random-weights" in failed

    seeded = run_cli("scan", f"{net}:seeded", "--data", "digits", "--n", "30", "--eps", "0.1", "--attacks", "fgsm",
                     "-o", tmp_path / "s.json")
    assert seeded.exit_code == 0 and "random initialisation" not in seeded.stdout + seeded.stderr
    assert "random_weights" not in json.loads((tmp_path / "s.json").read_text())["targets"][0]


def test_epsilon_is_a_decision_not_a_default(run_cli, tmp_path):
    result = run_cli("scan", "robustbench_cli.zoo:mnist_cnn", "--data", "mnist:test", "-o", tmp_path / "r.json")
    assert result.exit_code == 2
    assert "give the threat model: --eps 0.3" in result.stderr and "no default" in result.stderr
    (tmp_path / "pyproject.toml").write_text('[tool.robust.scan]\nthreat = "linf:0.2"\n')
    from robustbench_cli.cli.commands import _default_threats

    assert _default_threats(str(tmp_path / "pyproject.toml")) == ("linf:0.2",)


def test_chance_accuracy_is_a_finding_that_names_the_causes():
    x, y = _images(n=40, size=8, channels=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    report = robust.scan(model, (x, y), threats=["linf:0.1"], attacks=["fgsm"])
    finding = next(f for f in report.to_dict()["results"][0]["diagnostics"] if f["check"] == "clean-accuracy")
    assert finding["passed"] is False and "normalisation" in finding["message"] and "weights" in finding["message"]


def test_builtins_are_class_interleaved_and_a_sorted_selection_is_a_finding(tmp_path):
    first = load_eval_set("mnist:test", n=20)
    assert sorted(set(first.y.tolist())) == list(range(10))
    assert load_eval_set("digits", n=10).y.tolist() == list(range(10))
    order = class_interleaved(np.array([2, 2, 0, 0, 1, 1]))
    assert np.array([2, 2, 0, 0, 1, 1])[order].tolist() == [0, 1, 2, 0, 1, 2]

    # a class-sorted file, its first rows: two classes of ten
    x, _ = _images(n=12, size=8, channels=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    report = robust.scan(model, (x, np.repeat([0, 1], 6)), threats=["linf:0.1"], attacks=["fgsm"])
    coverage = [f for f in report.to_dict()["results"][0]["diagnostics"] if f["check"] == "class-coverage"]
    assert len(coverage) == 1 and coverage[0]["passed"] is False and "--shuffle" in coverage[0]["message"]
    assert "2 of 10 classes" in coverage[0]["message"]


# --- ONNX files that expect normalised input ------------------------------------------------------------------------------
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


@pytest.fixture(scope="module")
def normalised_onnx(tmp_path_factory):
    """A small CNN exported to ONNX without its normalisation (as VNN-COMP's CIFAR nets are), with and without the
    constants in metadata_props."""
    import onnx

    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 10)).eval()
    plain = folder / "net.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(plain), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    model = onnx.load(str(plain))
    for key, values in (("mean", MEAN), ("std", STD)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, ",".join(map(str, values))
    tagged = folder / "tagged.onnx"
    onnx.save(model, str(tagged))
    return net, plain, tagged


def test_onnx_mean_std_are_applied_before_the_session_as_for_pytorch(normalised_onnx):
    net, plain, tagged = normalised_onnx
    x, _ = _images(n=16)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        expected = net((xt - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    onnx_target = load_target(TargetSpec(str(plain), mean=tuple(MEAN), std=tuple(STD)))
    torch.testing.assert_close(onnx_target.scores(xt), expected, atol=1e-4, rtol=1e-4)
    assert onnx_target.describe()["normalisation"] == {"mean": MEAN, "std": STD, "source": "--mean/--std"}
    raw = load_target(TargetSpec(str(plain)))
    assert not torch.allclose(raw.scores(xt), expected, atol=1e-2)  # without it the scores are another model's

    from_metadata = load_target(TargetSpec(str(tagged)))
    torch.testing.assert_close(from_metadata.scores(xt), expected, atol=1e-4, rtol=1e-4)
    assert from_metadata.describe()["normalisation"]["source"] == "metadata_props"


def test_onnx_normalisation_of_the_wrong_length_is_one_line(run_cli, normalised_onnx, tmp_path):
    _, plain, _ = normalised_onnx
    x, y = _images(n=4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    result = run_cli("scan", plain, "--data", tmp_path / "d.npz", "--eps", "8/255", "--mean", "0.5,0.5",
                     "--std", "0.2,0.2", "-o", tmp_path / "r.json")
    assert result.exit_code == 2 and "--mean has 2 values but the input" in result.stderr


@pytest.mark.shared
def test_the_shared_normalised_onnx_net_reaches_its_readmes_accuracy(run_cli, tmp_path):
    from conftest import shared_path

    model = shared_path("models_cifar10", "vnncomp2022__cifar_biasfield_cifar_base.onnx")
    data = shared_path("cifar10", "cifar10_test_first100_lossless.npz")
    result = run_cli("scan", model, "--data", data, "--eps", "1/255", "--attacks", "noise", "--mean",
                     ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), "-o", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    result = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert result["clean_accuracy"] == pytest.approx(0.90)  # its README: 90% on these 100 lossless images


# --- an ONNX file its owner opens ----------------------------------------------------------------------------------------
def test_onnx_with_gradients_runs_white_box_attacks_and_answers_from_the_file(run_cli, tmp_path):
    from robustbench_cli import zoo

    common = ["--data", "mnist:test", "--n", "40", "--eps", "0.15", "--seed", "0"]
    opened = run_cli("scan", zoo.ONNX, "--access", "gradients", "--attacks", "pgd", *common, "-o", tmp_path / "g.json")
    assert opened.exit_code == 0, opened.stderr
    closed = run_cli("scan", zoo.ONNX, "--attacks", "square", "--queries", "300", *common, "-o", tmp_path / "b.json")
    assert closed.exit_code == 0, closed.stderr
    g, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("g", "b"))
    assert g["targets"][0]["gradients"].startswith("onnx2torch") and g["targets"][0]["access"] == "gradients"
    assert "gradients" in g["targets"][0]["capabilities"]
    assert g["results"][0]["attacks"][0]["skipped"] is None  # PGD ran: the file was opened
    # the same clean answers (both from onnxruntime), and the white-box attack at least as strong here
    assert g["results"][0]["samples"]["clean_pred"] == b["results"][0]["samples"]["clean_pred"]
    assert g["results"][0]["robust_accuracy"] <= b["results"][0]["robust_accuracy"]


def test_a_converted_graph_that_disagrees_with_onnxruntime_is_refused(normalised_onnx):
    """A conversion error may cost strength, never a false claim: a module that answers differently is refused."""
    from robustbench_cli.targets.converted import ConvertedOnnxTarget
    from robustbench_cli.targets.onnxrt import OnnxTarget

    _, plain, _ = normalised_onnx
    original = OnnxTarget(str(plain))
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))  # any other network
    target = ConvertedOnnxTarget(original, wrong)
    x, _ = _images(n=2)
    with pytest.raises(DataError, match="disagrees with onnxruntime"):
        target.bind((3, 32, 32), torch.from_numpy(x))


SHARED_ONNX = [("models_mnist", "marabou__cnn_max_mninst2.onnx", "mnist:test", "0.05"),  # NHWC
               ("models_mnist", "marabou__mnist2x10.onnx", "mnist:test", "0.05"),  # flat MLP, dynamic batch
               ("models_mnist", "marabou__mnist5x20_leaky_relu.onnx", "mnist:test", "0.05"),
               ("models_cifar10", "vnncomp2022__cifar_biasfield_cifar_base.onnx", "cifar10", "2/255")]  # fixed batch 1


@pytest.mark.shared
@pytest.mark.parametrize("folder, name, data, eps", SHARED_ONNX, ids=[n.split(".")[0] for _, n, _, _ in SHARED_ONNX])
def test_opened_shared_onnx_nets_are_at_least_as_weak_as_their_black_box_scan(run_cli, tmp_path, folder, name, data, eps):
    """Every shared ONNX layout converts; the white-box attack on the opened graph (every answer from onnxruntime)
    leaves no more samples robust than the black-box battery under a 500-query budget, on the same images."""
    from conftest import shared_path

    model = shared_path(folder, name)
    args = ["--data", str(shared_path("cifar10", "cifar10_test_first100_lossless.npz")) if data == "cifar10" else data,
            "--n", "20", "--eps", eps, "--seed", "0"]
    if data == "cifar10":
        args += ["--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
    opened = run_cli("scan", model, "--access", "gradients", "--attacks", "pgd", *args, "-o", tmp_path / "g.json")
    assert opened.exit_code == 0, opened.stderr
    closed = run_cli("scan", model, "--preset", "blackbox", "--queries", "500", *args, "-o", tmp_path / "b.json")
    assert closed.exit_code == 0, closed.stderr
    g, b = (json.loads((tmp_path / f"{k}.json").read_text())["results"][0] for k in ("g", "b"))
    assert g["samples"]["clean_pred"] == b["samples"]["clean_pred"]  # both answered by onnxruntime
    assert g["robust_accuracy"] <= b["robust_accuracy"], (g["robust_accuracy"], b["robust_accuracy"])
