"""What attacks see of a model: a :class:`Target` with declared capabilities.

Everything is in [0,1] input space with channels first; a target owns its preprocessing (mean/std), its
layout conversion (NHWC ONNX models) and its batching (fixed-batch ONNX models are fed in chunks).
"""

from __future__ import annotations

import contextlib
import enum
from abc import ABC, abstractmethod
from typing import cast

import numpy as np
import torch

from robustbench_cli.core.errors import DataError, TargetError


class Capability(enum.Flag):
    LABELS = enum.auto()  # the predicted class only
    SCORES = enum.auto()  # a score per class (logits or probabilities)
    GRADIENTS = enum.auto()  # autograd through the model

    @classmethod
    def names(cls, flags: Capability) -> list[str]:
        return [cast(str, c.name).lower() for c in cls if c in flags]  # single-bit members always have a name



def same_answers(got: torch.Tensor, want: torch.Tensor, rtol: float) -> bool:
    """Whether a second route to a model's scores (an onnxruntime export, a converted graph) answers as the model
    does: the same shape and classes, and scores within ``rtol`` of the largest score (at least 1)."""
    scale = float(want.abs().max()) + 1.0
    return got.shape == want.shape and bool((got.argmax(1) == want.argmax(1)).all()) \
        and float((got - want).abs().max()) <= rtol * scale


