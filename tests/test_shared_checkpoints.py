"""Integration: real published checkpoints and data from ../shared/data (see the READMEs there).

Every test reaches its files through conftest's ``shared_path``, so on a machine without ../shared/data each one
skips with a reason naming the missing file. The PyTorch architectures come from ``examples/architectures.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from robustbench_cli.core.data import load_eval_set
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import Battery, Entry, evaluate
from robustbench_cli.targets import TargetSpec, load_target

pytestmark = pytest.mark.shared

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "examples" / "architectures.py"
LENET = f"{ARCH}:LeNet5"
CONV_SMALL = f"{ARCH}:ConvSmallWK"

MNIST_NPZ = ("mnist", "mnist_test.npz")
LENET_STD = ("models_mnist", "advertorch__mnist_lenet5_clntrained.pt")
LENET_ADV = ("models_mnist", "advertorch__mnist_lenet5_advtrained.pt")
PGD40 = Battery("pgd40", 1, [Entry("pgd", "pgd", {"steps": 40})])


def _torch_target(spec: str, weights: Path, weights_key: str | None = None):
    return load_target(TargetSpec(spec, weights=str(weights), weights_key=weights_key, device="cpu"))


def _accuracy(target, data) -> float:
    pred = target.scores(torch.as_tensor(data.x)).argmax(dim=1).cpu().numpy()
    return float((pred == data.y).mean())


@pytest.fixture(scope="module")
def mnist10k():
    return load_eval_set(str(shared_path(*MNIST_NPZ)))


# --- clean accuracy of the white-box checkpoints (full 10k test set: a few seconds on 2 cores) -----------------
@pytest.mark.parametrize(
    "spec, weights, readme_acc",
    [
        (LENET, LENET_STD, 0.9889),
        (LENET, LENET_ADV, 0.9864),
        (CONV_SMALL, ("models_mnist", "convex_adversarial__mnist.pth"), 0.9820),
        (CONV_SMALL, ("models_mnist", "abcrown__sdp_mnist_cnn_a_adv.model"), 0.9633),
    ],
    ids=["lenet5-standard", "lenet5-pgd-trained", "wong-kolter-mnist", "sdp-cnn-a-adv"],
)
def test_checkpoint_loads_strictly_and_matches_readme_clean_accuracy(spec, weights, readme_acc, mnist10k):
    target = _torch_target(spec, shared_path(*weights))
    data = mnist10k
    assert len(data) == 10_000
    # the README's numbers were measured on the same 10k images; allow a handful of argmax ties across BLAS builds
    assert _accuracy(target, data) == pytest.approx(readme_acc, abs=0.002)


# --- PGD separates the standard from the PGD-trained LeNet5 -------------------------------------------------------
@pytest.fixture(scope="module")
def mnist200():
    return load_eval_set(str(shared_path(*MNIST_NPZ)), n=200)


def _pgd_robust_accuracy(weights: Path, data) -> tuple[float, float]:
    target = _torch_target(LENET, weights)
    ev = evaluate(target, data, [ThreatModel.parse("linf:0.3")], PGD40, seed=0, batch_size=256)
    (res,) = ev.results
    return res.clean_accuracy, res.robust_accuracy


def test_pgd_breaks_the_standard_lenet5(mnist200):
    clean, robust = _pgd_robust_accuracy(shared_path(*LENET_STD), mnist200)
    assert clean > 0.95
    assert robust < 0.05, f"PGD-40 at linf 0.3 left {robust:.1%} of a standard model robust"


def test_pgd_trained_lenet5_keeps_most_of_its_accuracy(mnist200):
    clean, robust = _pgd_robust_accuracy(shared_path(*LENET_ADV), mnist200)
    assert clean > 0.95
    assert robust > 0.80, f"the PGD-trained model kept only {robust:.1%} under PGD-40 at linf 0.3"


# --- data loaders -----------------------------------------------------------------------------------------------
def test_idx_files_load_to_the_same_pixels_as_the_npz(mnist10k):
    npz = mnist10k
    shared_path("mnist", "t10k-labels-idx1-ubyte.gz")
    idx = load_eval_set(str(shared_path("mnist", "t10k-images-idx3-ubyte.gz")))
    assert idx.x.shape == npz.x.shape == (10_000, 1, 28, 28)
    assert idx.x.dtype == np.float32
    np.testing.assert_array_equal(idx.x, npz.x)
    np.testing.assert_array_equal(idx.y, npz.y)
    assert idx.sha256 == npz.sha256
    assert idx.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


# --- the CLI on real files ----------------------------------------------------------------------------------------
def test_cli_scans_an_nhwc_onnx_network(run_cli, tmp_path):
    model = shared_path("models_mnist", "marabou__cnn_max_mninst2.onnx")
    data = shared_path(*MNIST_NPZ)
    report = tmp_path / "report.json"
    res = run_cli("scan", model, "--data", data, "--n", "50", "--attacks", "pgd-nes", "--eps", "0.1", "-o", report)
    assert res.exit_code == 0, res.output
    rep = json.loads(report.read_text())
    (target,) = rep["targets"]
    assert target["kind"] == "onnx"
    assert target["layout"] == "nhwc"
    assert target["input_shape"] == [1, 28, 28]
    (result,) = rep["results"]
    assert result["n"] == 50
    assert result["clean_accuracy"] >= 0.9  # README: 98.23 % on 10k
    assert result["robust_accuracy"] <= result["clean_accuracy"]


def test_cascade_checkpoint_needs_weights_key(run_cli, tmp_path):
    weights = shared_path("models_mnist", "convex_adversarial__mnist_small_0_3.pth")
    data = shared_path(*MNIST_NPZ)
    report = tmp_path / "report.json"
    common = ["scan", CONV_SMALL, "--weights", weights, "--data", data, "--n", "500", "--attacks", "fgsm",
              "--eps", "0.1", "-o", report]

    res = run_cli(*common)
    assert res.exit_code == 2
    assert "--weights-key" in res.output
    assert "state_dict.0" in res.output
    assert "Traceback" not in res.output
    assert not report.exists()

    res = run_cli(*common, "--weights-key", "state_dict.0")
    assert res.exit_code == 0, res.output
    rep = json.loads(report.read_text())
    (result,) = rep["results"]
    assert result["n"] == 500
    assert 0.80 <= result["clean_accuracy"] <= 0.90  # README: 85.23 % for stage 0 on the full 10k


def test_cascade_stage0_matches_readme_on_full_test_set(mnist10k):
    weights = shared_path("models_mnist", "convex_adversarial__mnist_small_0_3.pth")
    target = _torch_target(CONV_SMALL, weights, weights_key="state_dict.0")
    assert _accuracy(target, mnist10k) == pytest.approx(0.8523, abs=0.002)


# --- a fixed-batch ONNX network ---------------------------------------------------------------------------------
def test_fixed_batch_one_onnx_scores_a_batch_of_twenty():
    model = shared_path("models_cifar10", "vnncomp2022__cifar_biasfield_cifar_base.onnx")
    data = load_eval_set(str(shared_path("cifar10", "cifar10_test_first100_lossless.npz")), n=20)
    assert data.x.shape == (20, 3, 32, 32)
    target = load_target(str(model))
    assert target.fixed_batch == 1
    assert target.input_shape == (3, 32, 32)
    assert target.accepts(data.sample_shape)
    x = torch.as_tensor(data.x)
    # It expects normalised input (constants undocumented), so accuracy on raw [0,1] pixels is not checked:
    # only that the batch of 20 is fed in chunks of 1 and comes back as 20 rows of 10 class scores.
    s = target.scores(x)
    assert s.shape == (20, 10)
    assert bool(torch.isfinite(s).all())
    one_by_one = torch.cat([target.scores(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(s, one_by_one)
