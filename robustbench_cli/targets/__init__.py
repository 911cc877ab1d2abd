"""Target kinds: ``pytorch`` (white box: modules, TorchScript, timm), ``onnxrt`` (black box) and ``detector`` (a
classifier guarded by a detector); :class:`TargetSpec` says which model and how to load it, :func:`load_target`
loads it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from robustbench_cli.core.errors import TargetError
from robustbench_cli.targets.base import Capability, LabelOnly, Oracle, ScoresOnly, Target

__all__ = ["Capability", "LabelOnly", "Oracle", "ScoresOnly", "Target", "TargetSpec", "load_target", "name_targets"]

ACCESS = ("auto", "gradients", "scores", "labels")


@dataclass(frozen=True)
class TargetSpec:
    """A model to scan and how to load it. Checked when made, so a bad option fails before any work."""

    model: str  # model.onnx, file.py:factory, package.module:attr, TorchScript, timm:NAME, hf-hub:ORG/NAME, torchvision:NAME
    weights: str | None = None  # state dict (.pt with weights_only=True, or .safetensors) of a PyTorch architecture
    pretrained: bool = False  # timm:NAME / torchvision:NAME with their published weights, from the local cache
    weights_key: str | None = None  # where the state dict sits in the checkpoint, e.g. state_dict.0
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None  # (x - mean) / std before the model (PyTorch or ONNX): epsilon in pixels
    std: tuple[float, ...] | None = None
    layout: str | None = None  # ONNX input layout: nchw | nhwc | flat (detected when None)
    output: str | None = None  # the ONNX output to read
    access: str = "auto"  # auto | gradients | scores | labels: what the attacker sees (gradients: open an ONNX file)
    batch_size: int = 256
    device: str = "auto"
    trust_checkpoint: bool = False  # allow full unpickling of checkpoints that need it
    bpda: tuple[str, ...] | None = None  # PyTorch submodules differentiated as the identity (pytorch.apply_bpda)
    fast_forward: bool = True  # attacks' forward-only queries from an onnxruntime export (PyTorch on CPU)
    name: str | None = None  # the name in reports; the model spec when None

    def __post_init__(self) -> None:
        for name in ("mean", "std", "bpda"):  # lists from callers and files: the spec keeps tuples
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.model.strip():  # Path("") is the current folder
            raise TargetError("the model spec is empty: give model.onnx, file.py:factory, package.module:attr, "
                              "a TorchScript file or timm:NAME")
        if self.batch_size <= 0:
            raise TargetError(f"--batch-size must be > 0, got {self.batch_size}")
        if self.num_classes is not None and self.num_classes < 2:
            raise TargetError(f"--num-classes must be at least 2, got {self.num_classes}")
        if self.access not in ACCESS:
            raise TargetError(f"--access must be gradients, scores or labels, got {self.access!r}")
        for what, values in (("--mean", self.mean), ("--std", self.std)):
            if values is not None and not values:
                raise TargetError(f"{what} needs at least one number, e.g. 0.485,0.456,0.406")
        if self.pretrained and not self.model.startswith(("timm:", "torchvision:", "hf-hub:")):
            raise TargetError("--pretrained applies to timm:NAME and torchvision:NAME (hf-hub:ORG/NAME always is); "
                              "give other models their weights with --weights FILE")
        if self.pretrained and self.weights:
            raise TargetError("give --pretrained or --weights, not both")
        if self.is_onnx:
            if self.weights:
                raise TargetError("an ONNX file carries its weights; --weights is for PyTorch module specs and timm")
            if self.bpda:
                raise TargetError("--bpda replaces the gradient of PyTorch submodules; an ONNX black box has no "
                                  "gradients (its attacks need none)")
        else:
            if self.output is not None:
                raise TargetError("--output names an ONNX output; it does not apply to PyTorch targets")
            if self.bpda and self.access in ("scores", "labels"):
                raise TargetError(f"--bpda changes gradients, but with --access {self.access} no attack uses them")

    @property
    def is_onnx(self) -> bool:
        return self.model.lower().endswith(".onnx")

    @property
    def display_name(self) -> str:
        return self.name or self.model


def name_targets(specs: list[TargetSpec]) -> list[TargetSpec]:
    """Names for reports, settled before loading: checkpoints of one architecture (``net.py:Net --weights a.pt
    --weights b.pt``) are told apart by their weights file (``net.py:Net@a.pt``). The same model twice is refused."""
    counts = Counter(s.model for s in specs)
    named = [s if s.name or counts[s.model] == 1 or not s.weights else replace(s, name=f"{s.model}@{Path(s.weights).name}")
             for s in specs]
    names = [s.display_name for s in named]
    if len(set(names)) != len(names):
        raise TargetError(f"the same model is given twice: {', '.join(names)}")
    return named


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TargetError(f"--device {name}: no CUDA device is available here")
    try:
        return torch.device(name)
    except RuntimeError:
        raise TargetError(f"--device {name!r} is not a device (cpu, cuda, cuda:1, auto)") from None


def load_target(spec: TargetSpec | str) -> Target:
    """Build the target a spec names: ``model.onnx``, ``file.py:factory``, ``pkg.mod:attr``, a TorchScript file or
    ``timm:NAME`` (a bare string loads with the defaults), seen through ``spec.access``."""
    if isinstance(spec, str):
        spec = TargetSpec(spec)
    target: Target
    if spec.is_onnx:
        from robustbench_cli.targets.onnxrt import OnnxTarget

        target = OnnxTarget(spec.model, layout=spec.layout, output=spec.output, batch_size=spec.batch_size,
                            mean=spec.mean, std=spec.std)
        if spec.access == "gradients":  # its owner opens it: gradients from a conversion, answers from the file
            from robustbench_cli.targets.converted import ConvertedOnnxTarget, convert

            target = ConvertedOnnxTarget(target, convert(target, spec.model), batch_size=spec.batch_size)
    else:
        from robustbench_cli.targets.pytorch import apply_bpda, load_torch_target

        torch_target = load_torch_target(
            spec.model, weights=spec.weights, weights_key=spec.weights_key, num_classes=spec.num_classes,
            mean=spec.mean, std=spec.std, batch_size=spec.batch_size, device=resolve_device(spec.device),
            trust_checkpoint=spec.trust_checkpoint, pretrained=spec.pretrained,
        )
        torch_target.fast_forward = spec.fast_forward
        if spec.bpda:
            apply_bpda(torch_target, list(spec.bpda))
        target = torch_target
    if spec.name:
        target.name = spec.name
    if spec.access == "labels":
        target = LabelOnly(target)
    elif spec.access == "scores" and Capability.GRADIENTS in target.capabilities:
        target = ScoresOnly(target)
    return target
