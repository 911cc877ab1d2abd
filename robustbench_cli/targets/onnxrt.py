"""Black-box targets: ONNX models run by onnxruntime. Only scores come back; no gradients.

Real exported models come in many shapes: dynamic or fixed batch (fixed batches are fed in padded chunks),
NCHW or NHWC images (detected from the input shape, ``layout`` overrides), flat ``(N, D)`` or ``(N, D, 1)``
vectors, logits or probabilities (detected on clean data and recorded), several outputs (``output``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from robustbench_cli.core.errors import TargetError
from robustbench_cli.core.io import existing_file, file_sha256
from robustbench_cli.targets.base import Capability, Target

_ORT_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _ort_message(e: Exception) -> str:
    """The first line of an onnxruntime error without its "[ONNXRuntimeError] : 1 : FAIL : Load model from X
    failed:" preamble, which repeats the path the caller names already."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    text = re.sub(r"^Load model from .*? failed:\s*", "", text)
    return re.sub(r"^Fatal error:\s*", "", text) or e.__class__.__name__


def _dim(d):
    return d if isinstance(d, int) and d > 0 else None


def _metadata_normalisation(session) -> tuple[list[float] | None, list[float] | None]:
    """Mean and std from the model's ``metadata_props``, when its exporter wrote them."""
    import json

    try:
        props = {k.lower(): v for k, v in session.get_modelmeta().custom_metadata_map.items()}
    except Exception:  # a session without metadata access
        return None, None

    def numbers(*keys: str) -> list[float] | None:
        for key in keys:
            if key in props:
                text = props[key].strip()
                try:
                    value = json.loads(text) if text.startswith("[") else [float(v) for v in text.split(",")]
                    return [float(v) for v in value]
                except (ValueError, TypeError):
                    raise TargetError(f"metadata_props {key!r} = {text!r} is not a list of numbers") from None
        return None

    mean, std = numbers("mean", "image_mean", "norm_mean"), numbers("std", "image_std", "norm_std")
    if (mean is None) != (std is None):
        return (mean or [0.0]), (std or [1.0])
    return mean, std



