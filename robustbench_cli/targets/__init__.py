"""Target kinds: ``pytorch`` (white box: modules, TorchScript, timm) and ``onnxrt`` (black box)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustbench_cli.core.errors import TargetError
from robustbench_cli.targets.base import Capability, LabelOnly, Oracle, ScoresOnly, Target

__all__ = ["Capability", "LabelOnly", "Oracle", "ScoresOnly", "Target", "TargetOptions", "load_target"]


@dataclass
class TargetOptions:
    weights: str | None = None
    weights_key: str | None = None
    num_classes: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: str | None = None
    output: str | None = None
    access: str = "auto"  # auto | scores | labels
    batch_size: int = 256
    device: str = "auto"
    trust_checkpoint: bool = False
    bpda: list[str] | None = None  # PyTorch submodules differentiated as the identity (pytorch.apply_bpda)
    fast_forward: bool = True  # attacks' forward-only queries from an onnxruntime export (PyTorch on CPU)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TargetError(f"--device {name}: no CUDA device is available here")
    try:
        return torch.device(name)
    except RuntimeError:
        raise TargetError(f"--device {name!r} is not a device (cpu, cuda, cuda:1, auto)") from None


def load_target(spec: str, opts: TargetOptions | None = None) -> Target:
    """Build a target from a spec: ``model.onnx``, ``file.py:factory``, ``pkg.mod:attr``, a TorchScript file, ``timm:NAME``."""
    opts = opts or TargetOptions()
    if not spec.strip():  # Path("") is the current folder
        raise TargetError("the model spec is empty: give model.onnx, file.py:factory, package.module:attr, "
                          "a TorchScript file or timm:NAME")
    if opts.batch_size <= 0:
        raise TargetError(f"--batch-size must be > 0, got {opts.batch_size}")
    if opts.num_classes is not None and opts.num_classes < 2:
        raise TargetError(f"--num-classes must be at least 2, got {opts.num_classes}")
    if spec.lower().endswith(".onnx"):
        from robustbench_cli.targets.onnxrt import OnnxTarget

        if opts.weights:
            raise TargetError("an ONNX file carries its weights; --weights is for PyTorch module specs and timm")
        if opts.mean is not None or opts.std is not None:
            raise TargetError("--mean/--std apply to PyTorch targets; an ONNX graph must contain its own normalisation")
        if opts.bpda:
            raise TargetError("--bpda replaces the gradient of PyTorch submodules; an ONNX black box has no gradients "
                              "(its attacks need none)")
        target: Target = OnnxTarget(spec, layout=opts.layout, output=opts.output, batch_size=opts.batch_size)
    else:
        from robustbench_cli.targets.pytorch import load_torch_target

        if opts.output is not None:
            raise TargetError("--output names an ONNX output; it does not apply to PyTorch targets")
        target = load_torch_target(
            spec,
            weights=opts.weights,
            weights_key=opts.weights_key,
            num_classes=opts.num_classes,
            mean=opts.mean,
            std=opts.std,
            batch_size=opts.batch_size,
            device=resolve_device(opts.device),
            trust_checkpoint=opts.trust_checkpoint,
        )
        target.fast_forward = opts.fast_forward
        if opts.bpda:
            from robustbench_cli.targets.pytorch import apply_bpda

            if opts.access in ("scores", "labels"):
                raise TargetError(f"--bpda changes gradients, but with --access {opts.access} no attack uses them")

            apply_bpda(target, opts.bpda)
    if opts.access == "labels":
        target = LabelOnly(target)
    elif opts.access == "scores" and Capability.GRADIENTS in target.capabilities:
        target = ScoresOnly(target)
    elif opts.access not in ("auto", "scores"):
        raise TargetError(f"--access must be scores or labels, got {opts.access!r}")
    return target
