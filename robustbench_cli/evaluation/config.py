"""The settings of an evaluation, as values that check themselves when made: what to run (:class:`RunSpec`) and the
detector that guards the model (:class:`DetectorSpec`). The scan's whole configuration (``robustbench_cli.config``)
is made of these and the specs of the floors below (data, targets)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation.checks import check_run
from robustbench_cli.evaluation.presets import Battery, get_battery, with_eot
from robustbench_cli.targets import TargetSpec


def parse_threats(threats: list[str] | tuple[str, ...]) -> list[ThreatModel]:
    """Threat models as written (``linf:8/255``, ``l2:0.5``, ``0.3``); one written twice is an error."""
    if not threats:
        raise UserError("give the threat model: --eps 0.3 (Linf on [0,1] pixels) or --threat l2:1.5; there is no "
                        "default, because the right epsilon depends on the data (commonly MNIST 0.3, CIFAR-10 8/255)")
    parsed = [ThreatModel.parse(t) for t in threats]
    seen: dict[tuple, ThreatModel] = {}
    for t in parsed:  # by value: linf:0.1 and linf:1/10 are one threat model written twice
        key = (t.norm, t.epsilon, t.targeted)
        if key in seen:
            raise UserError(f"threat models repeat: {seen[key].name}, {t.name}")
        seen[key] = t
    return parsed


@dataclass(frozen=True)
class RunSpec:
    """What a scan runs: the threats, the battery (a preset or named attacks) and the numbers of the run."""

    threats: tuple[str, ...] = ()  # required: no hidden epsilon
    preset: str | None = None  # None: "default", unless attacks are named
    attacks: tuple[str, ...] | None = None  # an ad-hoc battery instead of a preset
    targeted: str | None = None  # random | least-likely | a class index
    queries: int | None = None  # per-sample budget of every attack, the verification included
    seed: int = 0
    batch_size: int = 256
    eot: int = 1  # gradient attacks average each gradient over this many draws (randomised models)
    certify: bool | None = None  # None: the preset's setting
    time_budget: float | None = None  # seconds; no new batch starts once it is spent
    surrogates: tuple[TargetSpec, ...] = ()  # transfer attacks craft on these (with_transfer)
    generators: tuple[str, ...] = ()  # trained generator files, run as the generator attack
    precision: str = "fp32"  # fp32 | bf16 | fp16: the attacks' own passes (verification is always float32)
    threads: int | None = None  # torch's (and onnxruntime's) threads; None: torch's default (the cores it sees)

    def __post_init__(self) -> None:
        parse_threats(self.threats)
        check_run(seed=self.seed, batch_size=self.batch_size, queries=self.queries, eot=self.eot)
        if self.attacks is not None:
            if not any(a.strip() for a in self.attacks):
                raise UserError("--attacks needs attack names, e.g. --attacks fgsm,pgd (`robust attacks` lists them)")
            if self.preset is not None:  # one would silently replace the other
                raise UserError(f"give --preset or --attacks, not both (--preset {self.preset} --attacks "
                                f"{','.join(self.attacks)})")
        if self.threads is not None and not (isinstance(self.threads, int) and 1 <= self.threads <= 1024):
            raise UserError(f"--threads must be in 1..1024, got {self.threads}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"--precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget > 0):
            raise UserError(f"--time-budget must be > 0, got {self.time_budget}")
        self.battery()  # an unknown preset or attack, or --eot that nothing takes: now, not after loading a model

    def apply_threads(self) -> int:
        """Set torch's thread count (before any model loads: the onnxruntime routes take the same); the count."""
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return torch.get_num_threads()

    def threat_models(self) -> list[ThreatModel]:
        return parse_threats(self.threats)

    def battery(self) -> Battery:
        """The preset or the named attacks, with ``eot`` (transfer entries are added once surrogates are loaded)."""
        attacks = [a.strip() for a in self.attacks if a.strip()] if self.attacks is not None else None
        return with_eot(get_battery(self.preset or "default", attacks), self.eot)


@dataclass(frozen=True)
class DetectorSpec:
    """``--detector``: the model is guarded by this detector, scanned alone, guarded non-adaptively and adaptively.
    The threshold is given, or calibrated to flag ``fpr`` of clean inputs (0.05 when neither is given), on
    ``calibration`` data (the scanned data when None)."""

    target: TargetSpec
    fpr: float | None = None
    threshold: float | None = None
    calibration: str | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and self.fpr is not None:
            raise UserError("give --detector-fpr or --detector-threshold, not both")
        if self.fpr is not None and not 0 <= self.fpr < 1:
            raise UserError(f"--detector-fpr must be in [0, 1), got {self.fpr}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise UserError(f"--detector-threshold must be a finite number, got {self.threshold}")