def providers() -> list[str]:
    """onnxruntime's execution providers, best first: CUDA when onnxruntime-gpu is installed and a GPU answers (the
    report names the provider that ran), else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxTarget(Target):
    kind = "onnx"
    capabilities = Capability.LABELS | Capability.SCORES

    def __init__(self, path: str, *, layout: str | None = None, output: str | None = None,
                 batch_size: int = 256, threads: int | None = None, session=None, mean=None, std=None):
        import onnxruntime as ort

        super().__init__(path, batch_size=batch_size, device=torch.device("cpu"))
        self._norm: tuple[np.ndarray, np.ndarray] | None = None
        if session is not None:  # a session the caller made (the Python API)
            self.session = session
            self.sha256 = ""
            self._describe(layout, output, path)
            self._set_normalisation(mean, std)
            return
        p = existing_file(path, "model")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Attacks interleave model calls with torch work on the same cores; spinning onnxruntime threads would
        # hold the cores between calls and slow every torch op in between (measured: 2x on 2 cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # as many threads as torch (--threads sets both), not onnxruntime's own choice of every core
        opts.intra_op_num_threads = threads or max(1, torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(p), sess_options=opts, providers=providers())
        except Exception as e:  # onnxruntime raises its own exception classes for every load failure
            msg = _ort_message(e)
            if "external" in msg.lower() or "No such file" in msg:
                missing = re.search(r'does not exist:\s*"?([^"]+?)"?\s*$', msg)
                if missing:  # name the file, not onnxruntime's validation internals
                    raise TargetError(f"{path}: the model's external data file {missing.group(1).rsplit('/', 1)[-1]!r} "
                                      "is missing (it must sit beside the model, as when it was saved)") from None
                raise TargetError(f"{path}: the model's external data file is missing or unreadable ({msg})") from None
            if "NOT_IMPLEMENTED" in msg or "Could not find an implementation" in msg or "not a registered" in msg:
                raise TargetError(f"{path}: uses an operator onnxruntime lacks ({msg})") from None
            raise TargetError(f"{path}: onnxruntime cannot load it ({msg})") from None
        self.sha256 = file_sha256(p)
        self._describe(layout, output, path)
        self._set_normalisation(mean, std)

    def _set_normalisation(self, mean, std) -> None:
        """``(x - mean) / std`` per channel, applied to [0,1] pixels before the session, so that epsilon stays in
        pixel space. Given as --mean/--std, or read from the file's ``metadata_props`` (keys ``mean``/``std``, or
        ``image_mean``/``image_std``, as comma-separated numbers or JSON lists) when none is given."""
        source = "--mean/--std"
        if mean is None and std is None:
            mean, std, source = *_metadata_normalisation(self.session), "metadata_props"
            if mean is None:
                return
        mean_a = np.asarray(mean if mean is not None else [0.0], dtype=np.float32).ravel()
        std_a = np.asarray(std if std is not None else [1.0], dtype=np.float32).ravel()
        if not (np.isfinite(mean_a).all() and np.isfinite(std_a).all()) or (std_a <= 0).any():
            raise TargetError(f"{self.name}: normalisation from {source} needs finite numbers and std > 0, got "
                              f"mean {mean_a.tolist()}, std {std_a.tolist()}")
        self._norm = (mean_a, std_a)
        as_given = [float(v) for v in np.ravel(mean if mean is not None else [0.0])], \
            [float(v) for v in np.ravel(std if std is not None else [1.0])]
        self.details["normalisation"] = {"mean": as_given[0], "std": as_given[1], "source": source}
        if self.input_shape is not None:
            self._check_channels(self.input_shape)

    def _check_channels(self, sample_shape: tuple[int, ...]) -> None:
        if self._norm is None:
            return
        channels = sample_shape[0] if len(sample_shape) == 3 else 1
        for what, values in (("--mean", self._norm[0]), ("--std", self._norm[1])):
            if values.size not in (1, channels):
                raise TargetError(f"{what} has {values.size} values but the input of {self.name} has {channels} "
                                  "channel(s)")

    @classmethod
    def from_session(cls, session, *, batch_size: int = 256, layout: str | None = None,
                     output: str | None = None, mean=None, std=None) -> OnnxTarget:
        """A black box from an ``onnxruntime.InferenceSession`` already made; named and hashed by its model file
        when it was loaded from one."""
        path = getattr(session, "_model_path", None)
        t = cls(str(path) if path else "onnxruntime-session", layout=layout, output=output, batch_size=batch_size,
                session=session, mean=mean, std=std)
        if path and Path(path).is_file():
            t.sha256 = file_sha256(Path(path))
        return t

    def _describe(self, layout: str | None, output: str | None, path: str) -> None:
        """Read the session's input and output: layout, fixed batch, classes."""
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise TargetError(f"{path}: the model has {len(inputs)} inputs; robust scans single-input classifiers")
        inp = inputs[0]
        self.input_name = inp.name
        self.input_dtype = _ORT_FLOAT_TYPES.get(inp.type)
        if self.input_dtype is None:
            raise TargetError(f"{path}: input {inp.name!r} has type {inp.type}; a float image input is needed")
        shape = list(inp.shape)
        self.fixed_batch = _dim(shape[0]) if shape else None
        self.model_shape = shape
        self._setup_layout(shape, layout, path)
        outs = self.session.get_outputs()
        names = [o.name for o in outs]
        if output is None:
            self.output_name = names[0]
        elif output in names:
            self.output_name = output
        else:
            raise TargetError(f"{path}: no output named {output!r} (outputs: {', '.join(names)})")
        out = outs[names.index(self.output_name)]
        self._outputs = [self.output_name]
        if out.shape and len(out.shape) >= 2 and _dim(out.shape[-1]):
            self.num_classes = int(out.shape[-1])
        self.details = {
            "onnx_input": {"name": inp.name, "shape": [d if isinstance(d, int) else str(d) for d in shape]},
            "onnx_output": self.output_name,
            "onnx_outputs": names,
            "layout": self.layout,
            "fixed_batch": self.fixed_batch,
            "provider": self.session.get_providers()[0],  # the execution provider that runs, in the report
        }

    def _setup_layout(self, shape, layout, path):
        rank = len(shape)
        dims = [_dim(d) for d in shape[1:]]
        if layout is not None and layout not in ("nchw", "nhwc", "flat"):
            raise TargetError(f"--layout must be nchw, nhwc or flat, got {layout!r}")
        if rank == 4:
            if layout is None:
                if dims[0] in (1, 3) and dims[2] not in (1, 3):
                    layout = "nchw"
                elif dims[2] in (1, 3) and dims[0] not in (1, 3):
                    layout = "nhwc"
                elif dims[0] in (1, 3, 4):
                    layout = "nchw"
                else:
                    raise TargetError(f"{path}: cannot tell the layout of input shape {shape}; pass --layout nchw or nhwc")
            if layout == "flat":
                raise TargetError(f"{path}: input shape {shape} is an image, not flat")
            c, h, w = dims if layout == "nchw" else (dims[2], dims[0], dims[1])
            self.input_shape = (c, h, w) if None not in (c, h, w) else None
        elif rank == 2 or (rank == 3 and dims[-1] == 1):
            layout = "flat"
            self.flat_dim = dims[0]
            if self.flat_dim is None:
                raise TargetError(f"{path}: flat input {shape} has no fixed length")
        elif rank == 3:  # (N, H, W) grey images without a channel axis
            layout = "nhw"
            self.input_shape = (1, dims[0], dims[1]) if None not in dims else None
        else:
            raise TargetError(f"{path}: input shape {shape} is not an image batch (N,C,H,W), (N,H,W,C) or (N,D)")
        self.layout = layout

    def _to_model(self, x: torch.Tensor) -> np.ndarray:
        if x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad:
            a = x.numpy()  # the usual case: no copy, no dispatch
        else:
            a = x.detach().to("cpu", torch.float32).numpy()
        if self._norm is not None:  # in the data's channels-first layout, before any transpose
            mean, std = self._norm
            shape = (1, -1, 1, 1) if a.ndim == 4 else (1, -1)
            a = (a - mean.reshape(shape)) / std.reshape(shape)
        if self.layout == "nhwc":
            a = a.transpose(0, 2, 3, 1)
        elif self.layout == "flat":
            a = a.reshape(len(a), *[_dim(d) or 1 for d in self.model_shape[1:]])
        elif self.layout == "nhw":
            a = a.reshape(len(a), *a.shape[-2:])
        return np.ascontiguousarray(a, dtype=self.input_dtype)

    def _run(self, a: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run(self._outputs, {self.input_name: a})[0]
        except Exception as e:  # onnxruntime's own error types: report them as one line
            msg = _ort_message(e)
            raise TargetError(f"{self.name}: onnxruntime failed on input of shape {a.shape} ({msg})") from None
        out = np.asarray(out)
        if out.ndim == 3 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 2:
            raise TargetError(f"{self.name}: output {self.output_name!r} has shape {out.shape}, not (N, classes)")
        return out

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        a = self._to_model(x)
        fb = self.fixed_batch
        if fb is None:
            out = self._run(a)
        else:
            parts = []
            for i in range(0, len(a), fb):
                chunk = a[i : i + fb]
                if len(chunk) < fb:  # pad the last chunk to the fixed batch, then drop the padding
                    chunk = np.concatenate([chunk, np.zeros((fb - len(chunk), *chunk.shape[1:]), chunk.dtype)])
                parts.append(self._run(chunk)[: min(fb, len(a) - i)])
            out = np.concatenate(parts)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