class Target(ABC):
    """A classifier seen through what its owner exposes."""

    kind: str = "target"
    capabilities: Capability = Capability.LABELS | Capability.SCORES
    bounds: tuple[float, float] = (0.0, 1.0)

    def __init__(self, name: str, *, batch_size: int = 256, device: torch.device | None = None):
        self.name = name
        self.batch_size = batch_size
        self.device = device or torch.device("cpu")
        self.input_shape: tuple[int, ...] | None = None  # channels-first per-sample shape; None: any
        self.flat_dim: int | None = None  # a model that takes flat vectors of this length
        self.num_classes: int | None = None
        self.output_kind: str = "unknown"  # "logits" or "probabilities", detected on clean data
        self.sha256: str = ""
        self.details: dict = {}

    # --- queries --------------------------------------------------------------------------------
    @abstractmethod
    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs for one chunk (at most ``batch_size`` rows)."""

    def _fast_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for one chunk by the fastest equivalent route (see :meth:`scores`); the exact route by default."""
        return self._scores_batch(x)

    def scores(self, x: torch.Tensor, *, fast: bool = False) -> torch.Tensor:
        """Outputs for any number of inputs, chunked to the target's batch size, on ``self.device``.

        ``fast`` allows an equivalent but faster route for the attacks' own forward-only queries (a PyTorch
        target on the CPU answers them from an onnxruntime export of itself). The harness's verification and
        the clean accuracy always take the exact route: the number reported is the model's own answer.
        """
        fn = self._fast_batch if fast else self._scores_batch
        if len(x) <= self.batch_size:
            return fn(x)
        return torch.cat([fn(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(x).argmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable outputs; only targets with GRADIENTS implement it."""
        raise TargetError(f"{self.name} is a black box: it offers no gradients")

    def as_logits(self, s: torch.Tensor) -> torch.Tensor:
        """Logit-like scores for the losses: log-probabilities when the model returns probabilities."""
        if self.output_kind == "probabilities":
            return s.clamp_min(1e-30).log()
        return s

    # --- what the harness asks of every target --------------------------------------------------------
    has_detector: bool = False  # a classifier guarded by a detector (targets/detector.py): it may reject inputs

    def rejects(self, x: torch.Tensor) -> torch.Tensor:
        """Per input, whether the target refuses to answer it (a detector flagged it): never a success there. The
        answer comes with the query already counted; a plain target rejects nothing."""
        return torch.zeros(len(x), dtype=torch.bool, device=x.device)

    def attack_oracle(self, n: int, goal, *, budget: int | None = None) -> Oracle:
        """The counted view the attacks get of a batch of ``n`` samples with their ``goal``."""
        return Oracle(self, n, budget=budget)

    def bind(self, sample_shape: tuple[int, ...], probe: torch.Tensor, data_name: str = "") -> None:
        """Settle what the target needs to know of its inputs before any attack: refuse a shape it cannot take, and
        learn the number of classes from one query of ``probe`` (a data row) when loading could not read it. Done
        once per shape; a second call with the same shape costs nothing."""
        if self._bound == tuple(sample_shape):
            return
        if not self.accepts(sample_shape):
            raise DataError(f"data {data_name} has inputs of shape {'x'.join(map(str, sample_shape))} "
                            f"but the model {self.name} takes {self.expected_shape_text()}")
        self._check_channels(sample_shape)
        if self.num_classes is None or (self.input_shape is None and self.probes_its_size):  # ask it, once
            try:
                self.setup_rows += 1  # outside every attack's ledger: reported with the diagnostics' probes
                classes = int(self.scores(probe[:1].to(self.device)).shape[1])
            except (RuntimeError, AssertionError, ValueError, IndexError) as e:  # how networks refuse a size
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                oom = isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg.lower()
                if oom and self.num_classes is not None:
                    self._bound = tuple(sample_shape)  # says nothing about the size; the batches halve and retry
                    return
                hint = self.details.get("default_input_size")
                size = "" if not hint else str(hint[-1]) if hint[-1] == hint[-2] else f"{hint[-2]}x{hint[-1]}"
                hint = (f" (its default input size is {'x'.join(map(str, hint))}: --resize {size} brings the data "
                        "to it)") if hint else ""
                raise DataError(f"the model {self.name} rejects inputs of shape "
                                f"{'x'.join(map(str, sample_shape))}{hint}: {msg}") from None
            if self.num_classes is None:
                self.num_classes = classes
            elif classes != self.num_classes:
                raise DataError(f"the model {self.name} gives {classes} scores for inputs of shape "
                                f"{'x'.join(map(str, sample_shape))}, not its {self.num_classes} classes")
        self._bound = tuple(sample_shape)

    _bound: tuple[int, ...] | None = None
    # a network whose forward takes many sizes (timm, torchvision, most modules): bind() asks it once on the data's
    # shape, so a size it cannot take is one clear line before any attack rather than a failure inside one
    probes_its_size = False
    setup_rows = 0  # model rows asked while binding (the size probe), before any attack

    def take_setup_rows(self) -> int:
        """The rows binding asked the model, once: the diagnostics add them to their own (``probes.model_rows``)."""
        inner = getattr(self, "inner", None)
        rows, self.setup_rows = self.setup_rows, 0
        return rows + (inner.take_setup_rows() if isinstance(inner, Target) else 0)

    def _check_channels(self, sample_shape: tuple[int, ...]) -> None:
        """Refuse inputs whose channels the target's own preprocessing cannot take (PyTorch targets' --mean/--std)."""

    # --- shape checks -----------------------------------------------------------------------------
    def accepts(self, sample_shape: tuple[int, ...]) -> bool:
        if self.flat_dim is not None:
            return int(np.prod(sample_shape)) == self.flat_dim
        return self.input_shape is None or tuple(sample_shape) == tuple(self.input_shape)

    def expected_shape_text(self) -> str:
        if self.flat_dim is not None:
            return f"flat vectors of {self.flat_dim} values"
        return "x".join(map(str, self.input_shape)) if self.input_shape else "any shape"

    def detect_output_kind(self, s: torch.Tensor) -> str:
        s = s.double()
        if bool((s >= 0).all()) and bool(((s.sum(dim=1) - 1).abs() < 1e-3).all()):
            self.output_kind = "probabilities"
        else:
            self.output_kind = "logits"
        return self.output_kind

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "capabilities": Capability.names(self.capabilities),
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "flat_dim": self.flat_dim,
            "num_classes": self.num_classes,
            "output_kind": self.output_kind,
            "sha256": self.sha256,
            "device": str(self.device),
            **self.details,
        }


class _View(Target):
    """A target seen through less than its owner could expose (``--access``): it answers from ``inner``."""

    access: str = ""

    def __init__(self, inner: Target):
        super().__init__(inner.name, batch_size=inner.batch_size, device=inner.device)
        self.inner = inner
        self.kind, self.bounds = inner.kind, inner.bounds
        self.input_shape, self.flat_dim = inner.input_shape, inner.flat_dim
        self.num_classes, self.sha256 = inner.num_classes, inner.sha256
        self.details = {**inner.details, "access": self.access}

    def bind(self, sample_shape: tuple[int, ...], probe: torch.Tensor, data_name: str = "") -> None:
        self.inner.bind(sample_shape, probe, data_name)
        self.num_classes = self.inner.num_classes


class ScoresOnly(_View):
    """A view of a target that answers scores but hides its gradients (score-based black-box threat)."""

    capabilities = Capability.LABELS | Capability.SCORES
    access = "scores"

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.scores(x)

    def _fast_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.scores(x, fast=True)


class LabelOnly(_View):
    """A view of a target that answers only the predicted class (decision-based threat)."""

    capabilities = Capability.LABELS
    access = "labels"

    def _scores_batch(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        # One-hot of the decision: the only information a label-only model gives away.
        s = self.inner.scores(x, fast=fast)
        return torch.nn.functional.one_hot(s.argmax(dim=1), s.shape[1]).to(torch.float32)

    def _fast_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self._scores_batch(x, fast=True)

    def detect_output_kind(self, s: torch.Tensor) -> str:
        self.output_kind = "labels"
        return self.output_kind


class Oracle:
    """The one place where queries are counted: a per-sample ledger around a target.

    Attacks receive an oracle for the batch they attack. Every call names the batch rows its inputs belong
    to (``rows``; by default one input per row), and the oracle charges each row one query per input. With a
    per-sample ``budget``, inputs of rows that have spent it are not sent to the model: their scores come back
    as NaN and the row is marked exhausted. Attacks cannot spend queries without being counted.
    """

    def __init__(self, target: Target, n: int, *, budget: int | None = None, count_gradients: bool = True):
        self.target = target
        self.n = n
        self.budget = budget
        self.used = torch.zeros(n, dtype=torch.int64)
        self.exhausted = torch.zeros(n, dtype=torch.bool)
        self.count_gradients = count_gradients
        # False: the attacks' forward-only queries go to the model itself too (the scan planned that a faster
        # stand-in would not repay its making: evaluation/cascade.py)
        self.fast = True
        # --precision: the attacks' own forward and backward passes run under autocast in this dtype; the
        # harness's ``exact`` queries never do (a success is judged on the model as it is, in float32)
        self.precision: torch.dtype | None = None
        # numpy views on the same memory: the ledger's bookkeeping costs microseconds, not torch dispatches
        self._used = self.used.numpy()
        self._all_rows = np.arange(n)

    @property
    def capabilities(self) -> Capability:
        return self.target.capabilities

    @property
    def device(self) -> torch.device:
        return self.target.device

    @property
    def num_classes(self) -> int:
        return int(cast(int, self.target.num_classes))

    def remaining(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Queries each row may still spend (a large number when there is no budget)."""
        left = (torch.full((self.n,), 2**62, dtype=torch.int64) if self.budget is None else self.budget - self.used)
        return left if rows is None else left[rows.cpu()]

    def _rows(self, x: torch.Tensor, rows: torch.Tensor | None) -> np.ndarray:
        if rows is None:
            if len(x) != self.n:
                raise ValueError("rows must be given when the inputs do not map one-to-one onto the batch")
            return self._all_rows
        return rows.detach().cpu().numpy().astype(np.int64, copy=False)

    def _charge(self, rows: np.ndarray) -> np.ndarray | None:
        """Charge one query per input; return the mask of inputs within budget, or None when all of them are."""
        if len(rows) == 1:  # the common small call: no counting machinery
            r = rows[0]
            if self.budget is None or self._used[r] < self.budget:
                self._used[r] += 1
                return None
            self.exhausted[int(r)] = True
            return np.zeros(1, dtype=bool)
        counts = np.bincount(rows, minlength=self.n)
        if self.budget is None or bool((self._used + counts <= self.budget).all()):
            self._used += counts
            return None
        # Grant queries in order within each row until its budget is spent.
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        first = np.searchsorted(sorted_rows, sorted_rows, side="left")
        rank = np.arange(len(rows)) - first
        allowed_sorted = rank < (self.budget - self._used[sorted_rows])
        allowed = np.empty_like(allowed_sorted)
        allowed[order] = allowed_sorted
        self._used += np.bincount(rows[allowed], minlength=self.n)
        denied = rows[~allowed]
        if len(denied):
            self.exhausted[torch.from_numpy(denied)] = True
        return allowed

    def reduced(self) -> contextlib.AbstractContextManager:
        """Autocast to the reduced precision of the attacks' own passes (a no-op in float32)."""
        if self.precision is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.precision)

    def _ask(self, x: torch.Tensor, exact: bool) -> torch.Tensor:
        if exact or self.precision is None:
            return self.target.scores(x, fast=self.fast and not exact)
        with self.reduced():  # the model's own route: a faster float32 stand-in would not be reduced precision
            return self.target.scores(x).float()

    def scores(self, x: torch.Tensor, rows: torch.Tensor | None = None, *, exact: bool = False) -> torch.Tensor:
        """Scores, one query per input. Attacks get the target's fast route; the harness asks ``exact``."""
        allowed = self._charge(self._rows(x, rows))
        if allowed is None:
            return self._ask(x, exact)
        out = torch.full((len(x), self.num_classes), float("nan"), device=self.device)
        idx = torch.from_numpy(allowed.nonzero()[0])
        if len(idx):
            out[idx.to(self.device)] = self._ask(x[idx.to(x.device)], exact)
        return out

    def logits(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.target.as_logits(self.scores(x, rows))

    def predict(self, x: torch.Tensor, rows: torch.Tensor | None = None, *, exact: bool = False) -> torch.Tensor:
        return (self.scores(x, rows, exact=True) if exact else self.scores(x, rows)).argmax(dim=1)

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable logit-like outputs (white-box only); each input costs one query when counted."""
        if self.count_gradients:
            self._charge(self._rows(x, rows))
        if self.precision is None:
            return self.target.as_logits(self.target.forward(x))
        with self.reduced():
            out = self.target.forward(x)
        return self.target.as_logits(out.float())
