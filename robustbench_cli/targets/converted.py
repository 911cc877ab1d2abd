"""An ONNX file its owner opens: ``model.onnx --access gradients``.

The graph is converted to a differentiable PyTorch module (onnx2torch, an optional extra:
``pip install "robust-scan[onnx-gradients]"``) so that the white-box battery can run on it, while every answer that
counts comes from the original file in onnxruntime: the clean pass, the harness's verification of each candidate
and the attacks' forward-only queries. A conversion error can therefore cost the attacks strength, never produce a
false break. The conversion is checked against onnxruntime on the first data the target sees, as the fast-forward
route of PyTorch targets is.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from robustbench_cli.core.errors import DataError, TargetError
from robustbench_cli.targets.base import Capability, same_answers
from robustbench_cli.targets.onnxrt import OnnxTarget
from robustbench_cli.targets.pytorch import TorchTarget

AGREE_RTOL = 1e-3  # scores of the converted module within this much (relative to the largest score) of onnxruntime's


class _Layout(nn.Module):
    """Feeds the module the layout the ONNX graph takes, from robust's channels-first images."""

    def __init__(self, inner: nn.Module, layout: str, model_shape: list):
        super().__init__()
        self.inner, self.layout = inner, layout
        self.tail = [d if isinstance(d, int) and d > 0 else 1 for d in model_shape[1:]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        elif self.layout == "flat":
            x = x.reshape(len(x), *self.tail)
        elif self.layout == "nhw":
            x = x.reshape(len(x), *x.shape[-2:])
        return self.inner(x)


def convert(onnx_target: OnnxTarget, path: str) -> nn.Module:
    """The ONNX graph as a PyTorch module, or one line naming what cannot be converted."""
    try:
        import onnx
        from onnx2torch import convert as onnx2torch_convert
    except ImportError:
        raise TargetError("--access gradients on an ONNX file converts it to PyTorch with onnx2torch: "
                          'pip install "robust-scan[onnx-gradients]"') from None
    try:
        module = onnx2torch_convert(onnx.load(path))
    except NotImplementedError as e:
        op = re.search(r"op_type=(\w+)", str(e))
        name = op.group(1) if op else str(e).splitlines()[0][:120]
        raise TargetError(f"{path}: the operator {name} cannot be converted to PyTorch, so the graph has no "
                          "gradients here; scan it as a black box (--access scores)") from None
    except Exception as e:  # noqa: BLE001 - converters fail in many ways on graphs they do not know
        raise TargetError(f"{path}: the graph cannot be converted to PyTorch ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160]}); scan it as a black box (--access scores)") from None
    return _Layout(module.eval(), onnx_target.layout, onnx_target.model_shape)


class ConvertedOnnxTarget(TorchTarget):
    """Gradients from the converted module; every score from the original file (see the module docstring)."""

    capabilities = Capability.LABELS | Capability.SCORES | Capability.GRADIENTS

    def __init__(self, onnx_target: OnnxTarget, module: nn.Module, *, batch_size: int = 256):
        norm = onnx_target._norm
        super().__init__(module, onnx_target.name, mean=None if norm is None else norm[0].tolist(),
                         std=None if norm is None else norm[1].tolist(), input_shape=onnx_target.input_shape,
                         num_classes=onnx_target.num_classes, batch_size=batch_size, kind="onnx")
        self.original = onnx_target
        self.flat_dim = onnx_target.flat_dim
        self.sha256 = onnx_target.sha256
        self.fast_forward = False
        self.details = {**onnx_target.details, "access": "gradients",
                        "gradients": "onnx2torch conversion; every score from onnxruntime"}

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.original._scores_batch(x.detach().cpu()).to(self.device)

    def _fast_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self._scores_batch(x)

    def bind(self, sample_shape: tuple[int, ...], probe: torch.Tensor, data_name: str = "") -> None:
        """Settle the shape on the original file, then check the converted module against it on ``probe``."""
        first = self._bound != tuple(sample_shape)
        self.original.bind(sample_shape, probe, data_name)
        self.num_classes = self.original.num_classes
        super().bind(sample_shape, probe, data_name)
        if first:
            self._check_conversion(probe)

    def _check_conversion(self, probe: torch.Tensor) -> None:
        x = probe.to(self.device)
        want = self._scores_batch(x)
        try:
            with torch.no_grad():
                got = self.forward(x)
        except Exception as e:  # noqa: BLE001 - the converted module's own failure
            raise DataError(f"{self.name}: the converted module fails on the data ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]}); scan it as a black box (--access scores)") from None
        if not same_answers(got, want, AGREE_RTOL):
            raise DataError(f"{self.name}: the converted module disagrees with onnxruntime on the first inputs "
                            f"(max score difference {float((got - want).abs().max()):.3g}); scan it as a black box "
                            "(--access scores)")
