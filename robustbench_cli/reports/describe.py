"""Words for what a report names: a model's identity (spec, checkpoint file, sha256, kind and access) and a threat
model ("Linf 8/255 on [0,1] pixels, untargeted, black box (scores), 200 images").

Plain strings, not escaped: each view escapes them for its own format (``reports/safe.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from robustbench_cli.reports.compare import display_names
from robustbench_cli.reports.model import Report, Result, TargetInfo

NORM_WORDS = {"linf": "L∞", "l2": "L2"}
MODEL_FILE_KINDS = {"onnx", "torchscript"}  # the spec is the model file itself


@dataclass(frozen=True)
class Identity:
    spec: str  # as given on the command line (a path, file.py:factory, timm:NAME)
    file: str | None  # the file that holds the weights (checkpoint, ONNX, TorchScript), when there is one
    code: str | None  # the Python file that builds the architecture (file.py:factory), when there is one
    sha256: str
    kind: str  # onnx | torch | torchscript | timm | torchvision | detector
    box: str  # "white box" | "black box (scores)" | "black box (labels)"

    @property
    def sha_short(self) -> str:
        return self.sha256[:12] if self.sha256 else "–"


def _code_file(spec: str) -> str | None:
    """``path/to/file.py:Factory`` -> ``path/to/file.py``."""
    head, sep, _ = spec.rpartition(":")
    return head if sep and head.endswith(".py") else None


def box(target: TargetInfo) -> str:
    caps = set(target.capabilities)
    if "gradients" in caps:
        return "white box"
    access = "scores" if "scores" in caps else "labels"
    return f"black box ({access})"


def identity(target: TargetInfo) -> Identity:
    details = target.details or {}
    weights = details.get("weights")
    code = _code_file(target.name)
    file = str(weights) if weights else (target.name if target.kind in MODEL_FILE_KINDS else None)
    return Identity(spec=target.name, file=file, code=code, sha256=target.sha256 or "", kind=target.kind or "?",
                    box=box(target))


def model_file(target: TargetInfo) -> str | None:
    """The file a finding about this model points at: its weights, else the code that builds it."""
    ident = identity(target)
    return ident.file or ident.code


def epsilon_text(result: Result) -> str:
    """Epsilon as the threat spelled it (``8/255``), with its decimal value when that differs."""
    parts = result.threat.split(":")
    written = parts[1] if len(parts) > 1 else f"{result.epsilon:g}"
    decimal = f"{float(result.epsilon):.4g}"
    return written if written == decimal else f"{written} (= {decimal})"


def threat_words(result: Result, target: TargetInfo | None = None) -> str:
    """``Linf 8/255 (= 0.03137) on [0,1] pixels, untargeted, white box, 200 images``."""
    norm = NORM_WORDS.get(result.norm, result.norm)
    parts = [f"{norm} {epsilon_text(result)} on [0,1] pixels", "targeted" if result.targeted else "untargeted"]
    if target is not None:
        parts.append(box(target))
    parts.append(f"{result.n} image{'s' if result.n != 1 else ''}")
    return ", ".join(parts)


def target_of(report: Report, name: str) -> TargetInfo | None:
    """A target by its full name or by the label the views show (a gate check names targets by label)."""
    found = report.target(name)
    if found is not None:
        return found
    by_label = {label: full for full, label in display_names(report).items()}
    return report.target(by_label[name]) if name in by_label else None
