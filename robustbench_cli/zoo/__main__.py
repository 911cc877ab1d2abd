"""Retrain the embedded model and rewrite its two files: ``python -m robustbench_cli.zoo``."""

import torch
from rich.console import Console

from robustbench_cli.zoo import ONNX, WEIGHTS, export_onnx, train

model = train()
torch.save(model.state_dict(), WEIGHTS)
export_onnx(model, ONNX)
Console(stderr=True).print(f"wrote {WEIGHTS} and {ONNX}")
