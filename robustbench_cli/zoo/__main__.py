"""Remake the embedded files.

``python -m robustbench_cli.zoo``: retrain the embedded model and rewrite ``mnist_cnn.pt`` and ``mnist_cnn.onnx``.
``python -m robustbench_cli.zoo --defences``: rerun the ``robust train`` commands of the defence zoo (``TRAIN_ARGS``)
on one thread, rewriting each checkpoint and its card.
"""

import os
import subprocess
import sys

from rich.console import Console

from robustbench_cli.zoo import ONNX, TRAIN_ARGS, WEIGHTS, ZOO_FILES, export_onnx, train

console = Console(stderr=True)
if "--defences" in sys.argv[1:]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the shipped files were made on one thread
    for name, args in TRAIN_ARGS.items():
        cmd = [sys.executable, "-m", "robustbench_cli", "train", *args, "-o", str(ZOO_FILES[name])]
        console.print("$ robust " + " ".join(cmd[3:]), highlight=False)
        subprocess.run(cmd, env=env, check=True)
else:
    import torch

    model = train()
    torch.save(model.state_dict(), WEIGHTS)
    export_onnx(model, ONNX)
    console.print(f"wrote {WEIGHTS} and {ONNX}")
